"""Order-aware prefetch: a job says in which order it will read files, and the cache fetches
ahead of it along that order and keeps what it will read soon.

Without a plan, a shuffled epoch over a dataset larger than the hot tier is a random walk: the
read-ahead of each open file cannot see the next file, and the eviction policy can only guess
from the past which blocks come back. A plan (``tierfs prefetch``, ``tierfs.prefetch``) is the
future, so both can do better:

* Fetching: blocks of the plan not yet on the hot tier are fetched ahead of the reader, in plan
  order, with at most ``fetches`` GETs at once and at most ``window`` bytes fetched and not yet
  read. A block is fetched to the hot tier only into room that costs no planned block: free
  capacity, blocks the plan is done with, blocks it never reads. Evicting a block the plan
  still needs, to fetch one it needs sooner, loses a hit to save a wait (the fetched block is
  a miss either way). A block the plan reads once more and is then done with is not stored
  over a block the plan is done with either: that swaps one block read in this plan for
  another, at the cost of a write to the hot tier and a read back. Such a block is fetched into
  the memory pool only and handed to its reader there: over a dataset larger than the cache,
  the cache keeps what it held and the rest is streamed. Without room, the blocks of the next
  ``URGENT`` positions are still fetched, into the memory pool only (not written to the hot
  tier: the plan is done with such a block once its reader has used it, and writing it would
  take room counted on for the blocks fetched to stay until their reader comes): a plan that
  starts with the cache full of blocks it will read, as an epoch over a dataset larger than
  the cache does, would otherwise leave its reader waiting a GET's latency on every block it
  misses until its reads free room, and ``URGENT`` positions are about a GET's latency of
  reading blocks from the hot tier.
* Eviction (``PlanPolicy``, wrapping the mount's policy while the plan runs): first blocks the
  plan has read and will not read again, then blocks outside the plan (least recently used
  first), and only then planned blocks, the one needed last first: with the future known, this
  is Belady's rule. A block a reader fetched itself (a miss, its read-ahead) is never admitted
  over a planned block: it is being read from memory, and the planned block is a hit to come.
* Progress: the reader's uses of blocks (the cache's ``accessed``) move the plan's cursor.
  Readers may run a little out of order (several DataLoader workers): a block up to ``lag``
  positions behind the furthest one read still counts as ahead. Reads of blocks outside the
  plan's near part (``lag`` behind to ``lag`` ahead of the cursor) are strays; after
  ``stray_limit`` of them in a row the plan is dropped, as it is once read to its end, when
  nobody follows it for ``IDLE`` seconds, or when a new plan replaces it.

Hit accounting: a block the plan fetched counts, when its reader gets to it, as coming from its
source (a miss), as blocks fetched by read-ahead do: the hit ratio says how much of the epoch
the hot tier held before anything was fetched for it, and the plan's gain shows as throughput
and as blocks kept.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import trio

from tierfs.cache.blocks import BlockCache
from tierfs.cache.entries import Source
from tierfs.cache.eviction import PROBATION, Policy
from tierfs.cache.planorder import Plan, Step

log = logging.getLogger(__name__)

#: Seconds without any read along the plan after which it is dropped.
IDLE = 600.0
#: Positions right ahead of the reader whose blocks are fetched even without room on the hot
#: tier (into memory only): a GET's latency (tens of milliseconds) covers this many blocks read
#: from the hot tier, one or a few milliseconds each.
URGENT = 8
#: Share of the memory pool (``read_memory``) that blocks fetched into memory only may take:
#: half, the other half for the reader's own blocks (from the hot tier, its read-ahead).
MEMORY_SHARE = 2
#: Seconds between looks at the plan while nothing wakes the fetcher (room freed by an
#: eviction elsewhere, say).
POLL = 0.5
#: A plan holds at most this many times the blocks the cache can hold: past that it could not
#: keep them anyway, and a size read from the shared warm tree (a stub's, anyone's to write)
#: must not make the event loop build millions of steps. What is past it is left out (logged,
#: and counted in the plan's status).
MAX_PLAN_CACHES = 8
#: ...and at least this many blocks, however small the cache.
MIN_PLAN_BLOCKS = 4096


class PlanPolicy(Policy):
    """The mount's eviction policy with the plan's future in front of it (see the module's
    docstring). Every call reaches the wrapped policy too, so it is in step when the plan is
    dropped and it takes over again."""

    name = "plan"

    def __init__(self, inner: Policy, plan: Plan, cached: dict[bytes, int],
                 on_read: Callable[[bytes], None] | None = None) -> None:
        super().__init__(inner.capacity)
        self.inner = inner
        self.plan = plan
        self.on_read = on_read
        #: Keys the plan's own fetches are about to fill: the next ``record`` of each is the
        #: fill's, not the reader's.
        self.own: set[bytes] = set()
        #: The wrapped policy's keys and their sizes.
        self.sizes: dict[bytes, int] = {}
        #: Cached keys the plan is done with, and cached keys it never reads (LRU order).
        self.done: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.others: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        #: Bytes of ``done`` and ``others``: room a prefetch may take without a planned block;
        #: and of ``others`` alone.
        self.spare = 0
        self.others_bytes = 0
        #: Planned cached keys by next use, latest first (entries checked when popped).
        self._far: list[tuple[int, bytes]] = []
        for key, size in cached.items():
            self.sizes[key] = size
            self._place(key)

    # -- where a cached key belongs ------------------------------------------------------

    def _place(self, key: bytes) -> None:
        use = self.plan.next_use(key)
        if use is not None:
            heapq.heappush(self._far, (-use, key))
        elif self.plan.planned(key):
            self.done[key] = None
            self.spare += self.sizes[key]
        else:
            self.others[key] = None
            self.spare += self.sizes[key]
            self.others_bytes += self.sizes[key]

    def _unplace(self, key: bytes) -> None:
        if self.done.pop(key, 0) is None:
            self.spare -= self.sizes[key]
        elif self.others.pop(key, 0) is None:
            self.spare -= self.sizes[key]
            self.others_bytes -= self.sizes[key]

    def planned(self, keys: Iterable[bytes]) -> None:
        """Keys were appended to the plan: cached ones it did not plan before now have a
        future."""
        for key in keys:
            if key in self.others:
                self._unplace(key)
                self._place(key)

    def ended(self, keys: Iterable[bytes]) -> None:
        """The plan no longer needs these keys."""
        for key in keys:
            if key in self.sizes and key not in self.done:
                self._unplace(key)
                self.done[key] = None
                self.spare += self.sizes[key]

    # -- Policy ---------------------------------------------------------------------------

    def record(self, key: Hashable) -> None:
        self.inner.record(key)
        assert isinstance(key, bytes)
        if key in self.own:  # the fill's own access, made before its first await
            self.own.discard(key)
            return
        self.ended(self.plan.read(key))
        if self.on_read is not None:
            self.on_read(key)

    def hit(self, key: Hashable) -> None:
        self.inner.hit(key)
        if key in self.others:
            self.others.move_to_end(key)  # type: ignore[arg-type]

    def insert(self, key: Hashable, size: int, segment: int = PROBATION) -> None:
        assert isinstance(key, bytes)
        self.inner.insert(key, size, segment)
        if key in self.sizes:
            self._unplace(key)
        self.sizes[key] = size
        self._place(key)

    def remove(self, key: Hashable) -> None:
        self.inner.remove(key)
        if key in self.sizes:
            assert isinstance(key, bytes)
            self._unplace(key)
            del self.sizes[key]

    def _planned_victim(self) -> bytes | None:
        """The cached planned key needed last."""
        while self._far:
            negative, key = self._far[0]
            if key not in self.sizes or key in self.done or key in self.others:
                heapq.heappop(self._far)
                continue
            use = self.plan.next_use(key)
            if use != -negative:  # read meanwhile, or passed: file it again
                heapq.heappop(self._far)
                self._unplace(key)
                self._place(key)
                continue
            return key
        return None

    def victim(self) -> Hashable | None:
        for keys in (self.done, self.others):
            if keys:
                return next(iter(keys))
        key = self._planned_victim()
        return key if key is not None else self.inner.victim()

    def admits(self, candidate: Hashable, victim: Hashable) -> bool:
        if victim in self.done:
            # Not for a block the plan reads at most once more (a reader's own fetch): one
            # block it is done with for another, as the fetcher never stores (``_feed``).
            return not self.plan.planned(candidate) or self.plan.uses_left(candidate) > 1
        if victim in self.others:
            return (self.plan.next_use(candidate) is not None
                    or self.inner.admits(candidate, victim))
        # A planned victim. A block a reader fetched (the plan's own are stored without
        # asking) is being read from memory now: keeping it would gain nothing this epoch and
        # cost a block the plan still needs.
        return self.plan.next_use(victim) is None

    def __contains__(self, key: Hashable) -> bool:
        return key in self.inner

    def __len__(self) -> int:
        return len(self.inner)

    def segment(self, key: Hashable) -> int:
        return self.inner.segment(key)

    def frequency(self, key: Hashable) -> int:
        return self.inner.frequency(key)

    def set_frequency(self, key: Hashable, count: int) -> None:
        self.inner.set_frequency(key, count)


@dataclasses.dataclass
class Entry:
    """One file of a plan as the caller gave it: the file's blocks and the bytes wanted."""

    path: str
    source: Source
    offset: int = 0
    length: int | None = None


