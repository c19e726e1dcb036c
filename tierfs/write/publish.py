"""Publishing: the one decision that staged data is safe at home, for every path that needs
it (a close, an fsync, a write-back task, unmount, and recovery after a crash).

``Publisher.publish`` takes an open file in one of the unpublished states and leaves it
published (CLEAN or STAGED) or FAILED, with its data still staged for another try. It decides
warm or cold (``placement``) and delegates to the warm or cold publisher; recovery rebuilds an
open file from the journal and calls this same method, so a file finished after a crash is
published exactly as a live close would have published it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable

import trio

from tierfs.core.attrs import err, version
from tierfs.core.context import Core
from tierfs.core.inodes import Inode, identity
from tierfs.core.openfile import DataState, OpenFile, warm_id
from tierfs.write.cold import ColdPublisher
from tierfs.write.journal import Journal
from tierfs.write.warm import LostItsName, WarmPublisher

log = logging.getLogger(__name__)

#: Looks at the entries recovery left elsewhere, for a publish through a hard link: again for
#: those renamed through the mount during the look before.
LOOKS = 3


class Publisher:
    def __init__(self, core: Core, journal: Journal, warm: WarmPublisher,
                 cold: ColdPublisher) -> None:
        self.core = core
        self.journal = journal
        self.warm = warm
        self.cold = cold

    async def publish(self, inode: Inode, data: OpenFile) -> None:
        """Put staged data home so that readers there see it whole. Takes ``data.lock``."""
        async with data.lock:
            if not data.dirty or data.staging_fd is None:
                return
            data.to(DataState.PUBLISHING)
            try:
                if self.journal.would_publish(data):
                    # (Only for data recovery would publish in place of the older: not an
                    # fsync's or an unmount's of a file still open, whose failure must leave
                    # the older acknowledged data publishable.)
                    await self._supersede(inode, data)
                await self._publish(inode, data)
            except BaseException:
                if data.state is DataState.PUBLISHING:
                    data.to(DataState.FAILED)
                raise
            finally:
                # What is home changed (a hard-linked file is written in place: same inode
                # number, no ``rekey``): no lookup from a listing taken before (``vfs.listed``).
                self.core.changes += 1
                # Nor is the warm readers' descriptor of the file replaced needed: held on, it
                # kept that file (its blocks; on NFS a hidden name in the shared tree). (One
                # made meanwhile, for the file as published, stays.)
                held = data.reader_fd
                if held is not None and (data.stub is not None or held.version != data.warm_id):
                    self.core.drop_reader_fd(data)
            # Home now: a change from here on stages what was published, never the empty
            # file a create made (``Staging.stage``), whichever way it went home.
            data.created = False
            data.error = None  # (a failed write-back is home now: nothing to report)
            await self._supersede(inode, data)  # (entries recorded there meanwhile)
        self.core.invalidate_attrs(inode.ino)

    async def _supersede(self, inode: Inode, data: OpenFile) -> None:
        """Staged data an earlier failed publish left under this name is older than what goes
        home now: it must never be published over it (at recovery, say). Taken back, and
        committed, before the publish: once this data is home, a crash before that commit left
        the older entry closed at the name, and the next recovery published it over the newer
        (whose own entry then said published, or whose staging file had been renamed home).
        Taken back early loses nothing where recovery would publish the file's own entry
        (``Journal.would_publish``): until this data is home, that newer entry is."""
        rel = self.core.rel_or_none(inode)
        if rel is None:
            return
        if self.journal.superseded(rel, data.staging_id):
            await self.journal.sync()
        if data.base is not None and data.base.st_nlink < 2:
            return  # (not hard-linked when last seen)
        if await self.supersede_links(rel, self.journal.older_than(data)):
            await self.journal.sync()

    async def supersede_links(self, rel: bytes, older_than: int | None = None) -> bool:
        """``Journal.superseded`` for the other names of a hard-linked regular file: entries
        recovery left at a path that now names the same warm file as ``rel`` (acknowledged
        before ``older_than``, if given). Returns whether any changed (then the caller
        syncs). No warm call unless a recovery left entries. An entry renamed through the
        mount while its old path was looked at is looked at again at its new one."""
        left = self.journal.left_elsewhere(rel, older_than)
        changed = False
        for _ in range(LOOKS):
            if not left:
                break
            same = await self.core.warm.run(_same_file, self.core.warm.lstat, rel, left)
            for sid in same:
                self.journal.supersede(sid)
            changed = changed or bool(same)
            now = self.journal.left_elsewhere(rel, older_than)
            left = {sid: path for sid, path in now.items() if sid in left and path != left[sid]}
        return changed

    async def _copied_home(self, data: OpenFile, st: os.stat_result) -> None:
        """Published by copy: the warm file is a temp file renamed over the name, and the
        descriptor opened before (if any) names the file it replaced. Staging serves reads and
        writes while it lasts, but it can go without another publish (an upload abandoned or
        lost: the file keeps what is home), and then reads and the next staging must find the
        published file, not the replaced one. So the warm file is opened again by the first
        call that needs it (``Core.open_warm``), as an open answered from memory is; a file
        written in place (hard-linked) keeps its descriptor."""
        old = data.warm_fd
        same = data.warm_id is not None and data.warm_id[0] == st.st_ino
        data.warm_id = warm_id(st)
        if old is not None and same:
            return
        data.warm_fd, data.warm_deferred = None, True
        if old is None:
            return
        with trio.CancelScope(shield=True):  # (it is no one's any more: never leaked)
            try:
                await self.core.warm.run(os.close, old)
            except OSError as e:  # (the descriptor is freed all the same)
                log.warning("could not close a warm file a publish replaced: %s", e)

    async def _publish(self, inode: Inode, data: OpenFile) -> None:
        core = self.core
        rel = core.rel_or_none(inode)
        st: os.stat_result | None = None
        if rel is not None:
            try:
                st = await self._publish_named(inode, data, rel)
            except LostItsName:
                rel = None  # (its other names, made elsewhere, are where it goes now)
            else:
                if st is None:
                    return  # in the bucket, or unlinked meanwhile
        if rel is None:
            if data.linked_elsewhere and data.upload is not None:
                # Bound for the bucket, but its names left are made elsewhere: written
                # through its descriptor instead (a stub cannot be hard-linked), unless parts
                # of it left staging and are in the upload alone.
                if data.upload.punched:  # (never tried again: it cannot succeed)
                    # Aborted first: that waits for parts in flight, which must not punch
                    # holes through a staging descriptor closed and given to another file.
                    await data.upload.abort()
                    await self.cold.lose_upload(inode, data, "its last name here went (names "
                                                "made elsewhere remain) while it streamed")
                    raise err(errno.EIO)
                await self.cold.drop_upload(data)
            st = await self.warm.publish_unnamed(data, (data.atime_ns, data.mtime_ns))
            if st is None:  # unlinked: nothing to publish, nobody can see it
                data.to(DataState.STAGED)
                return
            # Written in place through the only descriptor that reaches it: kept (the
            # version it names now), never closed as a publish by copy's replaced file is.
            data.warm_id = warm_id(st)
        assert st is not None
        data.base = st
        data.to(DataState.STAGED if data.staged else DataState.CLEAN)
        if data.staged and core.cache_warm:  # published by copy: staging is this version
            data.published_as = warm_id(st)
        if self.journal.mark_published(data):
            await self.journal.sync()
        inode.stub = data.stub = None  # it is a warm file now
        if data.replaces_object is not None:
            await core.delete_object(data.replaces_object, data.replaces_etag)
            data.replaces_object = None
        # The kernel's pages are what was written through it, unless O_DIRECT bypassed them.
        inode.cached_version = None if data.direct_written else version(st, inode.key)
        data.direct_written = False
        if data.staged:
            await self._copied_home(data, st)

    async def _publish_named(self, inode: Inode, data: OpenFile, rel: bytes
                             ) -> os.stat_result | None:
        """To the bucket (None) or the warm tier (the published file's attributes; None if
        the file was unlinked meanwhile)."""
        core = self.core
        cold = self.cold
        await cold.settle_replaced(inode, data)
        if data.upload is None:
            # A file past the threshold whose upload could not start while it was written
            # (or was dropped by the bucket) must not end up on the warm tier: start it now.
            data.route_after = 0.0
            await cold.route(inode, data)
            if data.route_after:
                raise err(errno.EIO)
        if (data.upload is not None and data.upload.cut == 0 and not data.upload.punched
                and not cold.placement.belongs_cold(cold.rule(inode, data), data.size)):
            # Past the threshold once, small in the end (truncated), and none of it has
            # left staging: no object for it, it goes to the warm tier from staging. (An
            # upload resumed by recovery starts with nothing cut, but its recorded parts
            # may be punched out of staging: they exist in the upload alone.)
            await cold.drop_upload(data)
        with core.inodes.replacing(inode):
            if data.upload is not None:
                await cold.publish(inode, data)
                return None
            st = await self.warm.publish(inode, data, rel, (data.atime_ns, data.mtime_ns))
            if st is None:  # unlinked meanwhile
                if data.linked_elsewhere:
                    raise LostItsName()
                data.to(DataState.STAGED if data.staged else DataState.CLEAN)
                return None
            core.inodes.rekey(inode, st)
        return st


def _same_file(lstat: Callable[[bytes], os.stat_result], rel: bytes,
               paths: dict[str, bytes]) -> list[str]:
    """Of ``paths`` (staging id -> path), those naming the file at ``rel`` while it has other
    names (blocking)."""
    try:
        st = lstat(rel)
    except (FileNotFoundError, NotADirectoryError):
        return []  # (gone: the publish finds out; another error fails it, tried again)
    # Only a regular file is written in place and so keeps its other names (a stub linked on
    # the warm tree is replaced by a rename, at ``rel`` alone).
    if st.st_nlink < 2 or not stat.S_ISREG(st.st_mode):
        return []
    out = []
    for sid, path in paths.items():
        try:
            other = lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if identity(other) == identity(st):
            out.append(sid)
    return out
