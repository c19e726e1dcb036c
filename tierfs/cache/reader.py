"""Reads of one open file through the block cache, with read-ahead per stream.

The kernel sends reads of at most 1 MiB; a GET per request would pay the store's latency for
every MiB. A ``CachedReader`` serves requests from whole blocks (``BlockCache.get``: memory,
hot tier, or one shared fetch from the source) and keeps the blocks ahead of each sequential
stream being fetched, in the filesystem's nursery. In-flight read-ahead is bounded for the whole
mount (``Prefetch``), so memory stays bounded however many files are open.

Read-ahead: the kernel's own read-ahead is per open file and capped by the mount's
read_ahead setting; to keep a high-latency store busy, tierfs fetches whole blocks further
ahead. Streams are tracked per open handle, several per handle, so two processes reading one
file (through one shared descriptor or two) each look sequential: a read that continues where
one of the handle's streams stopped extends that stream and widens its window, any other read
starts a new one (the oldest is forgotten).

Accounting: a read is a hit when its block came from the hot tier, a miss when it had to come
from the source, counted once per block per handle. A block this reader fetched ahead counts
as coming from the source when the reader gets to it.
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import logging

import trio

from tierfs.cache.blocks import BlockCache
from tierfs.cache.entries import Source, block_key
from tierfs.cache.counters import Counters

log = logging.getLogger(__name__)

#: Per-handle memory of blocks counted and blocks fetched ahead (small, bounded).
_REMEMBER = 64
#: Blocks already on the hot tier are read at most this far ahead: a local disk answers in
#: milliseconds, and each block ahead holds a buffer that the blocks behind could reuse.
HOT_AHEAD = 4

#: Streams remembered per handle.
STREAMS = 4


@dataclasses.dataclass
class Stream:
    #: The last block this stream read.
    block: int
    #: Blocks to keep fetched ahead of it.
    window: int


class ReadAhead:
    def __init__(self, max_window: int) -> None:
        self.max_window = max(1, max_window)
        self._streams: list[Stream] = []

    def advance(self, first: int, last: int) -> range:
        """A read covered blocks ``first..last``: the blocks to have fetched ahead of it."""
        for i, stream in enumerate(self._streams):
            if stream.block <= first <= stream.block + 1:
                if last > stream.block:  # moved on to a new block: widen the window
                    stream.window = min(max(1, stream.window * 2), self.max_window)
                stream.block = max(stream.block, last)
                self._streams.append(self._streams.pop(i))  # most recently used last
                return range(last + 1, last + 1 + stream.window)
        self._streams.append(Stream(last, 1 if first == 0 else 0))
        del self._streams[:-STREAMS]
        # A read from the very start of a file is a sequential reader until shown otherwise.
        return range(last + 1, last + 1 + self._streams[-1].window)


class Prefetch:
    """A mount-wide bound on blocks being fetched ahead of readers, or fetched and waiting
    for their reader."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.running = 0


class CachedReader:
    def __init__(self, cache: BlockCache, source: Source, counters: Counters,
                 nursery: trio.Nursery | None, prefetch: Prefetch, max_window: int) -> None:
        self.cache = cache
        self.source = source
        self.counters = counters
        self._nursery = nursery
        self._prefetch = prefetch
        self._max_window = max_window
        self._streams: dict[int, ReadAhead] = {}
        #: Per handle: the blocks it has used recently and where each came from.
        self._used: dict[int, collections.OrderedDict[int, str]] = {}
        self._ahead: collections.OrderedDict[int, str] = collections.OrderedDict()
        #: What the reader was made for (a stub, a warm identity): the file system makes a
        #: new reader when that changes.
        self.made_for: object = None

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        """The bytes at ``offset``; a request inside one block is a view of that block, not
        a copy (pyfuse3 replies from any buffer)."""
        end = min(offset + size, self.source.size)
        if offset >= end:
            return b""
        bs = self.cache.block_size
        first, last = offset // bs, (end - 1) // bs
        streams = self._streams.get(fh)
        if streams is None:
            streams = self._streams[fh] = ReadAhead(self._max_window)
        self._fetch_ahead(fh, streams.advance(first, last))
        parts = []
        for block in range(first, last + 1):
            data, origin = await self.cache.get(self.source, block)
            start = max(offset, block * bs) - block * bs
            stop = min(end, (block + 1) * bs) - block * bs
            parts.append(memoryview(data)[start:stop])
            self._account(fh, block, origin, stop - start)
            self.cache.served(block_key(self.source.id, block), stop - start)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _account(self, fh: int, block: int, origin: str, nbytes: int) -> None:
        """Count bytes by where their block came from when this handle first used it: a
        block read in several requests is one hit or one miss, whatever the later requests
        find in memory."""
        used = self._used.get(fh)
        if used is None:
            used = self._used[fh] = collections.OrderedDict()
        first = used.get(block)
        if first is None:
            if origin == "hot" and block in self._ahead:
                origin = self._ahead.pop(block)  # fetched ahead for this reader
            elif origin == "hot" and self.cache.ahead:
                origin = self.cache.ahead.pop(block_key(self.source.id, block), origin)
            used[block] = origin
            while len(used) > _REMEMBER:
                used.popitem(last=False)
            self.counters.add("hits" if origin == "hot" else "misses")
            self.cache.accessed(block_key(self.source.id, block))
        else:
            origin = first
        self.counters.add("bytes_" + origin, nbytes)

    def _fetch_ahead(self, fh: int, blocks: range) -> None:
        if self._nursery is None:
            return
        nblocks = self.source.blocks(self.cache.block_size)
        used: collections.abc.Container[int] = self._used.get(fh, ())
        for ahead, block in enumerate(blocks):
            if (block >= nblocks
                    or self._prefetch.running + self.cache.unused >= self._prefetch.limit):
                return  # blocks fetched ahead and not yet read count too: memory is bounded
            key = block_key(self.source.id, block)
            if (self.cache.loaded(key) or block in used
                    or (ahead >= HOT_AHEAD and self.cache.on_hot_tier(key))):
                continue  # the kernel's requests may come out of order: not one read again
            self._prefetch.running += 1
            self._nursery.start_soon(self._fetch_one, block)

    async def _fetch_one(self, block: int) -> None:
        try:
            _, origin = await self.cache.get(self.source, block)
            if origin != "hot":
                self._ahead[block] = origin
                while len(self._ahead) > _REMEMBER:
                    self._ahead.popitem(last=False)
        except OSError as e:
            log.debug("read-ahead of block %d failed (the reader will retry): %s", block, e)
        finally:
            self._prefetch.running -= 1

    def closed(self, fh: int) -> None:
        self._streams.pop(fh, None)
        self._used.pop(fh, None)
