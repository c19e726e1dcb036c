"""The warm tier: the namespace root on NFS, where directories and small files really live.

Every call is relative to one directory fd opened at mount (``*at`` system calls), so a path that
is close to PATH_MAX under the mount point still fits here, whatever the warm root's own length;
a path's directories are reached beneath it without following a symlink (``tiers.beneath``).
Publishing (temp files, renames, writes in place) is in ``tiers.warmcopy``, extended
attributes in ``tiers.xattrs``. All methods block; the filesystem core reaches them only
through ``WarmTier.run``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tierfs.objects.base import BucketURI
from tierfs.tiers.base import Tier
from tierfs.tiers.beneath import (done, new_symlink, open_file, parent_fd, parent_of, placed,
                                  unsure)
from tierfs.tiers.scan import (TEMP_PREFIX, TEMP_SUFFIX, Entry, entries_at, is_internal,
                               names_at, stat_link)
from tierfs.tiers.warmcopy import PublishCalls
from tierfs.tiers.xattrs import proc_path

T = TypeVar("T")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


class WarmTier(PublishCalls, Tier):
    name = "warm"

    def __init__(self, root: Path, threads: int, bucket: BucketURI | None = None) -> None:
        super().__init__(threads)
        self.root = root
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        #: This node's id (from the hot tier's index), in the names of its temp files.
        self.node = b"0"
        #: This run's own mark in its temp file names (``of_this_run``).
        self.run_mark = uuid.uuid4().hex[:8].encode()
        #: The owner (uid, gid) the tier gave the last file this node made: the owner a new
        #: one will have, most likely (see ``new_perms``).
        self._made_as: tuple[int, int] | None = None
        #: The devices under the root found to have no extended attributes (sshfs): a
        #: publish does not look for any there (the look costs a round trip).
        self._no_xattrs: set[int] = set()
        self.bucket = bucket

    def close(self) -> None:
        os.close(self.fd)

    # -- metadata -------------------------------------------------------------------------

    def _temp_name(self) -> bytes:
        # The node's id first: after a crash, a node removes its own temp files and never
        # those of another node publishing into the same tree; then this run's, so that the
        # removal (in the background while the mount serves) spares the run's own.
        return (TEMP_PREFIX + self.node + b"-" + self.run_mark + uuid.uuid4().hex.encode()
                + TEMP_SUFFIX)

    def temp_name(self) -> bytes:
        """A fresh temp file name of this node (for calls made relative to a directory fd)."""
        return self._temp_name()

    def is_ours(self, name: bytes) -> bool:
        """Whether a temp file name was made by this node."""
        return name.startswith(TEMP_PREFIX + self.node + b"-")

    def of_this_run(self, name: bytes) -> bool:
        """Whether a temp file name was made by this run of this node (this mount)."""
        return name.startswith(TEMP_PREFIX + self.node + b"-" + self.run_mark)

    def lstat(self, rel: bytes) -> os.stat_result:
        dfd, name = parent_fd(self.fd, rel)
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        finally:
            done(self.fd, dfd)

    def lstat_link(self, rel: bytes) -> tuple[os.stat_result, bytes | None]:
        """Attributes, and the target if it is a symlink (it may be a stub)."""
        return stat_link(lambda: self.lstat(rel), lambda: self.readlink(rel))

    def lstat_link_if_any(self, rel: bytes) -> tuple[os.stat_result, bytes | None] | None:
        """``lstat_link``; None if nothing is at ``rel``."""
        try:
            return self.lstat_link(rel)
        except FileNotFoundError:
            return None

    def holds_any(self, rel: bytes, dev: int, ino: int, files: list[tuple[bytes, int, int]]
                  ) -> bool:
        """Whether the directory at ``rel`` is still (``dev``, ``ino``) and one of ``files``
        (name, device, inode number) is in it as that very file: the names are looked up in
        the directory that was checked, through its descriptor."""
        dfd = self.open_dir(rel)
        try:
            st = os.fstat(dfd)
            if (st.st_dev, st.st_ino) != (dev, ino):
                return False
            for name, file_dev, file_ino in files:
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (file_dev, file_ino):
                    return True
            return False
        finally:
            os.close(dfd)

    def listdir(self, rel: bytes) -> list[Entry]:
        """Names, attributes, extended attribute names (None where they could not be listed)
        and symlink targets of a directory's entries, without tierfs's own temp files."""
        return self.in_dir(rel, lambda dfd: entries_at(dfd, names_at(dfd) or []))

    def list_attrs(self, rel: bytes, most: int) -> list[Entry] | None:
        """As ``listdir``, without extended attributes; None past ``most`` entries (the
        listing stops there: its size is anyone's choice on a shared tree)."""
        def read(dfd: int) -> list[Entry] | None:
            names = names_at(dfd, most)
            return None if names is None else entries_at(dfd, names, xattrs=False)
        return self.in_dir(rel, read)

    def names(self, rel: bytes) -> list[bytes]:
        """A directory's names, without tierfs's own temp files."""
        return self.in_dir(rel, lambda dfd: names_at(dfd) or [])

    def open_dir(self, rel: bytes) -> int:
        """A descriptor of a directory, to read its entries by (``tiers.scan``)."""
        return self.open(rel, os.O_RDONLY | os.O_DIRECTORY)

    def in_dir(self, rel: bytes, read: Callable[[int], T]) -> T:
        """``read`` of a descriptor of the directory ``rel``, closed after."""
        dfd = self.open_dir(rel)
        try:
            return read(dfd)
        finally:
            os.close(dfd)

    def replace_symlink(self, rel: bytes, target: bytes,
                        expect: tuple[int, int] | None = None) -> os.stat_result:
        """Swap a symlink's target atomically (a stub's mode or mtime changed), keeping its
        owner. ``expect``: the (device, inode) the symlink must have; ESTALE if another file
        holds the name now (the change came for an inode, and the tree is anyone's)."""
        old = self.lstat(rel)
        if expect is not None and ((old.st_dev, old.st_ino) != expect
                                   or not stat.S_ISLNK(old.st_mode)):
            raise OSError(errno.ESTALE, "another file at its name now", rel)
        return self._swap_in_symlink(rel, target, old)

    def _swap_in_symlink(self, rel: bytes, target: bytes, old: os.stat_result
                         ) -> os.stat_result:
        """A symlink to ``target`` renamed over ``rel`` (``old``: its attributes), with their
        owner."""
        tmp = self._temp_name()
        with parent_of(self.fd, rel) as (dfd, name):
            try:
                # (Its owner changed only where it differs, as chown_new: an SFTP server
                # (sshfs) cannot change a symlink's owner, its SETSTAT follows the link, and
                # a stub's target is no path.)
                made = new_symlink(dfd, tmp, target, (old.st_uid, old.st_gid))
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            try:
                return placed(dfd, name, made)
            except OSError as e:  # renamed away by another node at once, or another file there
                raise unsure(e, name, made) from e

    def stub_over(self, rel: bytes, target: bytes) -> os.stat_result | None:
        """``replace_symlink`` of what is at ``rel``; None (nothing done) if nothing is there
        any more (removed by another node). A name missing only after the swap (renamed away
        at once) raises: the stub is somewhere."""
        try:
            old = self.lstat(rel)
        except FileNotFoundError:
            return None
        return self._swap_in_symlink(rel, target, old)

    def retarget_symlink(self, rel: bytes, expect: bytes, target: bytes
                         ) -> os.stat_result | None:
        """``replace_symlink`` if ``rel`` is still the symlink to ``expect``; None (nothing
        done) otherwise."""
        try:
            if self.readlink(rel) != expect:
                return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.EINVAL:  # not a symlink
                return None
            raise
        return self.replace_symlink(rel, target)

    def clear_temps(self, rel: bytes) -> bool:
        """Remove tierfs temp files from a directory that holds nothing else: left by a crashed
        publish, or by one whose file moved out before the directory was renamed, they must
        not keep an empty directory alive (rmdir, a rename over it). False, nothing removed,
        if it holds other names."""
        if self.names(rel):
            return False
        self.purge_temps(rel)
        return True

    def purge_temps(self, rel: bytes) -> None:
        """Remove tierfs temp files from a directory (left behind by an interrupted publish)."""
        dfd = self.open_dir(rel)
        try:
            for name in os.listdir(dfd):
                if is_internal(os.fsencode(name)):
                    os.unlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)

    def chmod(self, rel: bytes, mode: int) -> None:
        """The mode of the file at ``rel`` itself: a symlink put there meanwhile is refused
        (ELOOP), never followed (Linux has no chmod of a symlink, and ``chmod`` by path
        follows one)."""
        fd = self.open(rel, os.O_PATH)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, "a symlink: its mode is not changed", rel)
            os.chmod(proc_path(fd), stat.S_IMODE(mode))
        finally:
            os.close(fd)

    def chown(self, rel: bytes, uid: int, gid: int) -> None:
        with parent_of(self.fd, rel) as (dfd, name):
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)

    def set_attrs(self, rel: bytes, expect: tuple[int, int], uid: int, gid: int,
                  mode: int | None, times: tuple[int | None, int | None] | None) -> None:
        """Owner (-1: unchanged), mode and times of the file at ``rel``, only if it is the file
        ``expect`` (device, inode) names: ESTALE otherwise. An attribute change comes for an
        inode (``fchmod`` of a descriptor needs no lookup), and another file may hold its
        name by now, on a tree anyone may write; it must not get the change. The file is held
        by an ``O_PATH`` descriptor from the check on, and changed through it, but for a
        symlink's owner and times (Linux changes those by path only)."""
        fd = self.open(rel, os.O_PATH)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != expect:
                raise OSError(errno.ESTALE, "another file at its name now", rel)
            link = stat.S_ISLNK(st.st_mode)
            if mode is not None and link:
                raise OSError(errno.EOPNOTSUPP, "a symlink: its mode is not changed", rel)
            if times is not None:
                atime_ns, mtime_ns = times
                times = (st.st_atime_ns if atime_ns is None else atime_ns,
                         st.st_mtime_ns if mtime_ns is None else mtime_ns)
            if not link:
                if uid != -1 or gid != -1:
                    os.chown(proc_path(fd), uid, gid)
                if mode is not None:
                    os.chmod(proc_path(fd), stat.S_IMODE(mode))
                if times is not None:
                    os.utime(proc_path(fd), ns=times)
                return
            with parent_of(self.fd, rel) as (dfd, name):
                if uid != -1 or gid != -1:
                    os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
                if times is not None:
                    os.utime(name, ns=times, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(fd)

    def truncate(self, rel: bytes, size: int, expect: tuple[int, int]) -> None:
        """A new size for the file at ``rel``, only if it is the file ``expect`` (device,
        inode) names: ESTALE otherwise (as ``set_attrs``)."""
        fd = self.open(rel, os.O_WRONLY)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != expect:
                raise OSError(errno.ESTALE, "another file at its name now", rel)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(self.fd)

    # -- names ----------------------------------------------------------------------------

    def mkdir(self, rel: bytes, mode: int) -> None:
        with parent_of(self.fd, rel) as (dfd, name):
            os.mkdir(name, mode, dir_fd=dfd)

    def rmdir(self, rel: bytes) -> None:
        with parent_of(self.fd, rel) as (dfd, name):
            os.rmdir(name, dir_fd=dfd)

    def unlink(self, rel: bytes) -> None:
        with parent_of(self.fd, rel) as (dfd, name):
            os.unlink(name, dir_fd=dfd)

    def symlink(self, target: bytes, rel: bytes) -> None:
        with parent_of(self.fd, rel) as (dfd, name):
            os.symlink(target, name, dir_fd=dfd)

    def readlink(self, rel: bytes) -> bytes:
        dfd, name = parent_fd(self.fd, rel)
        try:
            return os.readlink(name, dir_fd=dfd)
        finally:
            done(self.fd, dfd)

    def link(self, rel: bytes, new_rel: bytes) -> None:
        with parent_of(self.fd, rel) as (sfd, name), \
                parent_of(self.fd, new_rel) as (dfd, new_name):
            os.link(name, new_name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def mknod(self, rel: bytes, mode: int, rdev: int) -> None:
        with parent_of(self.fd, rel) as (dfd, name):
            os.mknod(name, mode, rdev, dir_fd=dfd)

    def rename(self, rel: bytes, new_rel: bytes, flags: int = 0) -> None:
        with parent_of(self.fd, rel) as (sfd, name), \
                parent_of(self.fd, new_rel) as (dfd, new_name):
            self._rename_at(sfd, name, dfd, new_name, flags)

    def _rename_at(self, sfd: int, rel: bytes, dfd: int, new_rel: bytes, flags: int) -> None:
        if flags == 0:
            os.rename(rel, new_rel, src_dir_fd=sfd, dst_dir_fd=dfd)
            return
        if _renameat2 is not None:
            if _renameat2(sfd, rel, dfd, new_rel, flags) == 0:
                return
            err = ctypes.get_errno()
            if not (err in (errno.EINVAL, errno.ENOSYS) and flags == RENAME_NOREPLACE):
                raise OSError(err, os.strerror(err))
        elif flags != RENAME_NOREPLACE:
            raise OSError(errno.EINVAL, "renameat2 is not available")
        # The warm file system (NFS, say) has no RENAME_NOREPLACE: emulate it. The caller holds
        # the namespace lock, so only another node can race between the check and the rename.
        try:
            os.stat(new_rel, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(rel, new_rel, src_dir_fd=sfd, dst_dir_fd=dfd)
        else:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))

    # -- data -----------------------------------------------------------------------------

    def open(self, rel: bytes, flags: int, mode: int = 0o600) -> int:
        """A descriptor of the regular file (or, with ``O_DIRECTORY``, directory) at ``rel``;
        anything else put there is refused before it is opened (``beneath.open_file``)."""
        dfd, name = parent_fd(self.fd, rel)
        try:
            return open_file(dfd, name, flags, mode)
        finally:
            done(self.fd, dfd)

    def open_read(self, rel: bytes) -> tuple[int, os.stat_result]:
        """A read-only descriptor of a file and its attributes, in one call."""
        fd = self.open(rel, os.O_RDONLY)
        try:
            return fd, os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise

    def fsync_dir(self, rel: bytes) -> None:
        fd = self.open_dir(rel)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
