"""Reads of an open file: from staging while it is staged (a streaming file's parts too, until
they are punched out for room: ``transfer.streaming``), else through the block cache
(always for a cold file, for a warm one when warm caching is on), else from the warm file.

A file's blocks are named by its *source*: a cold file by its object and ETag, a warm file by
its version (``openfile.warm_id``), so a changed file never gets another version's blocks.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable

from tierfs.cache.entries import Source, cold_source_id, warm_source_id
from tierfs.cache.reader import CachedReader, Prefetch
from tierfs.core.attrs import err
from tierfs.core.context import Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import OpenFile, WarmId
from tierfs.stubs import Stub
from tierfs.write.publish import Publisher

log = logging.getLogger(__name__)


class Reads:
    def __init__(self, core: Core, publisher: Publisher) -> None:
        self.core = core
        self.publisher = publisher
        config = core.config
        # Read-ahead may fill at most half the memory pool, so blocks fetched ahead are still
        # there when their reader arrives.
        self._prefetch = Prefetch(config.read_memory // config.block_size // 2)
        self._window = max(1, config.prefetch_limit // config.block_size)

    async def read(self, fh: int, inode: Inode, data: OpenFile, offset: int, size: int
                   ) -> bytes | memoryview:
        core = self.core
        while True:
            if data.upload is not None and data.upload.unreadable(offset, size):
                if data.writers:
                    log.warning("read of a range of %s already freed from the hot tier: "
                                "readable after close", data.upload.key)
                    raise err(errno.EIO)
                # Closed, its upload still going (write-back): the bytes are readable once
                # the object is complete, so finish it now rather than fail the read.
                await self.publisher.publish(inode, data)
            if not data.staged:
                break
            sid = data.staging_id
            out = await core.hot.run(os.pread, data.staging_fd, size, offset)
            if data.staging_id != sid or (data.upload is not None
                                          and data.upload.unreadable(offset, size)):
                # Published, or punched out for room, while the thread read: the range may
                # read as zeros or the descriptor have been closed and reused. Read again.
                continue
            core.counters.add("bytes_staged", len(out))
            return out
        if data.warm_deferred:
            # Opened from memory: the warm file is opened now, with this read in the same call
            # when the block cache is not in the way.
            out = await core.open_warm(inode, data, None if core.cache_warm else (offset, size))
            if out is not None:
                core.counters.add("bytes_warm", len(out))
                return out
        reader = self._reader(data)
        if reader is not None:
            return await reader.read(fh, offset, size)
        if data.warm_fd is None:
            return b""
        out = await core.warm.run(os.pread, data.warm_fd, size, offset)
        core.counters.add("bytes_warm", len(out))
        return out

    def _reader(self, data: OpenFile) -> CachedReader | None:
        """The block-cache reader of an unstaged file: always for a cold file, for a warm one
        when warm caching is on."""
        core = self.core
        reader = data.reader
        if data.stub is not None:
            if reader is not None and reader.made_for is data.stub:
                return reader
            source = self.cold_source(data.stub)
            made_for: object = data.stub
        elif core.cache_warm and data.warm_fd is not None and data.warm_id is not None:
            if reader is not None and reader.made_for is data.warm_id:
                return reader
            fd = data.warm_fd
            source = self.warm_source(
                data.warm_id, lambda start, length: core.warm.run(os.pread, fd, length, start))
            made_for = data.warm_id
        else:
            return None
        data.reader = CachedReader(core.cache, source, core.counters, core.nursery,
                                   self._prefetch, self._window)
        data.reader.made_for = made_for
        return data.reader

    def cold_source(self, stub: Stub) -> Source:
        """A cold file's blocks, named by object and ETag."""
        return Source(cold_source_id(str(self.core.config.bucket), stub.key, stub.etag),
                      stub.size, "cold",
                      lambda start, length: self.core.get_object(stub, start, length))

    def warm_source(self, version: WarmId, fetch: Callable[[int, int], Awaitable[bytes]]
                    ) -> Source:
        """A warm file's blocks, named by its version (``openfile.warm_id``)."""
        ino, size, mtime_ns, ctime_ns = version
        return Source(warm_source_id(str(self.core.config.warm), ino, size, mtime_ns,
                                     ctime_ns), size, "warm", fetch)
