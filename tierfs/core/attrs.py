"""What tierfs reports about an inode: the warm file's attributes, with a stub's or the staged
data's laid over them, and the small value types the core passes around."""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import NamedTuple

from tierfs.core.inodes import ROOT_INODE, Inode, PageVersion
from tierfs.core.openfile import OpenFile
from tierfs.stubs import Stub

#: Preferred I/O size reported to applications (coreutils and others size buffers from it).
BLOCK_SIZE = 128 * 1024


def err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Attrs(NamedTuple):
    """The attributes tierfs reports for an inode (the warm file's, with staged data overlaid).

    A named tuple, not a frozen dataclass: a listing makes one per entry on the event loop,
    and a tuple is made several times faster."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    #: Seconds the kernel may keep these attributes, if less than the mount's timeouts:
    #: those read from a listing (``vfs.listed``) are already as old as the listing.
    fresh_for: float | None = None

    @property
    def blocks(self) -> int:
        return (self.size + 511) // 512

    @classmethod
    def from_stat(cls, ino: int, st: os.stat_result) -> Attrs:
        return cls(ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev, st.st_size,
                   st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


@dataclasses.dataclass(frozen=True)
class SetAttr:
    """Which attributes a setattr changes; None leaves one alone."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None

    @property
    def owner_mode_or_times(self) -> bool:
        return (self.mode, self.uid, self.gid, self.atime_ns,
                self.mtime_ns) != (None,) * 5


def attrs_of(inode: Inode, st: os.stat_result, read: Stub | None = None) -> Attrs:
    """An inode's attributes from its warm entry ``st``. ``read``: the stub found with ``st``,
    for an inode whose open state does not take it (a listing older than the file now being
    written under that name)."""
    attrs = Attrs.from_stat(inode.ino, st)
    stub = inode.stub if inode.stub is not None else read
    if stub is not None:  # the symlink's owner and ctime, the file's mode, size and mtime
        attrs = attrs._replace(mode=stat.S_IFREG | stub.mode, nlink=1,
                                    size=stub.size, atime_ns=stub.mtime_ns,
                                    mtime_ns=stub.mtime_ns)
    if not inode.links and inode.ino != ROOT_INODE:
        attrs = attrs._replace(nlink=0)  # NFS shows a silly-renamed file as 1
    data = inode.data
    if data is None or not data.staged:
        return attrs
    return attrs._replace(size=data.size, mtime_ns=data.mtime_ns, atime_ns=data.atime_ns)


def stage_times(data: OpenFile, changes: SetAttr) -> None:
    """Times set on a staged file are published with its data (the warm file's would be
    overwritten then)."""
    if changes.atime_ns is not None:
        data.atime_ns = changes.atime_ns
    if changes.mtime_ns is not None:
        data.mtime_ns = changes.mtime_ns


def version(st: os.stat_result, key: bytes) -> PageVersion:
    """The version of a warm file's content that the kernel's cached pages of it hold (the
    ctime too, for the reason given at ``openfile.warm_id``)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, key)


def mode_override(inode: Inode) -> int | None:
    """The mode a file's new warm file takes, where the file it replaces has none worth
    copying: a stub's symlink (the mode is in the stub)."""
    return inode.stub.mode if inode.stub is not None else None


def file_mode(inode: Inode, data: OpenFile) -> int:
    """A file's permission bits: a cold file's are in its stub (the symlink's own mode means
    nothing). ``data.base`` must be fresh (``Core.fresh_base``)."""
    if inode.stub is not None:
        return inode.stub.mode
    return stat.S_IMODE(data.base.st_mode) if data.base is not None else 0o644


def forget_base(inode: Inode | None) -> None:
    """A namespace change altered an open file's link count or ctime: re-read them, if they
    can be read again (a name or a warm descriptor left; an unlinked cold file has only its
    remembered stub, and the link count comes from the inode)."""
    if inode is None:
        return
    inode.seen = None  # (its link count or ctime changed: an open must look again)
    if inode.data is None:
        return
    if inode.links or inode.data.warm_fd is not None:
        inode.data.base = None
