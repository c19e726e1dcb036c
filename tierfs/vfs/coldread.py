"""Reading a cold file in large blocks: one ranged GET per block, not per FUSE request.

The kernel sends reads of at most 1 MiB; a GET per request would pay the store's latency (and
moto's whole-object reads) for every MiB. A ``BlockReader`` belongs to one open file: it fetches
aligned blocks, shares one GET between concurrent readers of the same block (single flight),
fetches the next block ahead of a sequential reader, and keeps at most ``KEEP`` blocks in
memory. It is an in-memory stand-in until the hot tier's block cache exists.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

#: Blocks kept per open file: the one being read and the one fetched ahead.
KEEP = 2


class BlockReader:
    def __init__(self, fetch: Callable[[int, int], Awaitable[bytes]], size: int,
                 block_size: int, nursery: trio.Nursery | None) -> None:
        self._fetch = fetch
        self.size = size
        self.block_size = block_size
        self._nursery = nursery
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._pending: dict[int, trio.Event] = {}
        self._last_block = -1

    async def read(self, offset: int, size: int) -> bytes:
        parts = []
        end = min(offset + size, self.size)
        block = offset // self.block_size
        while offset < end:
            block = offset // self.block_size
            data = await self._get(block)
            start = offset - block * self.block_size
            chunk = data[start:start + (end - offset)]
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
        sequential = block in (self._last_block, self._last_block + 1)
        self._last_block = block
        ahead = block + 1
        if (sequential and self._nursery is not None and ahead * self.block_size < self.size
                and ahead not in self._blocks and ahead not in self._pending):
            self._nursery.start_soon(self._prefetch, ahead)
        return b"".join(parts)

    async def _prefetch(self, block: int) -> None:
        try:
            await self._get(block)
        except OSError:
            pass  # the reader that needs this block will fetch it again and see the error

    async def _get(self, block: int) -> bytes:
        while True:
            if block in self._blocks:
                self._blocks.move_to_end(block)
                return self._blocks[block]
            event = self._pending.get(block)
            if event is None:
                break
            await event.wait()  # someone is fetching it: share that GET
            if block not in self._blocks:
                break  # that fetch failed: try ourselves, and see the error
        event = self._pending[block] = trio.Event()
        try:
            start = block * self.block_size
            data = await self._fetch(start, min(self.block_size, self.size - start))
            self._blocks[block] = data
            while len(self._blocks) > KEEP:
                self._blocks.popitem(last=False)
            return data
        finally:
            del self._pending[block]
            event.set()
