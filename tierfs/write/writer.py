"""Changes to a file's data: writes and truncation, into staging, and what they set going
(streaming to the bucket past the threshold, copying ahead to the warm tier in sync mode).

Every change holds the file's lock, stages the file if it is not yet, and leaves the open
file DIRTY (or STREAMING): ``OpenFile.changed``.
"""

from __future__ import annotations

import os
import time

import trio

from tierfs.cache.store import is_no_space
from tierfs.core.context import Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import OpenFile
from tierfs.tiers.hot import INLINE_WRITE
from tierfs.transfer.mirror import write_and_start_writeback
from tierfs.write.cold import ColdPublisher
from tierfs.write.journal import Journal
from tierfs.write.staging import Staging
from tierfs.write.warm import WarmPublisher


class Writer:
    def __init__(self, core: Core, journal: Journal, staging: Staging, warm: WarmPublisher,
                 cold: ColdPublisher) -> None:
        self.core = core
        self.journal = journal
        self.staging = staging
        self.warm = warm
        self.cold = cold

    async def write(self, inode: Inode, data: OpenFile, offset: int, buf: bytes,
                    append: bool = False, direct: bool = False) -> int:
        async with data.lock:
            # A file created empty by this open has no data to copy in: its first write goes
            # with the staging file's creation (it lands at 0 with O_APPEND, the size being 0).
            done = await self.staging.stage(inode, data, first=(buf, 0 if append else offset))
            if append:
                offset = data.size
            # Parts already uploaded go up again; EIO if one has left the hot tier.
            await self.cold.changing(inode, data, offset, offset + len(buf))
            taken = await self.journal.reopened(data, offset)
            if done is not None:
                written = done
            else:
                try:
                    written = await self._pwrite(data, offset, buf)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await self.journal.unreopened(data, taken)
                    raise
            data.size = max(data.size, offset + written)
            grew = offset <= data.written < offset + written
            if grew:
                data.written = offset + written
            data.mtime_ns = time.time_ns()
            data.changed()
            if direct:
                data.direct_written = True
            if data.mirror is not None:
                data.mirror.changed(offset)
            await self.cold.route(inode, data, writing=True)
            if grew:
                # Only a file growing in order is copied ahead: for rewrites in place (a
                # database's pages) each copy would be undone by the next write.
                self.warm.copy_ahead(inode, data)
        return written

    async def _pwrite(self, data: OpenFile, offset: int, buf: bytes) -> int:
        """Write into staging; a hot disk found full makes room once (``make_room``)."""
        core = self.core
        assert data.staging_fd is not None
        try:
            ahead = self.warm.flush_ahead_from(data, offset, len(buf))
            if ahead is None and len(buf) <= INLINE_WRITE:
                return os.pwrite(data.staging_fd, buf, offset)  # (local disk)
            if ahead is None:
                return await core.hot.run(os.pwrite, data.staging_fd, buf, offset)
            written = await core.hot.run(write_and_start_writeback, data.staging_fd, buf,
                                         offset, ahead)
            data.flushed_ahead = offset + written
            return written
        except OSError as e:
            if not is_no_space(e):
                raise
            await self.staging.make_room(len(buf))
            return await core.hot.run(os.pwrite, data.staging_fd, buf, offset)

    async def truncate(self, inode: Inode, data: OpenFile, size: int) -> None:
        """Cut or extend a file's staged data (staged first if need be). Caller holds
        ``data.lock``."""
        await self.cold.truncating(inode, data, size)  # as for a write
        await self.staging.stage(inode, data, keep=size)
        taken = await self.journal.reopened(data, size, cutting=True)
        assert data.staging_fd is not None
        try:
            await self.journal.cut(data, size)
            taken = self.journal.as_now(data, taken)
            await self.core.hot.run(os.ftruncate, data.staging_fd, size)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.journal.unreopened(data, taken)
            raise
        data.size = size
        data.written = min(data.written, size)
        data.mtime_ns = time.time_ns()
        data.changed()
        if data.mirror is not None:
            data.mirror.changed(size)
        await self.cold.route(inode, data, writing=True)  # a size past the threshold: at once
