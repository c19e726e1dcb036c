"""The block cache: blocks of cold objects and warm files kept on the hot tier.

A block is named by its source and number: a cold source is the object's URI and ETag (and
the size its stub claims), a warm one the file's ``core.openfile.warm_id``; a changed source
gets a new name, so its old blocks are never served and age out. A block is looked for in the
memory pool (shared by every open file, bounded by ``read_memory``), then its checksummed file
on the hot tier, then the source.
Concurrent readers of one block share one fetch; a fetched block is returned at once and
stored in the background, several per hot-tier call (``cache.storing``). A full hot tier
(ENOSPC) makes the cache evict and try once more, else skip caching: a read never fails for it.

The cache holds at most ``capacity`` bytes, blocks being written included: the policy evicts
one victim per incoming block above the high watermark, and a full hot disk evicts down to the
low watermark at once. Pinned blocks are outside the policy. Every block has an entry in the
``blocks`` database, changed in memory and committed with the filesystem's batch; at mount,
an entry or a file without the other is dropped (``cache.reconcile``), the policy rebuilt.
"""

from __future__ import annotations

import collections
import errno
import logging

import trio

from tierfs.cache.buffers import BufferPool
from tierfs.cache.bysource import BySource
from tierfs.cache.counters import Counters
from tierfs.cache.entries import ID_BYTES, Entry, Source, Unkept, block_key, block_number
from tierfs.cache.eviction import Policy
from tierfs.cache.flight import Block, Flight, shared_error
from tierfs.cache.reconcile import DB, PINS, reconcile
from tierfs.cache.store import BlockFiles, is_no_space
from tierfs.cache.storing import StoreQueue
from tierfs.index import Batch, Index
from tierfs.tiers.hot import HotTier

log = logging.getLogger(__name__)

#: Fetched blocks waiting to be written to the hot tier or being written, at most, in bytes of
#: this many whole blocks; misses beyond are served without caching.
MAX_STORES = 8
#: Free block buffers kept for reads from the hot tier (on top of ``read_memory``).
FREE_BUFFERS = 8
#: Blocks from the hot tier served whole that stay in memory (for a reader a little behind
#: another in the same file).
FINISHED_HOT = 2


