"""A prefetch plan's order and the reader's progress along it (``cache.plan``): which block
comes at which position, the next use of each, and which blocks the reader is done with.
No I/O and no trio: the logic tests drive it directly."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from tierfs.cache.entries import Source, block_key


@dataclasses.dataclass(frozen=True)
class Step:
    """One block of the plan."""

    source: Source
    block: int
    size: int
    key: bytes
    #: The file it belongs to, for status and logs.
    path: str


class Plan:
    """The order and the reader's progress along it (no I/O: the logic tests drive it)."""

    def __init__(self, lag: int, stray_limit: int) -> None:
        self.steps: list[Step] = []
        #: Every position of each key, ascending; and for each key, the index in that list
        #: of its next use not yet read.
        self.where: dict[bytes, list[int]] = {}
        self._next: dict[bytes, int] = {}
        #: One past the furthest position read.
        self.cursor = 0
        #: Positions below this are settled: read, or passed by the reader.
        self._swept = 0
        self.lag = max(1, lag)
        self.stray_limit = max(1, stray_limit)
        self.strays = 0
        #: No more steps will be added.
        self.complete = False

    def add(self, source: Source, first: int, last: int, block_size: int, path: str
            ) -> list[bytes]:
        """Append blocks ``first..last`` of ``source``; returns the keys appended."""
        keys = []
        for block in range(first, last + 1):
            start = block * block_size
            size = min(block_size, source.size - start)
            if size <= 0:
                break
            key = block_key(source.id, block)
            self.where.setdefault(key, []).append(len(self.steps))
            self._next.setdefault(key, 0)
            self.steps.append(Step(source, block, size, key, path))
            keys.append(key)
        return keys

    @property
    def low(self) -> int:
        """The earliest position still ahead of the reader."""
        return max(0, self.cursor - self.lag)

    @property
    def finished(self) -> bool:
        return self.complete and self.cursor >= len(self.steps)

    def next_use(self, key: Hashable) -> int | None:
        """The next position at which the reader will use ``key``; None if the plan will not
        (it never does, or it is done with it)."""
        positions = self.where.get(key)  # type: ignore[call-overload]
        if positions is None:
            return None
        i = self._next[key]  # type: ignore[index]
        low = self.low
        while i < len(positions) and positions[i] < low:
            i += 1
        self._next[key] = i  # type: ignore[index]
        return positions[i] if i < len(positions) else None

    def planned(self, key: Hashable) -> bool:
        return key in self.where

    def uses_left(self, key: Hashable) -> int:
        """How many more times the plan reads ``key``."""
        use = self.next_use(key)
        return 0 if use is None else len(self.where[key]) - self._next[key]  # type: ignore[index]

    def reads_again(self, key: bytes, position: int) -> bool:
        """Whether the plan reads ``key`` at a position after ``position`` (as far as it is
        known: a part added later may)."""
        positions = self.where.get(key)
        return positions is not None and positions[-1] > position

    def read(self, key: bytes) -> list[bytes]:
        """The reader used ``key``. Returns the keys the plan no longer needs because of it:
        the key itself (unless it is used again later) and blocks the cursor has passed
        without their being read."""
        use = self.next_use(key)
        if use is None or use >= self.cursor + self.lag:
            self.strays += 1
            return []
        self.strays = 0
        self._next[key] += 1
        self.cursor = max(self.cursor, use + 1)
        ended = [] if self.next_use(key) is not None else [key]
        low = self.low
        for position in range(self._swept, low):
            passed = self.steps[position].key
            i = self._next[passed]
            if i < len(self.where[passed]) and self.where[passed][i] == position:
                self._next[passed] = i + 1  # passed without being read
                if self.next_use(passed) is None:
                    ended.append(passed)
        self._swept = max(self._swept, low)
        return ended

    @property
    def strayed(self) -> bool:
        return self.strays >= self.stray_limit
