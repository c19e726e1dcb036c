"""Eviction policies for the hot tier's block cache: which cached block goes when space runs out.

A policy only orders keys; the cache owns the bytes, the files and the watermarks. Policies are
weighted (blocks differ in size: a file's last block is short) and pluggable by name.

``tinylfu`` (the default) is a window + segmented-LRU cache with a frequency-based admission
filter, after Einziger, Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
Policy" (2017). A block that has just been fetched waits in a small window; when it leaves the
window it enters the main cache only if it has been asked for more often than the block it
would push out. That is what makes it scan-resistant: a one-pass scan never beats the blocks a
job keeps coming back to, and an epoch over a dataset larger than the cache keeps a stable part
of it cached instead of flushing everything as plain LRU does (LRU's hit ratio on a cyclic
pattern one block larger than the cache is zero). Frequencies are exact counts in a dict that
is halved periodically, so old popularity fades; the number of keys it remembers is bounded
by the aging period.

``lru`` is kept for comparison (tests and ``bench/cache.py``).
"""

from __future__ import annotations

import abc
import collections
from collections.abc import Hashable, Iterator

#: Segment codes, persisted in the index so a remount restores each block where it was.
WINDOW, PROBATION, PROTECTED = 0, 1, 2


class Policy(abc.ABC):
    """Orders cached keys for eviction. Every method is O(1) (amortised)."""

    name: str

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    @abc.abstractmethod
    def record(self, key: Hashable) -> None:
        """Note an access to ``key``, cached or not (frequency history for admission)."""

    @abc.abstractmethod
    def hit(self, key: Hashable) -> None:
        """A cached key was used."""

    @abc.abstractmethod
    def insert(self, key: Hashable, size: int, segment: int = WINDOW) -> None:
        """A key entered the cache (``segment`` restores a persisted position)."""

    @abc.abstractmethod
    def remove(self, key: Hashable) -> None:
        """A key left the cache for another reason than eviction (invalidated, pinned)."""

    @abc.abstractmethod
    def evict(self) -> Hashable | None:
        """Remove and return the key to evict next; None when nothing is left."""

    @abc.abstractmethod
    def __contains__(self, key: Hashable) -> bool: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def segment(self, key: Hashable) -> int:
        """Where a key sits, to persist with it."""

    def frequency(self, key: Hashable) -> int:
        return 0

    def set_frequency(self, key: Hashable, count: int) -> None:
        """Restore a persisted frequency (policies without one ignore it)."""


class LRU(Policy):
    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._order: collections.OrderedDict[Hashable, int] = collections.OrderedDict()

    def record(self, key: Hashable) -> None:
        pass

    def hit(self, key: Hashable) -> None:
        self._order.move_to_end(key)

    def insert(self, key: Hashable, size: int, segment: int = WINDOW) -> None:
        self._order[key] = size
        self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def evict(self) -> Hashable | None:
        if not self._order:
            return None
        return self._order.popitem(last=False)[0]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._order

    def __len__(self) -> int:
        return len(self._order)

    def segment(self, key: Hashable) -> int:
        return PROBATION


class _Segment:
    """An LRU list with a byte total."""

    def __init__(self) -> None:
        self.order: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self.bytes = 0

    def add(self, key: Hashable, size: int) -> None:
        self.order[key] = size
        self.bytes += size

    def pop(self, key: Hashable) -> int:
        size = self.order.pop(key)
        self.bytes -= size
        return size

    def oldest(self) -> Hashable:
        return next(iter(self.order))

    def __contains__(self, key: Hashable) -> bool:
        return key in self.order

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.order)


class TinyLFU(Policy):
    name = "tinylfu"

    #: Shares of the capacity: the admission window, and the protected part of the main cache.
    WINDOW_SHARE = 0.01
    PROTECTED_SHARE = 0.8
    #: Frequencies are halved after this many accesses per cached key.
    AGING = 10

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._window = _Segment()
        self._probation = _Segment()
        self._protected = _Segment()
        self._freq: dict[Hashable, int] = {}
        self._samples = 0

    # -- frequency history --------------------------------------------------------------

    def record(self, key: Hashable) -> None:
        self._freq[key] = self._freq.get(key, 0) + 1
        self._samples += 1
        if self._samples >= self.AGING * max(64, len(self)):
            self._age()

    def _age(self) -> None:
        self._freq = {k: c // 2 for k, c in self._freq.items() if c > 1}
        self._samples //= 2

    def frequency(self, key: Hashable) -> int:
        return self._freq.get(key, 0)

    def set_frequency(self, key: Hashable, count: int) -> None:
        if count > 0:
            self._freq[key] = count

    # -- placement ----------------------------------------------------------------------

    def _where(self, key: Hashable) -> _Segment | None:
        for seg in (self._window, self._probation, self._protected):
            if key in seg:
                return seg
        return None

    def hit(self, key: Hashable) -> None:
        seg = self._where(key)
        if seg is None:
            return
        if seg is self._probation:  # used again: promote, demoting protected overflow
            self._protected.add(key, self._probation.pop(key))
            limit = self.PROTECTED_SHARE * self._main_capacity()
            while self._protected.bytes > limit and len(self._protected.order) > 1:
                old = self._protected.oldest()
                self._probation.add(old, self._protected.pop(old))
        else:
            seg.order.move_to_end(key)

    def insert(self, key: Hashable, size: int, segment: int = WINDOW) -> None:
        self.remove(key)
        target = {WINDOW: self._window, PROBATION: self._probation,
                  PROTECTED: self._protected}.get(segment, self._window)
        target.add(key, size)

    def remove(self, key: Hashable) -> None:
        seg = self._where(key)
        if seg is not None:
            seg.pop(key)

    def _main_capacity(self) -> float:
        return self.capacity * (1 - self.WINDOW_SHARE)

    def evict(self) -> Hashable | None:
        # Blocks leaving the window either enter the main cache (room left, or more popular
        # than its victim) or are the ones evicted.
        while self._window.order:
            if self._window.bytes <= self.capacity * self.WINDOW_SHARE and \
                    (self._probation.order or self._protected.order):
                break
            candidate = self._window.oldest()
            size = self._window.order[candidate]
            main_bytes = self._probation.bytes + self._protected.bytes
            if main_bytes + size <= self._main_capacity():
                self._probation.add(candidate, self._window.pop(candidate))
                continue
            victim = self._main_victim()
            if victim is None or self.frequency(candidate) <= self.frequency(victim):
                self._window.pop(candidate)
                return candidate
            self._evict_from_main(victim)
            self._probation.add(candidate, self._window.pop(candidate))
            return victim
        victim = self._main_victim()
        if victim is None:
            return None
        self._evict_from_main(victim)
        return victim

    def _main_victim(self) -> Hashable | None:
        if self._probation.order:
            return self._probation.oldest()
        if self._protected.order:
            return self._protected.oldest()
        return None

    def _evict_from_main(self, key: Hashable) -> None:
        (self._probation if key in self._probation else self._protected).pop(key)

    def __contains__(self, key: Hashable) -> bool:
        return self._where(key) is not None

    def __len__(self) -> int:
        return len(self._window.order) + len(self._probation.order) + len(self._protected.order)

    def segment(self, key: Hashable) -> int:
        seg = self._where(key)
        if seg is self._protected:
            return PROTECTED
        if seg is self._probation:
            return PROBATION
        return WINDOW


POLICIES: dict[str, type[Policy]] = {LRU.name: LRU, TinyLFU.name: TinyLFU}


def make_policy(name: str, capacity: int) -> Policy:
    return POLICIES[name](capacity)