class BlockCache:
    def __init__(self, hot: HotTier, index: Index, batch: Batch, policy: Policy,
                 block_size: int, capacity: int, high: float, low: float, memory: int,
                 counters: Counters) -> None:
        self.hot = hot
        self.index = index
        self.batch = batch
        self.policy = policy
        self.block_size = block_size
        self.capacity = capacity
        self.high = int(capacity * high)
        self.low = int(capacity * low)
        self.counters = counters
        self.files = BlockFiles(hot.root)
        #: Indexed by source too: work on a whole source costs what is cached of it.
        self.entries: BySource[Entry] = BySource(ID_BYTES)
        #: Bytes of cached blocks, and of blocks being written (reserved before writing).
        self.used = 0
        self.reserved = 0
        self._memory: collections.OrderedDict[bytes, Block] = collections.OrderedDict()
        self._memory_bytes = 0
        self._memory_limit = memory
        #: Blocks in memory that no reader has used yet (read ahead); those read from the
        #: hot tier; and those of them served whole, oldest first: at most ``FINISHED_HOT`` of
        #: these stay.
        self._unused: set[bytes] = set()
        self._from_hot: set[bytes] = set()
        #: Bytes served so far of each block from the hot tier in memory.
        self._served: dict[bytes, int] = {}
        self._finished_hot: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._buffers = BufferPool(block_size, FREE_BUFFERS)
        self._loading: dict[bytes, Flight] = {}
        self.pins: dict[bytes, bytes] = {}
        #: Blocks waiting to be written to the hot tier or being written (claimed: no second
        #: store of one starts meanwhile), and an event set whenever claims end.
        self._storing: set[bytes] = set()
        self._stored = trio.Event()
        self._dirty: set[bytes] = set()
        self._seq = 0
        self._queue = StoreQueue(self._store_batch, MAX_STORES * block_size, block_size)
        self._evicting = trio.Lock()
        self._nursery: trio.Nursery | None = None
        #: Blocks fetched to the hot tier ahead of their reader by a plan (``cache.plan``)
        #: and the tier they came from: the reader counts them as misses, as it does blocks
        #: its own read-ahead fetched.
        self.ahead: dict[bytes, str] = {}
        #: Blocks a plan fetched into memory only, for a reader about to use them: not
        #: written to the hot tier while the plan runs (that would take room the plan
        #: counted on for its next blocks, for a block it is done with once read).
        self.unstored: set[bytes] = set()
        counters.set_gauge("capacity", capacity)

    # -- lifecycle ----------------------------------------------------------------------

    def load(self) -> None:
        """Read the index, reconcile it with the block files, rebuild the policy (blocking;
        called once at mount, before any request)."""
        entries, self.pins = reconcile(self.files, self.index, self.block_size)
        for key, entry in entries:
            self.entries[key] = entry
            self.used += entry.size
            if not entry.pinned:
                self.policy.insert(key, entry.size, entry.segment)
                self.policy.set_frequency(key, entry.freq)
            self._seq = max(self._seq, entry.seq)
        self._update_gauges()
        self.counters.set_gauge("pinned_bytes",
                                sum(e.size for e in self.entries.values() if e.pinned))
        log.info("block cache: %d blocks, %d bytes of %d", len(self.entries), self.used,
                 self.capacity)

    def bind(self, nursery: trio.Nursery) -> None:
        """Where background writes of fetched blocks run. With blocks on the hot tier, the
        buffers to read them into are made now, in the background (as many as ``read_memory``
        holds, up to the pool's size): made at the first read, each costs a few milliseconds of
        page faults while its reader waits."""
        self._nursery = nursery
        self._queue.bind(nursery)
        if self.entries:
            nursery.start_soon(self._fill_buffers)

    async def _fill_buffers(self) -> None:
        count = min(self._buffers.keep, self._memory_limit // self.block_size)
        try:
            await self.hot.run(self._buffers.fill, count)
        except (OSError, MemoryError) as e:  # the first reads will make their own
            log.warning("could not make block buffers ahead: %s", e)

    def persist(self) -> None:
        """Queue changed entries into the index batch (called before each batch flush)."""
        if self._dirty:
            self.counters.set_gauge("pinned_bytes",
                                    sum(e.size for e in self.entries.values() if e.pinned))
        for key in self._dirty:
            entry = self.entries.get(key)
            if entry is None:
                self.batch.delete(DB, key)
            else:
                if key in self.policy:
                    entry.segment = self.policy.segment(key)
                    entry.freq = self.policy.frequency(key)
                self.batch.put(DB, key, entry.encode())
        self._dirty = set()

    def _update_gauges(self) -> None:
        self.counters.set_gauge("bytes_cached", self.used)
        self.counters.set_gauge("blocks_cached", len(self.entries))

    # -- reads --------------------------------------------------------------------------

    def loaded(self, key: bytes) -> bool:
        """Whether a block is in memory or being loaded (read-ahead has nothing to do)."""
        return key in self._memory or key in self._loading

    def on_hot_tier(self, key: bytes) -> bool:
        return key in self.entries

    def served(self, key: bytes, nbytes: int) -> None:
        """Readers were given ``nbytes`` of a block. One from the hot tier that has been
        served whole soon leaves memory (its buffer goes to the next block): a sequential
        reader is done with it, another reader of the file most likely finds its pages in the
        mount's page cache, and reading it again from the hot disk is cheap. Counting bytes,
        not watching for the block's last byte: the kernel's read-ahead requests for one file
        may arrive out of order."""
        if key not in self._from_hot:
            return
        total = self._served[key] = self._served.get(key, 0) + nbytes
        data = self._memory.get(key)
        if data is not None and total >= len(data):
            self._finished_hot[key] = None
            self._finished_hot.move_to_end(key)
            while len(self._finished_hot) > FINISHED_HOT:
                self._forget(next(iter(self._finished_hot)))

    @property
    def memory_limit(self) -> int:
        """Bytes of blocks the memory pool holds at most (``read_memory``)."""
        return self._memory_limit

    @property
    def unused(self) -> int:
        """Blocks in memory that no reader has used yet: read ahead, waiting for a reader."""
        return len(self._unused)

    def accessed(self, key: bytes) -> None:
        """A reader used a block (once per block per handle, however many requests it took):
        the access the eviction policy counts."""
        self.policy.record(key)
        self._unused.discard(key)
        if key in self.entries:
            self.policy.hit(key)
            self._seq += 1
            self.entries[key].seq = self._seq
            self._dirty.add(key)

    async def get(self, source: Source, block: int) -> tuple[Block, str]:
        """A block's bytes and where they came from: "hot", or the source's tier. Readers
        that arrive while the block is being loaded share that load: its bytes and origin, or
        its error. Every reader gets one or the other; only a load whose own reader gave up
        (cancelled) leaves the others to look again, and one of them loads the block."""
        key = block_key(source.id, block)
        while True:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
                if key not in self.entries:
                    # Turned away earlier, asked for again: the policy may think otherwise now.
                    self._store_soon(key, data)
                return data, "hot"
            flight = self._loading.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.data is not None:
                return flight.data, flight.origin
            if flight.error is not None:
                raise shared_error(flight.error) from flight.error
        # No await between looking in ``_loading`` and this: one load per block at a time.
        flight = self._loading[key] = Flight()
        try:
            flight.data, flight.origin = await self._load(source, block, key)
            if not isinstance(flight.data, Unkept):
                self._remember(key, flight.data, flight.origin)
            return flight.data, flight.origin
        except Exception as e:
            flight.error = e
            raise
        finally:
            if self._loading.get(key) is flight:
                del self._loading[key]
            flight.done.set()

    async def _load(self, source: Source, block: int, key: bytes) -> tuple[Block, str]:
        entry = self.entries.get(key)
        if entry is not None:
            data = await self.hot.run(self.files.read, key, entry.size, entry.crc,
                                      self._buffers)
            if data is not None:
                self.counters.add("fetches_hot")
                return data, "hot"
            if key in self.entries:
                log.warning("cached block %s is missing or fails its checksum: dropped",
                            key.hex())
                self.counters.add("bad_blocks")
                await self._drop(key)
        start = block * self.block_size
        length = min(self.block_size, source.size - start)
        data = await source.fetch(start, length)
        if len(data) != length:
            raise OSError(errno.EIO, f"short read of block {block}: {len(data)} of {length}")
        self.counters.add("fetches_" + source.tier)
        if not isinstance(data, Unkept):
            self._store_soon(key, data)
        return data, source.tier

    def _remember(self, key: bytes, data: Block, origin: str) -> None:
        """Keep a loaded block in memory, until the memory is full (least recently used
        first) or, for a block from the hot tier, soon after it was served whole. Blocks a
        plan fetched into memory only go last, while their reader has not used them: they
        are nowhere else, and a plan bounds them to a share of the pool."""
        self._forget(key)
        self._memory[key] = data
        self._memory_bytes += len(data)
        self._unused.add(key)
        if origin == "hot":
            self._from_hot.add(key)
        while self._memory_bytes > self._memory_limit and len(self._memory) > 1:
            self._forget(next((k for k in self._memory if k != key and (
                k not in self.unstored or k not in self._unused)), next(iter(self._memory))))

    def _forget(self, key: bytes) -> None:
        """Drop a block from memory, and its buffer back to the pool if no reader holds it."""
        self._unused.discard(key)
        self._from_hot.discard(key)
        self._served.pop(key, None)
        self._finished_hot.pop(key, None)
        data = self._memory.pop(key, None)
        if data is not None:
            self._memory_bytes -= len(data)
            self._buffers.give(data)

    # -- writes and eviction ------------------------------------------------------------

    def _store_soon(self, key: bytes, data: Block) -> None:
        if (len(data) > self.capacity or key in self._storing or key in self.unstored
                or not self._queue.offer(key, data)):
            return
        self._storing.add(key)

    async def _store_batch(self, blocks: list[tuple[bytes, Block]], force: bool = False
                           ) -> None:
        """Write fetched blocks to the hot tier in one call, those the policy admits
        (``force``: all, for explicit prefetching; a pinned source's always, as after a
        crash tore one), and release their claims in ``_storing``. Each block is weighed
        alone, with only those admitted before it reserved: a batch makes no more room, and
        evicts no other victims, than its blocks stored one at a time would."""
        admitted: list[tuple[bytes, Block]] = []
        written: dict[bytes, int | OSError] = {}
        held = 0
        try:
            for key, data in blocks:
                if key in self.entries:  # stored meanwhile: the same bytes
                    continue
                self.reserved += len(data)
                held += len(data)
                try:
                    admit = await self._make_room(key, force or key[:ID_BYTES] in self.pins)
                    if not admit:
                        self.counters.add("rejected")
                except OSError as e:  # full of pinned blocks
                    self.counters.add("store_failures")
                    log.debug("block %s not cached: %s", key.hex(), e)
                    admit = False
                if not admit:
                    self.reserved -= len(data)
                    held -= len(data)
                    continue
                admitted.append((key, data))
            if admitted:
                written = await self.hot.run(self.files.write_many, admitted)
                full = [(key, data) for key, data in admitted if is_no_space(written[key])]
                if full:
                    # The disk is fuller than our accounting knows (staging files, other
                    # users): come down to the low watermark and more, then try once more.
                    size = sum(len(data) for _, data in full)
                    try:
                        await self._evict_to(max(0, min(self.low, self.used - 4 * size)))
                        written.update(await self.hot.run(self.files.write_many, full))
                    except OSError as e:  # (the full ones stay failures)
                        log.debug("no room made for %d blocks: %s", len(full), e)
        finally:
            self.reserved -= held
            self._release([key for key, _ in blocks])
        for key, data in admitted:
            crc = written[key]
            if isinstance(crc, OSError):
                self.counters.add("store_failures")
                log.debug("block %s not cached: %s", key.hex(), crc)
            elif key not in self.entries:  # (a racing fetch after an eviction: same bytes)
                self._enter(key, len(data), crc)
                self.counters.add("stored")

    def _release(self, keys: list[bytes]) -> None:
        """End claims in ``_storing``, waking whoever waits for one (``fill``)."""
        self._storing.difference_update(keys)
        self._stored.set()
        self._stored = trio.Event()

    def _enter(self, key: bytes, size: int, crc: int) -> None:
        """A block whose file is in place becomes an entry: a fresh one for the policy."""
        self._seq += 1
        pinned = key[:ID_BYTES] in self.pins
        self.entries[key] = Entry(size, crc, seq=self._seq, pinned=pinned)
        self.used += size
        if not pinned:
            self.policy.insert(key, size)
        self._dirty.add(key)
        self._update_gauges()

    # -- blocks made from written data (cache/written.py) -------------------------------

    async def reserve_written(self, key: bytes, size: int) -> bool | None:
        """Room for a block of data just written, weighed by the policy as any newcomer (the
        writer's use counts as one access); False, nothing reserved, if it is not kept, None
        if it is cached already or being stored (the same bytes: a source is one version).
        On True the caller must end the reservation with ``end_written``."""
        if key in self.entries or key in self._storing:
            return None
        if size > self.capacity:
            return False
        self.policy.record(key)
        self._storing.add(key)
        self.reserved += size
        try:
            # Under the high watermark too: the file's own blocks, reserved and not yet
            # entries, are no victims, and a written file must not push the cache past it.
            admitted = (await self._make_room(key, force=False)
                        and self.used + self.reserved <= self.high)
        except OSError:  # full of pinned blocks
            admitted = False
        if not admitted:
            self.end_written(key, size, None)
        return admitted

    def end_written(self, key: bytes, size: int, crc: int | None) -> None:
        """End a reservation of ``reserve_written``: the block's file is in place with this
        checksum, or (None) it was not made. Its file is not fsynced, as a fetched block's is
        not: it is a copy of bytes its source keeps (the publish put them home first), and
        a file a crash tore fails its first load and is fetched again."""
        self.reserved -= size
        self._release([key])
        if crc is not None and key not in self.entries:
            self._enter(key, size, crc)

    async def settle(self) -> None:
        """Write the fetched blocks waiting to be (before the last index commit)."""
        await self._queue.settle()

    async def _make_room(self, key: bytes, force: bool) -> bool:
        """Evict, one victim at a time, until the reserved blocks fit under the high
        watermark; False if the policy prefers its victim to the newcomer.

        Only as much as needed: each victim is weighed against the block coming in, which is
        what lets the admission filter keep a stable set through a scan or a cyclic epoch
        (evicting a batch down to the low watermark would flush blocks the filter never
        weighed). The low watermark is where a full hot disk brings the cache down to.
        """
        while self.used + self.reserved > self.high:
            victim = self.policy.victim()
            if victim is None:
                break
            if not force and not self.policy.admits(key, victim):
                return False
            assert isinstance(victim, bytes)
            await self._evict(victim)
        if self.used + self.reserved > self.capacity:
            raise OSError(errno.ENOSPC, "the block cache is full of pinned blocks")
        return True

    async def free(self, nbytes: int) -> None:
        """Evict at least ``nbytes`` of unpinned blocks (the hot disk is full)."""
        await self._evict_to(max(0, min(self.low, self.used - nbytes)))

    async def _evict_to(self, target: int) -> None:
        async with self._evicting:
            while self.used > target:
                victim = self.policy.victim()
                if victim is None:
                    return
                assert isinstance(victim, bytes)
                await self._evict(victim)

    async def _evict(self, key: bytes) -> None:
        self.policy.remove(key)
        entry = self.entries.pop(key, None)
        self._dirty.add(key)
        await self.hot.run(self.files.delete, key)
        if entry is not None:  # counted as free only once the file is gone
            self.used -= entry.size
            self.counters.add("evictions")
            self.counters.add("bytes_evicted", entry.size)
        self._update_gauges()

    async def _drop(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        self.policy.remove(key)
        self._dirty.add(key)
        await self.hot.run(self.files.delete, key)
        if entry is not None:
            self.used -= entry.size
        self._update_gauges()

    async def fill(self, source: Source, block: int) -> int:
        """Make sure a block is on the hot tier, fetching it if needed (``tierfs warm``);
        returns the bytes fetched. Raises OSError if the block cannot be kept."""
        key = block_key(source.id, block)
        if key in self.entries:
            return 0
        start = block * self.block_size
        length = min(self.block_size, source.size - start)
        self.accessed(key)
        data = self._memory.get(key)
        flight = None
        if data is None and key not in self._loading:
            # Registered as a load until the block is on the hot tier: a reader arriving
            # meanwhile (a plan's reader catching up with it) shares this fetch instead of
            # making its own.
            flight = self._loading[key] = Flight(origin=source.tier)
            try:
                data = await source.fetch(start, length)
                if len(data) != length:  # a stub claiming more than its object holds, say
                    raise OSError(errno.EIO,
                                  f"short read of block {block}: {len(data)} of {length}")
                if isinstance(data, Unkept):  # (this call is for keeping it)
                    raise OSError(errno.ESTALE, "the source changed while it was read")
            except BaseException as e:
                flight.error = e if isinstance(e, Exception) else None
                if self._loading.get(key) is flight:
                    del self._loading[key]
                flight.done.set()
                raise
            flight.data = data
            flight.done.set()
            self.counters.add("fetches_" + source.tier)
        elif data is None:
            data, _ = await self.get(source, block)  # a reader is loading it: share that
            if isinstance(data, Unkept):
                raise OSError(errno.ESTALE, "the source changed while it was read")
        try:
            # One store of a block at a time: one waiting in the queue is taken back and
            # stored here, one being written is waited for.
            while key in self._storing and not self._queue.withdraw(key):
                await self._stored.wait()
            if key not in self.entries:
                self._storing.add(key)
                await self._store_batch([(key, data)], force=True)
        finally:
            if flight is not None and self._loading.get(key) is flight:
                del self._loading[key]
        if key not in self.entries:
            raise OSError(errno.ENOSPC, "the hot tier has no room for this block")
        return len(data)

    # -- whole sources (warm, pin, evict, where) ----------------------------------------

    def _cached_blocks(self, source_id: bytes, nblocks: int) -> list[bytes]:
        """A source's blocks on the hot tier, from what the cache holds (never by walking
        block numbers up to the source's size); none at or past ``nblocks`` should exist, as
        a source's id changes with its size, and any such is left out."""
        return [key for key in self.entries.of_source(source_id)
                if block_number(key) < nblocks]

    def cached_count(self, source_id: bytes, nblocks: int) -> int:
        return len(self._cached_blocks(source_id, nblocks))

    def cached_bytes(self, source_id: bytes, nblocks: int) -> int:
        return sum(self.entries[key].size for key in self._cached_blocks(source_id, nblocks))

    async def evict_source(self, source_id: bytes, nblocks: int) -> int:
        """Drop every cached block of a source (pinned ones too), and its blocks in memory or
        waiting to be stored (they would come back a moment later); returns the bytes freed."""
        freed = 0
        for key in self._cached_blocks(source_id, nblocks):
            entry = self.entries.get(key)
            if entry is not None:
                freed += entry.size
                await self._drop(key)
        for key in [key for key in self._memory if key[:ID_BYTES] == source_id]:
            self._forget(key)
        self._release([key for key in list(self._storing)
                       if key[:ID_BYTES] == source_id and self._queue.withdraw(key)])
        return freed

    def set_pinned(self, source_id: bytes, nblocks: int, pinned: bool, label: bytes = b"") -> None:
        """Pin a source: its cached blocks leave the policy (never evicted), and so will the
        blocks cached later. ``label`` (its path) is kept for display."""
        if pinned:
            self.pins[source_id] = label
            self.batch.put(PINS, source_id, label)
        else:
            self.pins.pop(source_id, None)
            self.batch.delete(PINS, source_id)
        for key in self._cached_blocks(source_id, nblocks):
            entry = self.entries[key]
            if entry.pinned == pinned:
                continue
            entry.pinned = pinned
            if pinned:
                self.policy.remove(key)
            else:
                self.policy.insert(key, entry.size)
            self._dirty.add(key)
        self._update_gauges()