class Active:
    """A running plan: the logic, its policy, and the fetcher's state."""

    def __init__(self, number: int, plan: Plan, policy: PlanPolicy, window: int,
                 fetches: int) -> None:
        self.number = number
        self.plan = plan
        self.policy = policy
        #: Most bytes fetched and not yet read, and most fetches at once.
        self.window = window
        self.fetches = fetches
        self.scope = trio.CancelScope()
        self.changed = trio.Event()
        #: Keys being fetched, and keys fetched and not yet read: key -> bytes.
        self.inflight: dict[bytes, int] = {}
        #: The keys of ``inflight`` and ``unread`` fetched into memory only: they take no room
        #: on the hot tier. And every key fetched so, kept from the hot tier until the plan
        #: ends (``BlockCache.unstored``): a reader may ask for a block in several requests,
        #: and each would otherwise try to store it once the first has used it.
        self.in_memory: set[bytes] = set()
        self.unstored: set[bytes] = set()
        self.unread: dict[bytes, int] = {}
        self.failed: set[bytes] = set()
        self.files = 0
        self.bytes = 0
        self.hot_at_start = 0
        self.fetched = 0
        self.peak_fetches = 0
        self.peak_ahead = 0
        self.last_read = time.monotonic()
        self.ended: str | None = None
        #: Blocks left out of the plan: past its bound (``MAX_PLAN_CACHES``).
        self.left_out = 0

    def wake(self) -> None:
        self.changed.set()

    @property
    def ahead(self) -> int:
        return sum(self.inflight.values()) + sum(self.unread.values())

    def status(self) -> dict[str, Any]:
        plan = self.plan
        return {"plan": self.number, "active": self.ended is None, "ended": self.ended,
                "files": self.files, "blocks": len(plan.steps), "bytes": self.bytes,
                "hot_at_start": self.hot_at_start, "position": plan.cursor,
                "fetched": self.fetched, "fetching": len(self.inflight),
                "ahead": self.ahead, "peak_fetches": self.peak_fetches,
                "peak_ahead": self.peak_ahead, "complete": plan.complete,
                "left_out": self.left_out}


