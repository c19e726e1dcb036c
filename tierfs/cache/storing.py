"""Fetched blocks on their way to the hot tier, gathered so that one hot-tier call writes
several.

A first epoch over an image folder fetches a small block every few milliseconds. Written one
hot-tier call each, every block cost a worker-thread hand-off (two thread switches, a wake-up of
the event loop) on top of the write: with warm blocks cached the daemon spent 1.47 ms of CPU
per file against 1.00 ms without, on a machine where the readers wait for that CPU
(docs/performance.md). Here a block waits up to ``GATHER`` seconds for others, or goes at once
when a block's worth of bytes waits, and one call writes them all.

Waiting blocks stay in memory, held here: at most ``max_bytes`` and ``MAX_BLOCKS`` of them; a
block beyond that is not offered a place, and its reader is served without caching it, as
before. ``settle`` writes what waits now (unmount commits the index after it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from tierfs.cache.flight import Block

log = logging.getLogger(__name__)

#: How long a fetched block waits for others to be written with it.
GATHER = 0.05
#: Blocks waiting or being written, at most.
MAX_BLOCKS = 256

Write = Callable[[list[tuple[bytes, Block]]], Awaitable[None]]


class StoreQueue:
    """Blocks waiting to be written (``offer``), written a batch at a time by one task."""

    def __init__(self, write: Write, max_bytes: int, go_bytes: int) -> None:
        self._write = write
        self.max_bytes = max_bytes
        self._go_bytes = go_bytes
        self._waiting: dict[bytes, Block] = {}
        self._waiting_bytes = 0
        #: Bytes waiting or being written: what ``max_bytes`` bounds.
        self.bytes = 0
        self._count = 0
        self._arrived = trio.Event()
        self._go = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._nursery: trio.Nursery | None = None

    def bind(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._run)

    def offer(self, key: bytes, data: Block) -> bool:
        """Take a block to write, if there is room to hold it (False: not taken)."""
        size = len(data)
        if (self._nursery is None or self._count >= MAX_BLOCKS
                or self.bytes + size > self.max_bytes):
            return False
        self._waiting[key] = data
        self._waiting_bytes += size
        self.bytes += size
        self._count += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._arrived.set()
        if self._waiting_bytes >= self._go_bytes:
            self._go.set()
        return True

    def withdraw(self, key: bytes) -> bool:
        """Take back a block still waiting (a ``fill`` stores it itself); False if it is
        not waiting here (being written, or never offered)."""
        data = self._waiting.pop(key, None)
        if data is None:
            return False
        self._waiting_bytes -= len(data)
        self._left(len(data), 1)
        return True

    async def settle(self) -> None:
        """Write what waits now, and return once it is written."""
        self._go.set()
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            with trio.move_on_after(GATHER):
                await self._go.wait()
            batch = list(self._waiting.items())
            self._waiting.clear()
            self._waiting_bytes = 0
            self._arrived = trio.Event()
            self._go = trio.Event()
            try:
                await self._write(batch)
            except Exception:  # a bug: that batch is not cached, the next ones still are
                log.exception("writing %d fetched blocks to the hot tier failed", len(batch))
            finally:
                self._left(sum(len(data) for _, data in batch), len(batch))
                del batch

    def _left(self, nbytes: int, count: int) -> None:
        self.bytes -= nbytes
        self._count -= count
        if not self._count:
            self._idle.set()
