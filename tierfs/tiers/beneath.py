"""Paths on the shared warm tree resolved beneath its root, without following a symlink.

The warm tree is shared, and anyone on the cluster may replace a directory this mount has
looked up by a symlink to anywhere. A call made with a path of several components relative to
the root's descriptor (``d/name``) would follow that symlink: ``O_NOFOLLOW`` and
``follow_symlinks=False`` only cover the last component. So every call on the tree resolves the
directory part here, refusing any symlink (ENOTDIR, as for a directory gone, whichever way it
was resolved) and any way out of the root, and makes its own call on the last name, relative
to that directory's descriptor. tierfs never needs to
follow a symlink itself: its paths are built from the directories it looked up, and the symlinks
the tree holds (a user's, or a stub) are only ever the last component.

``openat2`` with ``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`` (Linux 5.6) does it in one system
call; elsewhere each component is opened in turn with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine)
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
#: The warm root itself, as a path relative to its descriptor.
ROOT = b"."
#: Directories are opened for their path alone: no open reaches the file system's server.
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_have_openat2 = _SYS_OPENAT2 is not None
# (Built once, the call's types declared: a warm call pays about 3 µs for it, most of it the
# system call and the close.)
_HOW = _OpenHow(_DIR_FLAGS, 0, _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH)
_HOW_AT = ctypes.addressof(_HOW)
_HOW_SIZE = ctypes.sizeof(_HOW)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                     ctypes.c_size_t]


def _openat2(dirfd: int, path: bytes) -> int:
    fd = _syscall(_SYS_OPENAT2 or -1, dirfd, path, _HOW_AT, _HOW_SIZE)
    if fd < 0:
        e = ctypes.get_errno()
        if e == errno.ELOOP:  # a symlink on the way: not a directory, as the walk says
            e = errno.ENOTDIR
        raise OSError(e, os.strerror(e), path)
    return fd


def _walk(dirfd: int, path: bytes) -> int:
    fd = dirfd
    try:
        for name in path.split(b"/"):
            if name in (b"", b".", b".."):
                if name == b"..":
                    raise OSError(errno.EXDEV, "a path out of the warm root", path)
                continue
            # (O_DIRECTORY with O_NOFOLLOW: a symlink is ENOTDIR, never followed)
            fd, parent = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd), fd
            if parent != dirfd:
                os.close(parent)
    except BaseException:
        if fd != dirfd:
            os.close(fd)
        raise
    if fd == dirfd:
        return os.open(b".", _DIR_FLAGS, dir_fd=dirfd)
    return fd


def open_dir_beneath(root_fd: int, rel: bytes) -> int:
    """A path-only descriptor (``O_PATH``) of the directory ``rel`` under ``root_fd``,
    reached through directories alone."""
    global _have_openat2
    if _have_openat2:
        try:
            return _openat2(root_fd, rel)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            if e.errno == errno.ENOSYS:
                _have_openat2 = False
                return _walk(root_fd, rel)
            # EPERM: a seccomp filter refusing the call, or the file system refusing a
            # lookup (sshfs says EPERM for any failure): the walk tells which.
            fd = _walk(root_fd, rel)
            _have_openat2 = False
            return fd
    return _walk(root_fd, rel)


def open_file(dfd: int, name: bytes, flags: int, mode: int = 0o600) -> int:
    """``os.open`` of ``name`` in ``dfd`` (never following a symlink: ELOOP), refusing
    (ESTALE) what is not a regular file, or with ``O_DIRECTORY`` a directory, before it is
    opened at all: anyone may put a FIFO in a file's place on the shared tree, whose open
    waits for a writer for ever, or a device node, which on NFS opens this node's device
    (a tty would become the daemon's controlling terminal). So an existing file is first
    reached by its path alone (``O_PATH`` opens nothing), its type checked, and that very
    file opened through ``/proc`` (no swap in between can change which); a lease on it is
    waited for as by any open. A new file (``O_CREAT | O_EXCL``) and a directory
    (``O_DIRECTORY`` is checked before anything is opened) need none of it."""
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY
    if flags & os.O_PATH or flags & os.O_DIRECTORY or (flags & os.O_CREAT
                                                        and flags & os.O_EXCL):
        return os.open(name, flags, mode, dir_fd=dfd)
    if flags & os.O_CREAT:
        raise ValueError("a warm file is created with O_EXCL")
    path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        kind = stat.S_IFMT(os.fstat(path_fd).st_mode)
        if kind == stat.S_IFLNK:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
        if kind != stat.S_IFREG:
            raise OSError(errno.ESTALE, "not a regular file any more", name)
        return os.open(f"/proc/self/fd/{path_fd}", flags & ~os.O_NOFOLLOW)
    finally:
        os.close(path_fd)


def parent_fd(root_fd: int, rel: bytes) -> tuple[int, bytes]:
    """(descriptor of ``rel``'s directory, last name), the directory reached as
    ``open_dir_beneath`` does; for a name in the root itself, ``root_fd``. The caller closes
    the descriptor unless it is ``root_fd`` (``done``)."""
    i = rel.rfind(b"/")
    if i < 0:
        return root_fd, rel
    return open_dir_beneath(root_fd, rel[:i]), rel[i + 1:]


def done(root_fd: int, fd: int) -> None:
    """Close a descriptor ``parent_fd`` gave, unless it is the root's."""
    if fd != root_fd:
        os.close(fd)


@contextlib.contextmanager
def parent_of(root_fd: int, rel: bytes) -> Iterator[tuple[int, bytes]]:
    """``parent_fd`` for a block (calls made often use ``parent_fd`` and ``done``: a
    context manager costs about a microsecond more)."""
    fd, name = parent_fd(root_fd, rel)
    try:
        yield fd, name
    finally:
        done(root_fd, fd)


def join(parent: bytes, name: bytes) -> bytes:
    return name if parent == ROOT else parent + b"/" + name


def split(rel: bytes) -> tuple[bytes, bytes]:
    parent, _, name = rel.rpartition(b"/")
    return (parent or ROOT), name


_AT_EMPTY_PATH = 0x1000


def new_symlink(dfd: int, tmp: bytes, target: bytes, owner: tuple[int, int] | None
                ) -> os.stat_result:
    """A symlink to ``target`` made at the temp name ``tmp`` in ``dfd``, given ``owner``
    (uid, gid) where that differs from what it was made with; its attributes. The owner is
    changed through a descriptor of the symlink itself, never by name: in a shared directory
    anyone who may write there can rename a file of theirs onto the temp name, and a chown by
    name would give their file that owner (on a mount run as root, another user's) for a
    rename to put in its place. So does a rename by name afterwards: ``placed`` checks it."""
    os.symlink(target, tmp, dir_fd=dfd)
    fd = os.open(tmp, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        made = os.fstat(fd)
        if not stat.S_ISLNK(made.st_mode) or os.readlink(b"", dir_fd=fd) != target:
            raise OSError(errno.ESTALE, "another file took the temp name", tmp)
        if owner is not None and (made.st_uid, made.st_gid) != owner:
            if _libc.fchownat(fd, b"", owner[0], owner[1], _AT_EMPTY_PATH) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), tmp)
            made = os.fstat(fd)
        return made
    finally:
        os.close(fd)


class SwapUnsure(OSError):
    """A swap failed at or after its rename: whether the symlink replaced the file is not
    known. ``made``: the symlink's attributes as it was made (it may be in place, or moved on
    to another name by another node, and must then be taken as published)."""

    made: os.stat_result | None = None


def unsure(e: OSError, name: bytes, made: os.stat_result | None) -> SwapUnsure:
    """``SwapUnsure`` for a failure at or after a swap's rename (``e``)."""
    failed = SwapUnsure(e.errno, f"the stub may or may not be in place: {e.strerror}", name)
    failed.made = made
    return failed


def placed(dfd: int, name: bytes, made: os.stat_result) -> os.stat_result:
    """The attributes of ``name`` in ``dfd`` once a rename put the file ``made`` there; ESTALE
    if another file is there (one renamed onto the temp name before the rename)."""
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if (st.st_dev, st.st_ino) != (made.st_dev, made.st_ino):
        raise OSError(errno.ESTALE, "another file went in place of the new symlink", name)
    return st