class Planner:
    """A mount's plan (one at a time): resolves nothing itself; gets entries, runs the
    fetcher in the filesystem's nursery, installs and removes the plan's policy."""

    def __init__(self, cache: BlockCache, nursery: Callable[[], trio.Nursery | None],
                 window: int, fetches: int) -> None:
        self.cache = cache
        self._nursery = nursery
        self.window = max(cache.block_size, window)
        self.fetches = max(1, fetches)
        self.current: Active | None = None
        self.last: Active | None = None
        self._numbers = 0

    def start(self, entries: list[Entry], complete: bool, window: int | None = None,
              fetches: int | None = None) -> Active:
        """Replace any plan with one of ``entries`` (``complete``: no more will be added)."""
        self.stop("replaced")
        window = self.window if window is None else max(self.cache.block_size, window)
        blocks = max(1, window // self.cache.block_size)
        plan = Plan(lag=max(8, blocks), stray_limit=max(32, 2 * blocks))
        cache = self.cache
        cached = {key: entry.size for key, entry in cache.entries.items() if not entry.pinned}
        self._numbers += 1
        active: Active | None = None

        def on_read(key: bytes) -> None:
            assert active is not None
            self._read(active, key)

        policy = PlanPolicy(cache.policy, plan, cached, on_read)
        active = Active(self._numbers, plan, policy, window, fetches or self.fetches)
        self.current = active
        self.add(active, entries, complete)
        cache.policy = policy
        nursery = self._nursery()
        if nursery is not None:
            nursery.start_soon(self._run, active)
        if plan.finished:  # nothing in it
            self.stop("finished", active)
        log.info("plan %d: %d files, %d blocks, %d bytes (%d hot)", active.number,
                 active.files, len(plan.steps), active.bytes, active.hot_at_start)
        return active

    def add(self, active: Active, entries: list[Entry], complete: bool) -> None:
        """Append entries to a running plan."""
        bs = self.cache.block_size
        bound = max(MIN_PLAN_BLOCKS, MAX_PLAN_CACHES * (self.cache.capacity // bs))
        left_out = active.left_out
        for entry in entries:
            size = entry.source.size
            end = size if entry.length is None else min(size, entry.offset + entry.length)
            if end <= entry.offset:
                continue
            first, last = entry.offset // bs, (end - 1) // bs
            room = bound - len(active.plan.steps)
            if last - first + 1 > room:
                active.left_out += last - first + 1 - max(0, room)
                if room <= 0:
                    continue
                last = first + room - 1
            keys = active.plan.add(entry.source, first, last, bs, entry.path)
            active.policy.planned(keys)
            active.files += 1
            for key in keys:
                hot = self.cache.entries.get(key)
                step = active.plan.steps[active.plan.where[key][-1]]
                active.bytes += step.size
                active.hot_at_start += hot.size if hot is not None else 0
        if active.left_out > left_out:
            log.warning("plan %d: %d blocks left out, past the %d a plan holds (%d times the "
                        "cache)", active.number, active.left_out - left_out, bound,
                        MAX_PLAN_CACHES)
        active.plan.complete = complete
        active.wake()

    def _read(self, active: Active, key: bytes) -> None:
        active.last_read = time.monotonic()
        if active.unread.pop(key, None) is not None:
            self.cache.ahead.pop(key, None)
        active.in_memory.discard(key)
        active.wake()
        if active.plan.finished:
            self.stop("finished", active)
        elif active.plan.strayed:
            self.stop("strayed", active)

    def stop(self, reason: str, active: Active | None = None) -> Active | None:
        """Drop the current plan (``active``: only if it is still that one)."""
        current = self.current
        if current is None or (active is not None and active is not current):
            return None
        current.ended = reason
        current.scope.cancel()
        if self.cache.policy is current.policy:
            self.cache.policy = current.policy.inner
        for key in current.unread:
            self.cache.ahead.pop(key, None)
        current.unread.clear()
        self.cache.unstored.difference_update(current.unstored)
        self.current = None
        self.last = current
        log.info("plan %d %s at block %d of %d; %d bytes fetched", current.number, reason,
                 current.plan.cursor, len(current.plan.steps), current.fetched)
        return current

    def status(self) -> dict[str, Any] | None:
        active = self.current or self.last
        return None if active is None else active.status()

    # -- the fetcher ------------------------------------------------------------------------

    async def _run(self, active: Active) -> None:
        with active.scope:
            async with trio.open_nursery() as nursery:
                await self._feed(active, nursery)

    async def _feed(self, active: Active, nursery: trio.Nursery) -> None:
        cache, plan = self.cache, active.plan
        window, fetches = active.window, active.fetches
        position = skipped = 0
        while True:
            position = max(position, plan.cursor)
            if position >= len(plan.steps):
                await self._wait(active)
                continue
            step = plan.steps[position]
            key = step.key
            if (key in cache.entries or cache.loaded(key) or key in active.inflight
                    or key in active.unread or step.source.id in active.failed
                    or plan.next_use(key) is None):
                position += 1
                skipped += 1
                if skipped % 1024 == 0:  # a long run of hot blocks: let requests in
                    await trio.lowlevel.checkpoint()
                continue
            # Room for it without a planned block: what is free and what the plan can spare,
            # less what the fetches under way to the hot tier will take.
            free = (cache.high - cache.used - cache.reserved
                    - sum(size for k, size in active.inflight.items()
                          if k not in active.in_memory))
            if plan.reads_again(key, position):
                keep = free + active.policy.spare >= step.size
                streamed = position - plan.cursor < URGENT
            else:
                # Read once more, then done with: storing it over a block the plan is done
                # with too would swap one such block for another, at the cost of a write to
                # the hot disk and a read back. It is handed to its reader from memory.
                keep = free + active.policy.others_bytes >= step.size
                streamed = True
            if (len(active.inflight) >= fetches or active.ahead + step.size > window
                    or (not keep and (not streamed
                                      or not self._memory_for(active, step.size)))):
                await self._wait(active)
                continue
            active.inflight[key] = step.size
            if not keep:
                active.in_memory.add(key)
                active.unstored.add(key)
                cache.unstored.add(key)
            active.peak_fetches = max(active.peak_fetches, len(active.inflight))
            active.peak_ahead = max(active.peak_ahead, active.ahead)
            nursery.start_soon(self._fetch, active, step, keep)
            position += 1

    def _memory_for(self, active: Active, size: int) -> bool:
        """Whether a block fetched into memory only fits in the plan's share of the pool, with
        the blocks fetched so and not yet read."""
        held = sum(active.inflight[k] for k in active.in_memory if k in active.inflight)
        held += sum(active.unread[k] for k in active.in_memory if k in active.unread)
        return held + size <= max(size, self.cache.memory_limit // MEMORY_SHARE)

    async def _wait(self, active: Active) -> None:
        with trio.move_on_after(POLL):
            await active.changed.wait()
        active.changed = trio.Event()
        if time.monotonic() - active.last_read > IDLE:
            self.stop("idle", active)

    async def _fetch(self, active: Active, step: Step, keep: bool = True) -> None:
        """Fetch one block of the plan: to the hot tier (``keep``), or into the memory pool
        only, where the reader finds it (``BlockCache.get``, whose load a reader arriving
        meanwhile shares)."""
        key = step.key
        if keep:
            active.policy.own.add(key)
        try:
            if keep:
                fetched = await self.cache.fill(step.source, step.block)
            else:
                data, origin = await self.cache.get(step.source, step.block)
                fetched = 0 if origin == "hot" else len(data)
        except OSError as e:
            active.failed.add(step.source.id)
            log.debug("plan %d: a block of %s was not fetched: %s", active.number, step.path,
                      e)
            fetched = 0
        finally:
            active.policy.own.discard(key)
            active.inflight.pop(key, None)
            active.wake()
        active.fetched += fetched
        if fetched and active.ended is None and active.plan.next_use(key) is not None:
            active.unread[key] = step.size  # (a reader that caught up shared the fetch)
            self.cache.ahead[key] = step.source.tier
        elif key in active.in_memory:
            active.in_memory.discard(key)
            active.unstored.discard(key)
            self.cache.unstored.discard(key)
