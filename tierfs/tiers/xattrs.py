"""Extended attributes of warm files, reached through an ``O_PATH`` descriptor (a symlink has
none to give: a stub's are refused), and what tierfs has learnt of a tier that has none."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import AnyStr

from tierfs.stubs import looks_like_stub
from tierfs.tiers.beneath import parent_of


#: Extended attributes the system sets on every file (an SELinux label): no reason to keep a
#: file on the warm tier, nor to refuse its demotion (``own_xattrs``).
SYSTEM_XATTRS = ("security.selinux",)


def own_xattrs(names: Iterable[AnyStr]) -> list[AnyStr]:
    """The names of ``names`` that are the file's own, which its stub would lose."""
    return [n for n in names if os.fsdecode(n) not in SYSTEM_XATTRS]


def proc_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class XattrCalls:
    """The xattr calls of ``WarmTier`` (blocking, as all of its methods)."""

    #: The tier's root directory, which every path is relative to.
    fd: int
    #: The devices under the root found to have no extended attributes (sshfs): a
    #: publish does not look for any there (the look costs a round trip).
    _no_xattrs: set[int]

    @contextmanager
    def _path_fd(self, rel: bytes) -> Iterator[tuple[int, bool]]:
        with parent_of(self.fd, rel) as (dfd, name):
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            yield fd, stat.S_ISLNK(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def getxattr(self, rel: bytes, name: bytes) -> bytes:
        with self._path_fd(rel) as (fd, is_link):
            if is_link:
                raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
            return os.getxattr(proc_path(fd), name)

    def setxattr(self, rel: bytes, name: bytes, value: bytes) -> None:
        with self._path_fd(rel) as (fd, is_link):
            if is_link:
                # A stub is a file in the bucket, whose object keeps no such attributes; a
                # symbolic link refuses them as the kernel does.
                stub = looks_like_stub(os.readlink(b"", dir_fd=fd))
                code = errno.EOPNOTSUPP if stub else errno.EPERM
                raise OSError(code, os.strerror(code))
            os.setxattr(proc_path(fd), name, value)

    def listxattr(self, rel: bytes) -> list[bytes]:
        with self._path_fd(rel) as (fd, is_link):
            if is_link:
                return []
            try:
                return [os.fsencode(n) for n in os.listxattr(proc_path(fd))]
            except OSError as e:
                self.note_xattrs_failed(os.fstat(fd).st_dev, e)
                raise

    def lacks_xattrs(self, dev: int) -> bool:
        """Whether files on this device were found to have no extended attributes: the
        kernel asks for one (security.capability) before the first write to each file, and
        each look would be a round trip on a network file system."""
        return dev in self._no_xattrs

    def note_xattrs_failed(self, dev: int, e: OSError) -> None:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            self._no_xattrs.add(dev)

    def removexattr(self, rel: bytes, name: bytes) -> None:
        with self._path_fd(rel) as (fd, is_link):
            if is_link:
                raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
            os.removexattr(proc_path(fd), name)
