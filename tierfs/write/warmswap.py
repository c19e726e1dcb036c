"""The warm-tier half of demotion and promotion (``write.demote``): blocking calls, made in a
warm-tier thread, that find a file without following any symbolic link and swap it for its
stub (or its stub for it) only if it is still what was read.

Paths come from a user (``tierfs demote PATH``) or from a walk of a tree anyone may write
to, and a directory on the way may be a symbolic link pointing anywhere (``/etc``): a
demotion must never upload a file outside the warm tree and put a stub in its place, nor a
promotion write a file there. So the file's directory is opened one name at a time with
``O_NOFOLLOW`` (``open_dir``), and every later call is made relative to that descriptor.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import stat
import time

from tierfs.tiers.beneath import new_symlink, open_file, placed, split, unsure
from tierfs.tiers.warm import WarmTier
from tierfs.tiers.xattrs import own_xattrs

@dataclasses.dataclass
class Opened:
    """A warm file opened for a demotion: its directory, name, descriptor and attributes."""

    dir_fd: int
    name: bytes
    fd: int
    st: os.stat_result
    #: Extended attribute names, the file's own (``own_xattrs``).
    xattrs: list[str]
    #: Open for writing (or writably mapped) by a process on this node, outside the mount.
    written_here: bool = False

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.dir_fd)


def open_plain(warm: WarmTier, rel: bytes) -> Opened:
    """Open a warm file read-only (ELOOP if it, or a directory on the way, is a symbolic
    link: a stub is one)."""
    parent, name = split(rel)
    dfd = warm.open_dir(parent)
    try:
        fd = open_file(dfd, name, os.O_RDONLY)
    except BaseException:
        os.close(dfd)
        raise
    try:
        st = os.fstat(fd)
        try:
            names = os.listxattr(fd) if stat.S_ISREG(st.st_mode) else []
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            names = []
        leased = read_lease(fd)
        if leased:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return Opened(dfd, name, fd, st, own_xattrs(names),
                      written_here=leased is False)
    except BaseException:
        os.close(fd)
        os.close(dfd)
        raise


class _StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fstatfs.argtypes = (ctypes.c_int, ctypes.POINTER(_StatFs))
_libc.statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                        ctypes.c_void_p)

#: File systems whose leases are the kernel's own (``generic_setlease``): a read lease is
#: refused there only for an open for writing on this node. ext2/3/4, XFS, Btrfs, tmpfs,
#: FUSE, ZFS, F2FS. An NFSv4 or SMB client refuses one also when the server gave it no
#: delegation or oplock, which says nothing about writers: there the attributes alone decide.
GENERIC_LEASES = {0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0x65735546, 0x2FC12FC1,
                  0xF2F52010}


def _fs_magic(fd: int) -> int | None:
    buf = _StatFs()
    if _libc.fstatfs(fd, ctypes.byref(buf)) != 0:
        return None
    return buf.f_type & 0xFFFFFFFF


def read_lease(fd: int) -> bool | None:
    """Take a read lease on a read-only descriptor: False if a process on this node has the
    file open for writing or writably mapped (the kernel refuses the lease then), None if
    leases cannot tell here (a network file system's, a file not the daemon's own).

    Why: the attributes a demotion checks miss two writers on the warm tier. A ``write(2)``
    stamps the file's times before it copies its bytes, so one under way when the file is
    first looked at changes nothing the check sees afterwards; and stores through a
    writable shared mapping into a page already dirty stamp nothing. A lease sees both on
    this node. While it is held, another open for writing waits for it (its break is
    notified by SIGIO, which the daemon ignores: ``Demoter``)."""
    if _fs_magic(fd) not in GENERIC_LEASES:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return False if e.errno == errno.EAGAIN else None
    return True


def same(a: os.stat_result, b: os.stat_result) -> bool:
    """The same file, unchanged: what a demotion checks just before its swap."""
    return fingerprint(a) == fingerprint(b)


def fingerprint(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)


class _StatxTime(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_int64), ("nsec", ctypes.c_uint32), ("spare", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("spare0", ctypes.c_uint16), ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("atime", _StatxTime), ("btime", _StatxTime), ("ctime", _StatxTime),
                ("mtime", _StatxTime), ("rdev_major", ctypes.c_uint32),
                ("rdev_minor", ctypes.c_uint32), ("dev_major", ctypes.c_uint32),
                ("dev_minor", ctypes.c_uint32), ("spare", ctypes.c_uint64 * 14)]


_AT_SYMLINK_NOFOLLOW, _AT_EMPTY_PATH, _AT_STATX_FORCE_SYNC = 0x100, 0x1000, 0x2000
_STATX_BASIC_STATS = 0x7FF


def fresh_fingerprint(dir_fd: int, name: bytes = b"") -> tuple[int, ...]:
    """``fingerprint`` of ``name`` in ``dir_fd`` (of ``dir_fd`` itself if no name) as the
    server has it now. Why: a network file system's client answers ``stat`` from its
    attribute cache (NFS for 3 to 60 seconds), so a change another node made on the server
    while a demotion uploaded would go unseen by the check before the swap, and that node's
    write be lost under the stub. ``statx`` with ``AT_STATX_FORCE_SYNC`` asks the server."""
    buf = _Statx()
    flags = _AT_SYMLINK_NOFOLLOW | _AT_STATX_FORCE_SYNC | (0 if name else _AT_EMPTY_PATH)
    if _libc.statx(dir_fd, name, flags, _STATX_BASIC_STATS, ctypes.byref(buf)) != 0:
        e = ctypes.get_errno()
        if e != errno.ENOSYS:
            raise OSError(e, os.strerror(e), os.fsdecode(name))
        return fingerprint(os.stat(name, dir_fd=dir_fd, follow_symlinks=False) if name
                           else os.fstat(dir_fd))
    return (os.makedev(buf.dev_major, buf.dev_minor), buf.ino, buf.size,
            buf.mtime.sec * 10**9 + buf.mtime.nsec, buf.ctime.sec * 10**9 + buf.ctime.nsec,
            buf.nlink)


def swap_in_stub(warm: WarmTier, f: Opened, target: bytes) -> os.stat_result | None:
    """Rename a stub (owned by the file's owner) over the file, if both the descriptor and
    the name still are the file ``f.st`` describes, unchanged; None (nothing done)
    otherwise. Returns the stub's attributes. A lease held from the check to the rename
    (``read_lease``) makes a writer on this node that has the file open lose the swap, and
    so does one whose open comes before the rename: that open waits for the lease, and the
    lease, looked at last just before the rename, is being broken."""
    leased = read_lease(f.fd)
    if leased is False:
        return None
    try:
        return _swap_checked(warm, f, target, bool(leased))
    finally:
        if leased:
            with contextlib.suppress(OSError):
                fcntl.fcntl(f.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def _swap_checked(warm: WarmTier, f: Opened, target: bytes, leased: bool
                  ) -> os.stat_result | None:
    try:
        there = fresh_fingerprint(f.dir_fd, f.name)
    except FileNotFoundError:
        return None
    if not fingerprint(f.st) == fresh_fingerprint(f.fd) == there:
        return None
    tmp = warm.temp_name()
    try:
        made = new_symlink(f.dir_fd, tmp, target, (f.st.st_uid, f.st.st_gid))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=f.dir_fd)
        raise
    if leased and fcntl.fcntl(f.fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK:
        # An open for writing came since the check and waits: the writer wins.
        os.unlink(tmp, dir_fd=f.dir_fd)
        return None
    try:
        os.rename(tmp, f.name, src_dir_fd=f.dir_fd, dst_dir_fd=f.dir_fd)
        return placed(f.dir_fd, f.name, made)
    except OSError as e:
        # The stub may be in place all the same: the stat after it failed (the stub renamed
        # away at once, say), or a network file system's client retried a rename whose reply
        # it lost and was told ENOENT; or another file went in its place (renamed onto the
        # temp name first). Whoever settles it looks at the name.
        try:
            os.unlink(tmp, dir_fd=f.dir_fd)
        except OSError:
            pass  # (renamed: gone from there)
        raise unsure(e, f.name, made) from e


@dataclasses.dataclass
class StubAt:
    """A stub found for a promotion: its directory, name, attributes and target, and the temp
    file its content is downloaded into."""

    dir_fd: int
    name: bytes
    st: os.stat_result
    target: bytes | None
    tmp: bytes | None = None
    tmp_fd: int | None = None

    def close(self) -> None:
        if self.tmp_fd is not None:
            os.close(self.tmp_fd)
            self.tmp_fd = None
        if self.tmp is not None:
            try:
                os.unlink(self.tmp, dir_fd=self.dir_fd)
            except FileNotFoundError:
                pass
            self.tmp = None
        os.close(self.dir_fd)


def stub_at(warm: WarmTier, rel: bytes) -> StubAt:
    """What is at ``rel`` (a symbolic link's target read too), reached without following a
    symbolic link on the way."""
    parent, name = split(rel)
    dfd = warm.open_dir(parent)
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        target = os.readlink(name, dir_fd=dfd) if stat.S_ISLNK(st.st_mode) else None
    except BaseException:
        os.close(dfd)
        raise
    return StubAt(dfd, name, st, target)


def new_temp(warm: WarmTier, s: StubAt) -> int:
    """A fresh temp file beside the stub (named as every temp file of this node, so the next
    mount removes it after a crash); its descriptor."""
    s.tmp = warm.temp_name()
    s.tmp_fd = os.open(s.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                       dir_fd=s.dir_fd)
    return s.tmp_fd


def settle_temp(s: StubAt, size: int, mode: int, mtime_ns: int) -> None:
    """The downloaded file gets the stub's size, owner, mode and mtime, and reaches the
    disk. Its access time is now: a promotion is asked for, and the quota must not take the
    file for its least recently used and send it straight back."""
    fd = s.tmp_fd
    assert fd is not None
    os.ftruncate(fd, size)
    os.fchown(fd, s.st.st_uid, s.st.st_gid)
    os.fchmod(fd, mode)
    os.utime(fd, ns=(time.time_ns(), mtime_ns))
    os.fsync(fd)


def unstub(s: StubAt) -> os.stat_result | None:
    """Rename the temp file over the stub if it is still that stub (identity and target);
    None (the temp file left for ``close`` to remove) otherwise."""
    try:
        there = os.stat(s.name, dir_fd=s.dir_fd, follow_symlinks=False)
        now = os.readlink(s.name, dir_fd=s.dir_fd) if stat.S_ISLNK(there.st_mode) else None
    except FileNotFoundError:
        return None
    if (now != s.target or (there.st_dev, there.st_ino) != (s.st.st_dev, s.st.st_ino)
            or there.st_nlink != 1):  # (linked meanwhile: the other name needs the object)
        return None
    assert s.tmp is not None
    os.rename(s.tmp, s.name, src_dir_fd=s.dir_fd, dst_dir_fd=s.dir_fd)
    s.tmp = None
    return os.stat(s.name, dir_fd=s.dir_fd, follow_symlinks=False)
