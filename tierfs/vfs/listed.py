"""Lookups answered from a recent listing of their directory.

A training job's loader, or a script that stats every file of a dataset, looks up thousands
of names in a few directories, and every lookup the kernel sends once its entry timeout has
passed is a warm call: a round trip to the NFS server, or a hand-off to a worker thread and
back for a local warm tier. Once a directory has been asked for several names within the
attribute timeout, it is listed in one warm call (a READDIR stream on NFS, whose client keeps
the attributes the stream carries), and further lookups in it are answered from that listing.

What may be answered, and for how long:

- Only names the listing holds. A name it lacks is looked up on the warm tier, so a file that
  another node has just made is found at once, as before.
- Only within ``attr_timeout`` of the moment the listing was started, and the kernel is told to
  keep the answer only for what is left of it: a lookup answered from a listing is never older
  than a lookup answered by the warm tier and then kept by the kernel (docs/semantics.md).
- Never after a change made through this mount (``Core.changes``: every namespace or
  attribute change, the staging of a write, a publish or stub swap replacing a warm file),
  since the listing may no longer say what this mount itself did. A change that can wait or
  run beside a listing is counted once it is done too, not only when it starts: a listing
  started in between may have read the warm tier before the change.

A directory of more than ``MOST_ENTRIES`` names is not listed (the listing stops there, in the
worker), so neither memory nor the event loop pays in proportion to a directory's size, which
another user of the shared tree decides.
"""

from __future__ import annotations

import collections
import os
import time
from typing import NamedTuple

import trio

from tierfs.core.context import Core
from tierfs.core.inodes import identity

#: Names found in one directory by lookups on the warm tier within ``attr_timeout`` before it
#: is listed: a single lookup (a program opening one file) stays a single warm call. Lookups of
#: missing names (those of a create) do not count.
ASKED_BEFORE_LISTING = 4
#: A directory listed before is listed again after this fraction of its size in lookups, so
#: that one whose listings keep being voided by changes through the mount (files rewritten
#: one after another) spends on listings at most a small multiple of its lookups.
LISTED_PER_LOOKUP = 64
#: Names in a directory that is listed to answer lookups; a larger one is not.
MOST_ENTRIES = 8192
#: Listings kept at a time (the least recently taken go first).
MOST_LISTINGS = 64
#: Directories whose lookups are counted at a time (the counts start again past it).
MOST_COUNTED = 4096
#: How long a directory found too large is not listed again, in attribute timeouts.
TOO_LARGE_FOR = 30

Probe = tuple[os.stat_result, bytes | None, int | None]


class Snapshot(NamedTuple):
    #: When the listing was started (``time.monotonic``).
    taken: float
    #: ``Listed.token`` when it was started: any change through the mount since voids it.
    token: tuple[int, int, int]
    #: Each name's attributes, symlink target and earlier inode number; None: too large.
    entries: dict[bytes, Probe] | None


class Listed:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._listings: collections.OrderedDict[int, Snapshot] = collections.OrderedDict()
        #: Per directory: when its lookups started being counted, and how many.
        self._asked: dict[int, tuple[float, int]] = {}
        #: Per directory listed: how many entries its last listing held.
        self._sizes: dict[int, int] = {}
        #: Listings under way, so that lookups arriving meanwhile wait for one listing.
        self._listing: dict[int, trio.Event] = {}

    def token(self) -> tuple[int, int, int]:
        core = self.core
        return core.changes, core.name_changes, core.inodes.replacements

    def _fresh(self, parent: int, now: float) -> Snapshot | None:
        snapshot = self._listings.get(parent)
        if snapshot is None:
            return None
        lasts = self.core.config.attr_timeout
        if snapshot.entries is None:
            lasts *= TOO_LARGE_FOR  # (a change through the mount does not shrink it)
        elif snapshot.token != self.token():
            del self._listings[parent]
            return None
        if now - snapshot.taken > lasts:
            del self._listings[parent]
            return None
        return snapshot

    async def find(self, parent: int, dir_rel: bytes, name: bytes) -> tuple[float, Probe] | None:
        """The entry for ``name`` from a listing of the directory ``parent`` (at ``dir_rel``)
        and when that listing was started, if a fresh one holds it; lists the directory when
        it has been asked often enough. None: look the name up on the warm tier. Caller holds
        ``ns_lock`` shared, so ``dir_rel`` names the directory for the whole call."""
        now = time.monotonic()
        snapshot = self._fresh(parent, now)
        if snapshot is None and self._due(parent, now):
            snapshot = await self._list(parent, dir_rel)
        if snapshot is None or snapshot.entries is None:
            return None
        found = snapshot.entries.get(name)
        if found is None:
            return None
        self.core.counters.add("lookups_listed")
        return snapshot.taken, found

    def found(self, parent: int) -> None:
        """A lookup in ``parent`` found its name on the warm tier."""
        now = time.monotonic()
        since, count = self._asked.get(parent, (now, 0))
        if now - since > self.core.config.attr_timeout:
            since, count = now, 0
        if len(self._asked) >= MOST_COUNTED and parent not in self._asked:
            self._asked.clear()
            self._sizes.clear()
        self._asked[parent] = (since, count + 1)

    def _due(self, parent: int, now: float) -> bool:
        since, count = self._asked.get(parent, (now, 0))
        if now - since > self.core.config.attr_timeout:
            return False
        return count >= max(ASKED_BEFORE_LISTING,
                            self._sizes.get(parent, 0) // LISTED_PER_LOOKUP)

    async def _list(self, parent: int, dir_rel: bytes) -> Snapshot | None:
        under_way = self._listing.get(parent)
        if under_way is not None:
            await under_way.wait()
            return self._fresh(parent, time.monotonic())
        done = self._listing[parent] = trio.Event()
        try:
            token = self.token()
            taken = time.monotonic()
            try:
                entries = await self.core.warm.run(self._list_blocking, dir_rel)
            except OSError:
                return None  # (gone, or not a directory now: the lookup will say)
            snapshot = Snapshot(taken, token, entries)
            self.core.counters.add("listings")
            if entries is not None:
                self._sizes[parent] = len(entries)
            self._listings[parent] = snapshot
            self._listings.move_to_end(parent)
            while len(self._listings) > MOST_LISTINGS:
                self._listings.popitem(last=False)
            self._asked.pop(parent, None)
            return self._fresh(parent, time.monotonic())
        finally:
            del self._listing[parent]
            done.set()

    def _list_blocking(self, dir_rel: bytes) -> dict[bytes, Probe] | None:
        found = self.core.warm.list_attrs(dir_rel, MOST_ENTRIES)
        if found is None:
            return None
        numbers = self.core.inodes.persisted_numbers([identity(st) for _, st, _, _ in found])
        return {name: (st, target, number)
                for (name, st, _, target), number in zip(found, numbers)}
