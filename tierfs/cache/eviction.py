"""Eviction policies for the hot tier's block cache: which cached block goes when space runs out.

A policy only orders keys and judges newcomers; the cache owns the bytes, the files and the
watermarks. Policies are weighted (blocks differ in size: a file's last block is short) and
pluggable by name. The cache asks, for a block it has fetched and wants to keep: which block
would go (``victim``), and is the newcomer worth it (``admits``)? A rejected block is served to
its reader and simply not kept, which also saves the hot disk a write.

``tinylfu`` (the default) is a segmented LRU (probation and protected segments) behind a
frequency-based admission filter, after Einziger, Friedman and Manes, "TinyLFU: A Highly
Efficient Cache Admission Policy" (2017): a block enters only if it has been asked for more
often than the block it would push out. That is what makes it scan-resistant: a one-pass scan
never beats the blocks a job keeps coming back to, and an epoch over a dataset larger than the
cache keeps a stable part of it cached instead of flushing everything as plain LRU does (LRU's
hit ratio on a cyclic pattern larger than the cache is zero). Ties favour what is cached.
Frequencies are exact counts in a dict, halved periodically so old popularity fades; the aging
period bounds how many keys it remembers.

``lru`` is kept for comparison (tests and ``bench/cache.py``): it admits everything.
"""

from __future__ import annotations

import abc
import collections
from collections.abc import Hashable, Iterator

#: Segment codes, persisted in the index so a remount restores each block where it was.
PROBATION, PROTECTED = 0, 1


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
    def insert(self, key: Hashable, size: int, segment: int = PROBATION) -> None:
        """A key entered the cache (``segment`` restores a persisted position)."""

    @abc.abstractmethod
    def remove(self, key: Hashable) -> None:
        """A key left the cache (evicted, invalidated or pinned)."""

    @abc.abstractmethod
    def victim(self) -> Hashable | None:
        """The key to evict next (still cached until ``remove``); None when empty."""

    def admits(self, candidate: Hashable, victim: Hashable) -> bool:
        """Whether ``candidate`` is worth evicting ``victim`` for."""
        return True

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

    def insert(self, key: Hashable, size: int, segment: int = PROBATION) -> None:
        self._order[key] = size
        self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def victim(self) -> Hashable | None:
        return next(iter(self._order), None)

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

    #: Share of the capacity kept for blocks used more than once since they were admitted.
    PROTECTED_SHARE = 0.8
    #: Frequencies are halved after this many accesses per cached key.
    AGING = 10

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
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

    def admits(self, candidate: Hashable, victim: Hashable) -> bool:
        return self.frequency(candidate) > self.frequency(victim)

    # -- placement ----------------------------------------------------------------------

    def hit(self, key: Hashable) -> None:
        if key in self._probation:  # used again: promote, demoting protected overflow
            self._protected.add(key, self._probation.pop(key))
            limit = self.PROTECTED_SHARE * self.capacity
            while self._protected.bytes > limit and len(self._protected.order) > 1:
                old = self._protected.oldest()
                self._probation.add(old, self._protected.pop(old))
        elif key in self._protected:
            self._protected.order.move_to_end(key)

    def insert(self, key: Hashable, size: int, segment: int = PROBATION) -> None:
        self.remove(key)
        (self._protected if segment == PROTECTED else self._probation).add(key, size)

    def remove(self, key: Hashable) -> None:
        if key in self._probation:
            self._probation.pop(key)
        elif key in self._protected:
            self._protected.pop(key)

    def victim(self) -> Hashable | None:
        if self._probation.order:
            return self._probation.oldest()
        if self._protected.order:
            return self._protected.oldest()
        return None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._probation or key in self._protected

    def __len__(self) -> int:
        return len(self._probation.order) + len(self._protected.order)

    def segment(self, key: Hashable) -> int:
        return PROTECTED if key in self._protected else PROBATION


POLICIES: dict[str, type[Policy]] = {LRU.name: LRU, TinyLFU.name: TinyLFU}


def make_policy(name: str, capacity: int) -> Policy:
    return POLICIES[name](capacity)
