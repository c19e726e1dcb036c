"""Staging: a file's data on the hot tier while it is written, from the first write (or
truncate) until the state is retired.

The first change copies the file's current data into a new staging file (``copy_to_new``
for a warm file, holes kept; a ranged download for a cold one; nothing for a file just
created or truncated to zero) and journals where it belongs. ``retire`` ends an open file's
state: what is published goes, what is not stays staged and journaled for the next close,
fsync or mount.
"""

from __future__ import annotations

import errno
import logging
import os

import trio

from tierfs.core.attrs import err
from tierfs.core.context import Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import DataState, OpenFile
from tierfs.stubs import Stub
from tierfs.tiers.warm import copy_to_new
from tierfs.transfer.streaming import give_back_all
from tierfs.write.journal import Entry, Journal
from tierfs.write.warm import drop_mirror

log = logging.getLogger(__name__)


class Staging:
    def __init__(self, core: Core, journal: Journal) -> None:
        self.core = core
        self.journal = journal

    async def stage(self, inode: Inode, data: OpenFile, keep: int | None = None,
                    first: tuple[bytes, int] | None = None) -> int | None:
        """Make sure the file's data is in a staging file; copy at most ``keep`` bytes of the
        warm data into it (all of it when None). ``first``, a write (bytes, offset) of the
        caller's: done with the staging file's creation if there is nothing to copy; returns
        the bytes it wrote, None if it was not done. Caller holds ``data.lock``."""
        if data.staged:
            return None
        core = self.core
        written = None
        if first is not None and data.created:
            sid, fd, written = await core.hot.run(core.hot.new_staging_with, *first)
        else:
            sid, fd = await core.hot.run(core.hot.new_staging)
        try:
            size = 0
            if data.created:  # created empty by this open: nothing to copy
                pass
            elif data.stub is not None:
                size = data.stub.size if keep is None else min(data.stub.size, keep)
                if size >= core.config.large_file_threshold:
                    raise err(errno.EOPNOTSUPP)  # would be re-uploaded whole: not supported
                data.atime_ns = data.mtime_ns = data.stub.mtime_ns
                await self._download(data.stub, fd, size)
                data.replaces_object = data.stub.key
            elif data.warm_fd is not None:
                st = await core.warm.run(os.fstat, data.warm_fd)
                data.atime_ns, data.mtime_ns = st.st_atime_ns, st.st_mtime_ns
                size = st.st_size if keep is None else min(st.st_size, keep)
                if size:
                    await core.warm.run(copy_to_new, data.warm_fd, fd, size)
        except BaseException:
            os.close(fd)
            await core.hot.run(core.hot.remove_staging, sid)
            raise
        data.staging_id, data.staging_fd, data.size = sid, fd, size
        data.written = size
        data.flushed_ahead = 0
        data.to(DataState.STAGED)
        rel = core.rel_or_none(inode)
        if rel is not None:
            self.journal.record(sid, Entry(rel, size=size, atime_ns=data.atime_ns,
                                           mtime_ns=data.mtime_ns,
                                           replaces=data.replaces_object))
        return written

    async def _download(self, stub: Stub, fd: int, size: int) -> None:
        """Copy the first ``size`` bytes of a stub's object into a staging file."""
        chunk = self.core.config.part_size
        for start in range(0, size, chunk):
            block = await self.core.get_object(stub, start, min(chunk, size - start))
            await self.core.hot.run(os.pwrite, fd, block, start)

    async def make_room(self, nbytes: int) -> None:
        """A write into staging found the hot disk full: the parts of streaming files already
        uploaded leave staging (``streaming.give_back_all``), cached blocks can go (other
        staging and pins cannot), and staging files whose release is under way soon will."""
        if await give_back_all(self.core.hot, nbytes) >= nbytes:
            return
        for going in list(self.core.staging_going):
            await going.wait()
        await self.core.cache.free(4 * nbytes + self.core.config.block_size)

    async def retire(self, inode: Inode, data: OpenFile) -> None:
        """Drop the open-file state after the last holder; staging goes unless still needed
        (data not yet home, for a later try)."""
        inode.data = None
        going = trio.Event()  # before any await: a write finding the disk full waits for it
        self.core.staging_going.add(going)
        try:
            await self._free(inode, data)
        finally:
            self.core.staging_going.discard(going)
            going.set()

    async def _free(self, inode: Inode, data: OpenFile) -> None:
        core = self.core
        keep = data.dirty and bool(inode.links)
        data.to(DataState.RETIRED)
        if data.upload is not None:
            if not inode.links:
                await data.upload.abort()  # unlinked: nobody will want the object
            else:
                log.error("upload %s of %s left unfinished for recovery", data.upload.upload_id,
                          data.upload.key)
        if not inode.links and inode.stub is not None:
            await core.delete_object(inode.stub.key)  # unlinked while open
        await drop_mirror(core.warm, data)  # before staging_fd closes: a copy may read it
        sid = data.staging_id
        remove = None if keep else sid

        def close() -> None:
            data.close_fds()
            if remove is not None:
                core.hot.remove_staging(remove)

        await core.hot.run(close)
        if remove is not None:
            self.journal.drop(remove)
