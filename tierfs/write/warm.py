"""Publishing to the warm tier: staged data put in place so that readers there see it whole.

Three ways, one outcome: where the hot and warm tiers share a file system the staging file
itself is settled (attributes, fsync) and renamed over the file's name; in sync mode a temp
file filled ahead of the close (``transfer.mirror``) is finished and renamed; otherwise
staging is copied to a temp name beside the target, fsynced and renamed. A hard-linked file is
written in place instead. Every rename is made under the namespace lock against the file's
current path, so a file renamed or unlinked meanwhile is published to its new name, or not at
all; attributes changed meanwhile are taken again in the same call (``Reapply``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from tierfs.paths import show
from tierfs.core.attrs import err, mode_override
from tierfs.core.context import AttrMark, Core
from tierfs.core.inodes import Inode, key_ids
from tierfs.core.openfile import OpenFile, warm_id
from tierfs.tiers.beneath import join, split
from tierfs.tiers.warm import WarmTier
from tierfs.tiers.warmcopy import LinkedMeanwhile, Reapply
from tierfs.transfer.mirror import Mirror
from tierfs.write.journal import Journal

log = logging.getLogger(__name__)


class LostItsName(Exception):
    """The name a publish went to was unlinked meanwhile, and the file has other names made
    elsewhere (``OpenFile.linked_elsewhere``): the data goes to them instead."""


R = TypeVar("R")

#: Times a publish's warm call is made again when the file was renamed under it.
STALE_TRIES = 4
#: Tries of a publish's call by path without the namespace lock (``WarmPublisher.at_path``).
UNLOCKED_TRIES = 8


async def drop_mirror(warm: WarmTier, data: OpenFile) -> None:
    """Remove a file's head-start temp file (it will not be published from). (``warm``: the
    tier it is on, which the mirror knows itself.)"""
    mirror, data.mirror = data.mirror, None
    if mirror is not None:
        await mirror.discard()


class WarmPublisher:
    def __init__(self, core: Core, journal: Journal) -> None:
        self.core = core
        self.journal = journal

    async def publish(self, inode: Inode, data: OpenFile, rel: bytes, times: tuple[int, int]
                      ) -> os.stat_result | None:
        """Put the staged data in place on the warm tier: rename the staging file itself
        (tiers on one file system), or finish the head-start temp file if there is one, or
        copy it all; rename. None if the file was unlinked meanwhile."""
        core = self.core
        mode = mode_override(inode)
        since = core.attr_mark(inode)  # before anything copies them (see Reapply)
        if core.publish_by_rename and data.mirror is None:
            done, st = await self._rename_staging(inode, data, times, mode, since)
            if done:
                return st
        await self._let_go_of_created(inode, data)
        mirror, data.mirror = data.mirror, None
        if mirror is not None:
            try:
                await mirror.wait()
                finished = await core.warm.run(self._finish_mirror, mirror, data, rel, times,
                                               mode)
                if finished is not None:
                    try:
                        return await self.rename_into_place(inode, data, *finished, since,
                                                            mirror=mirror)
                    except LinkedMeanwhile:
                        pass  # the copy below writes it in place
                    except FileNotFoundError:
                        pass  # the temp file went with its emptied directory: copy it all
            finally:
                # Left by a failure or a cancellation between the finish and the rename: a
                # whole copy of the file on the shared tier, and its directory's descriptor.
                await mirror.discard()
        for _ in range(STALE_TRIES):
            # (``data.base``: the owner and mode for a file another node took from its name
            # meanwhile, which this publish puts back, rather than the daemon's and 0600.)
            copied = await self.at_path(inode, core.warm.publish_copy, data.staging_fd,
                                        data.size, times, mode, key_ids(inode.key), data.base)
            if copied is None:
                return None  # unlinked meanwhile
            tmp, st = copied
            if tmp is None:
                return st  # hard-linked: written in place
            try:
                return await self.rename_into_place(inode, data, tmp, st, since)
            except LinkedMeanwhile:
                continue  # renamed while it was copied: written in place next time round
            except FileNotFoundError:
                # The temp file went with the directory it was made in: the file moved out
                # and an rmdir, or a rename over that directory, removed it. Copied again.
                continue
        raise err(errno.EAGAIN)

    async def publish_unnamed(self, data: OpenFile, times: tuple[int, int]
                              ) -> os.stat_result | None:
        """The publish of a file with no name this mount knows: nobody can see its staged
        data (None, nothing written), unless the warm file has names made elsewhere
        (``OpenFile.linked_elsewhere``): then it is written in place through its descriptor,
        as a hard-linked file always is; the file's attributes after."""
        core = self.core
        await drop_mirror(core.warm, data)
        if not data.linked_elsewhere or data.upload is not None:
            return None
        if data.warm_fd is None:  # (nothing reaches the file: kept, never dropped as unseen)
            raise OSError(errno.EIO, "no descriptor left on a file whose names are elsewhere")
        assert data.staging_fd is not None
        return await core.warm.run(core.warm.write_through, data.warm_fd, data.staging_fd,
                                   data.size, times)

    async def _let_go_of_created(self, inode: Inode, data: OpenFile) -> None:
        """Close the descriptor of the warm file this open created, before the publish renames
        a new file over it. It holds no data (all of it is staged: reads go there) and only
        kept the file reachable once unlinked; replaced while open, a network file system's
        client would first rename it away to a hidden name and remove it at its last close
        (NFS's silly rename, libfuse's .fuse_hidden: three more round trips), and it is done
        early so that the close has reached the server by the rename. Only while the file
        has its name, under the namespace lock (no unlink or rename over it is half done):
        once unlinked, the descriptor is kept. What it answered once the name is gone comes
        from memory (``Namespace.unlink`` reads the attributes if a change forgot them)."""
        core = self.core
        fd = data.warm_fd
        if fd is None or not data.created or data.staging_fd is None:
            return
        async with core.ns_lock.shared():
            if core.rel_or_none(inode) is None or data.warm_fd != fd:
                return
            data.warm_fd = None
            await core.warm.run(os.close, fd)

    async def at_path(self, inode: Inode, fn: Callable[..., R], *args: Any) -> R | None:
        """``fn(path, *args)`` in a warm worker, on the inode's path as it is when the call
        starts. It runs without the lock, so that renames need not wait for a copy: a rename
        through the mount meanwhile makes that path vanish under the call (FileNotFoundError),
        and it runs again on the new one; so do renames that moved it away and back
        (``Core.renames``). A try fails so where the call needs the path at its start (a copy's
        temp file is made beside the file, before the copy; ``_copy_attributes`` takes a path
        gone later as gone), so a failed try costs little. After ``UNLOCKED_TRIES`` of them
        (a renamer in a loop), the last holds the lock shared, renames and unlinks waiting for
        it, rather than failing the fsync or close. None once unlinked."""
        core = self.core
        for _ in range(UNLOCKED_TRIES):
            rel = core.rel_or_none(inode)
            if rel is None:
                return None
            renames = core.renames
            try:
                return await core.warm.run(fn, rel, *args)
            except FileNotFoundError:
                # A rename under way has taken the path on the tier before it moves the name
                # here: its end is waited for. (Never called under the lock: a publish takes
                # it exclusively later on.)
                async with core.ns_lock.shared():
                    pass
                if core.rel_or_none(inode) == rel and core.renames == renames:
                    raise  # not renamed: gone behind tierfs's back
        async with core.ns_lock.shared():
            rel = core.rel_or_none(inode)
            if rel is None:
                return None
            return await core.warm.run(fn, rel, *args)

    async def _rename_staging(self, inode: Inode, data: OpenFile, times: tuple[int, int],
                              mode: int | None, since: AttrMark
                              ) -> tuple[bool, os.stat_result | None]:
        """Publish by renaming the staging file over the file's name: on one file system a
        copy would write every byte a second time. The staging file becomes the published
        file (kept open as the file's warm descriptor), and a writer that goes on stages a
        fresh copy of it: the bytes a publish by copy would have copied, and only if more
        writes come. (False, None) when this cannot serve and the caller copies: a
        hard-linked file, or tiers on different file systems after all."""
        core = self.core
        assert data.staging_fd is not None and data.staging_id is not None
        settled = await self.at_path(inode, core.warm.settle_staged, data.staging_fd,
                                     data.size, times, mode, data.base)
        if settled is None:
            return True, None  # unlinked meanwhile
        if not settled:
            return False, None
        sid = data.staging_id
        async with core.ns_lock:
            target = core.rel_or_none(inode)
            if target is None:
                return True, None  # unlinked meanwhile: the staging file goes at discard
            # The replaced file's descriptor is closed in the same call. The file is staged,
            # so reads use the staging descriptor; a warm block read-ahead task still holding
            # the old number can only fail or cache bytes under the old identity, which no
            # reader asks for any more.
            again = self._reapply(inode, data, since)
            try:
                adopted = await self.adopt_staging(sid, data.staging_fd, target, data.warm_fd,
                                                   again)
            except LinkedMeanwhile:
                return False, None  # the copy writes it in place
            if adopted is None:
                return False, None
            st, parent_st = adopted
            # No await from the rename to here: reads find the content under either name.
            data.warm_fd, data.staging_fd, data.staging_id = data.staging_fd, None, None
            data.warm_id = warm_id(st)
            core.dir_changed(inode, parent_st)
        self.journal.drop(sid)
        return True, st

    def _reapply(self, inode: Inode, data: OpenFile, since: AttrMark) -> Reapply | None:
        """What a publish must take again from the file it replaces, if the file's attributes
        may have changed since it copied them (``since``). Caller holds ``ns_lock``."""
        if self.core.attr_mark(inode) == since:
            return None
        return Reapply(mode_override(inode), (data.atime_ns, data.mtime_ns))

    async def adopt_staging(self, sid: str, fd: int, target: bytes, retire: int | None,
                            again: Reapply | None = None
                            ) -> tuple[os.stat_result, os.stat_result | None] | None:
        """Rename a settled staging file over ``target`` (``WarmTier.adopt``): the attributes
        of the file and of its directory, or None if the tiers turn out to be on different
        mounts (EXDEV), which turns publishing by rename off for good."""
        core = self.core
        try:
            return await core.warm.run(core.warm.adopt, core.hot.staging_dir / sid, fd,
                                       target, retire, again)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
        log.info("the hot and warm tiers are on different mounts: publishing by copy")
        core.publish_by_rename = False
        return None

    async def rename_into_place(self, inode: Inode, data: OpenFile, tmp: bytes,
                                made: os.stat_result, since: AttrMark,
                                mirror: Mirror | None = None) -> os.stat_result | None:
        """Rename a finished temp file (``made``: its attributes as finished) over the file's
        current name, under the namespace lock (None, and the temp file removed, if the file
        was unlinked meanwhile). ``since``: ``attr_mark`` before the temp file took the
        attributes of the old one. ``mirror``: the head start ``tmp`` was finished from, which
        reaches it through its directory's descriptor wherever that directory went (``tmp``
        is then only its name there)."""
        core = self.core
        async with core.ns_lock:
            target = core.rel_or_none(inode)
            if target is None:
                if mirror is None:
                    await core.warm.run(core.warm.unlink, tmp)
                else:
                    await core.warm.run(mirror.drop)
                return None
            again = self._reapply(inode, data, since)
            if mirror is None:
                st, parent_st = await core.warm.run(self._replace_moved, tmp, target, made,
                                                    again)
            else:
                st, parent_st = await core.warm.run(mirror.replace, target, made, again)
            core.dir_changed(inode, parent_st)
            return st

    def _replace_moved(self, tmp: bytes, target: bytes, made: os.stat_result,
                       again: Reapply | None) -> tuple[os.stat_result, os.stat_result | None]:
        """``WarmTier.replace``, with the temp file found where a rename of its directory
        took it: it was made beside the file, and a directory renamed since (while it was
        copied, a wide window on a slow warm tier) moved both. Blocking."""
        warm = self.core.warm
        try:
            try:
                return warm.replace(tmp, target, made, again)
            except FileNotFoundError:
                moved = join(split(target)[0], split(tmp)[1])
                if moved == tmp:
                    raise
                tmp = moved
                return warm.replace(moved, target, made, again)
        except OSError:
            # A whole copy of the file: not left on the shared tier for each failed try.
            with contextlib.suppress(OSError):
                warm.unlink(tmp)
            raise

    def _finish_mirror(self, mirror: Mirror, data: OpenFile, rel: bytes,
                       times: tuple[int, int], mode: int | None
                       ) -> tuple[bytes, os.stat_result] | None:
        """The head-start temp file made whole and fsynced, with its attributes, or None
        when it cannot serve (then it is removed and the caller copies everything).
        Blocking."""
        try:
            st = self.core.warm.lstat(rel)
        except FileNotFoundError:
            st = None
        if not mirror.usable or (st is not None and st.st_nlink > 1):
            mirror.drop()  # hard-linked since: it must be published in place
            return None
        assert data.staging_fd is not None
        try:
            return mirror.finish(data.staging_fd, data.size, rel, times, mode)
        except OSError as e:
            log.warning("finishing the head-start copy of %s failed, copying it all: %s",
                        show(rel), e)
            return None

    # -- ahead of the close (sync mode) ---------------------------------------------------

    def flush_ahead_from(self, data: OpenFile, offset: int, size: int) -> int | None:
        """Sync mode, publishing by rename: where the staging file's write to disk should start
        along with this write (None: not now). Only for a file growing in order, a step of
        ``publish_ahead`` at a time. Not in write-back mode: there the writer would wait for
        the disk's queue, which made checkpoints slower (bench/checkpoint.py)."""
        config = self.core.config
        step = config.publish_ahead
        if (not step or config.durability != "sync" or not self.core.publish_by_rename
                or data.upload is not None or offset != data.written):
            return None
        start = min(data.flushed_ahead, offset)
        return start if offset + size - start >= step else None

    def copy_ahead(self, inode: Inode, data: OpenFile) -> None:
        """Sync mode: copy what is written so far to the warm temp file in the background, so
        that close has only the tail left to copy. Caller holds ``data.lock``."""
        core = self.core
        step = core.config.publish_ahead
        if (not step or core.config.durability != "sync" or core.nursery is None
                or core.publish_by_rename
                or data.upload is not None or data.staging_fd is None):
            return
        mirror = data.mirror
        if mirror is None:
            base = data.base
            if data.written < step or (base is not None and base.st_nlink > 1):
                return  # small so far, or hard-linked (published in place, not renamed)
            rel = core.rel_or_none(inode)
            if rel is None:
                return
            mirror = data.mirror = Mirror(core.warm, split(rel)[0])
            log.debug("copying %s ahead to the warm tier", show(rel))
        elif mirror.busy or mirror.broken or data.written - mirror.copied < step:
            return
        mirror.start(core.nursery, data.staging_fd, lambda: data.written, step)
