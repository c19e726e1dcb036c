"""What the removal of a name (an unlink, a rename over it) means for a file open on this
node: its warm file reached before the name goes, and whether it still has names elsewhere."""

from __future__ import annotations

import errno
import os
import stat

from tierfs.core.context import Core
from tierfs.core.inodes import Inode, identity

#: What an open of the name made before its removal may meet when another node replaced or
#: removed it (or made it unreadable): the removal goes ahead. Anything else (EIO, EMFILE)
#: fails it, rather than remove the name of a file whose descriptor could not be had.
NOT_THERE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ESTALE, errno.EACCES,
                       errno.EPERM})
#: What a name held just before tierfs removed it: its attributes and a symlink's target.
Link = tuple[os.stat_result, bytes | None]


async def open_before_removal(core: Core, inode: Inode | None) -> None:
    """An open file whose warm file was not opened yet (``OpenFile.warm_deferred``) is
    opened before its name goes, so that its handles read it to the end, as those of a
    file opened the usual way. A staged file whose created warm file a publish closed
    (``WarmPublisher._let_go_of_created``) has its attributes read now if a change made
    them stale: once the name is gone, they are answered from memory; and, if it still has
    data to publish, its warm file opened (a failed publish, or one under way, let go of
    it): should the file have names made elsewhere, the descriptor is all that reaches it
    once this name is gone (``WarmPublisher.publish_unnamed``). Caller holds
    ``ns_lock`` exclusively (no open is answered from memory meanwhile:
    ``NamespaceLock.quiet``)."""
    if inode is None or (data := inode.data) is None:
        return
    if data.warm_deferred:
        try:
            await core.open_warm(inode, data)
        except OSError as e:
            if e.errno not in NOT_THERE:
                raise
            return  # (another file there now, or none: its handles find it stale)
    elif (data.warm_fd is None and data.stub is None and len(inode.links) == 1
          and (rel := core.rel_or_none(inode)) is not None):
        warm = core.warm
        if not data.dirty:
            if data.base is None:
                data.base = await warm.run(warm.lstat, rel)
            return
        try:
            fd, st = await warm.run(warm.open_read, rel)
        except OSError as e:
            if e.errno not in NOT_THERE:
                raise
            return  # (not this file any more, or not to be opened: the removal goes ahead)
        if identity(st) == inode.key and data.warm_fd is None and inode.data is data:
            data.warm_fd, fd = fd, -1
            data.base = data.base or st
        if fd >= 0:
            await warm.run(os.close, fd)


def last_name_of_open(inode: Inode | None) -> bool:
    """Whether a name about to go is the last this mount knows of a warm file with open
    state: the file's attributes are read just before (``note_other_names``)."""
    return (inode is not None and inode.data is not None and inode.stub is None
            and not inode.is_dir and len(inode.links) == 1)


def note_other_names(inode: Inode | None, link: Link | None) -> None:
    """An open file lost its last name here (``link``: what the name held just before):
    if that file has more names, hard links made elsewhere, what it stages still has
    somewhere to go (``OpenFile.linked_elsewhere``)."""
    if (inode is None or inode.links or inode.data is None or inode.stub is not None
            or link is None):
        return
    st = link[0]
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and identity(st) == inode.key:
        inode.data.linked_elsewhere = True
