"""Reused buffers for whole blocks read from the hot tier.

Reading a block into new memory costs about as much again as the read: every page of a new
allocation is faulted in and zeroed, and given back when the block leaves memory (on a
2-core machine where the FUSE replies and the reader need that CPU too).

A buffer is an anonymous mapping (page-aligned), populated when it is made,
in the worker thread that makes it. It comes back to the pool when its block leaves memory, but
only when nothing else refers to it: a reader may still hold a view of the block (a reply built
from two blocks, a block being written out), and reusing the buffer then would change bytes
under that reader. CPython counts references, and every view of a buffer holds one, so a buffer
that only the caller refers to is provably free.
"""

from __future__ import annotations

import mmap
import sys

#: References to a buffer inside ``give`` when nothing else holds it: the caller's name, the
#: parameter, and ``sys.getrefcount``'s own argument (tests/test_buffers.py checks this).
_ONLY_CALLER = 3


class BufferPool:
    """Free buffers of exactly ``size`` bytes, at most ``keep`` of them. Taken in worker
    threads, given back on the event loop: list appends and pops are atomic."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        """A free buffer or a new one (blocking: populating a new one faults its pages in)."""
        try:
            return self._free.pop()
        except IndexError:
            return self._new()

    def _new(self) -> mmap.mmap:
        return mmap.mmap(-1, self.size,
                         flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)

    def fill(self, count: int) -> None:
        """Make free buffers up to ``count`` (at most ``keep``; blocking), so that the first
        reads find them."""
        while len(self._free) < min(count, self.keep):
            self._free.append(self._new())

    def give(self, buf: object) -> bool:
        """Keep ``buf`` for reuse if it is one of ours and nothing else refers to it. The
        caller must hold it under one name only (a second would read as a reader's view)."""
        if (type(buf) is not mmap.mmap or len(buf) != self.size
                or len(self._free) >= self.keep or sys.getrefcount(buf) > _ONLY_CALLER):
            return False
        self._free.append(buf)
        return True

    @property
    def free(self) -> int:
        return len(self._free)
