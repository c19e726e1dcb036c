"""The block cache driven directly, with a real hot tier and LMDB index: readers sharing the
load of one block always get an answer, and the work done for a whole source (how much of it
is cached, evicting it, pinning it) is in proportion to the blocks cached, never to its size."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from tierfs.cache.blocks import BlockCache
from tierfs.cache.entries import Source, block_key
from tierfs.cache.store import BlockFiles
from tierfs.cache.bysource import BySource
from tierfs.cache.counters import Counters
from tierfs.cache.eviction import make_policy
from tierfs.index import Batch, Index
from tierfs.tiers.hot import HotTier

BLOCK = 64 * 1024
#: Far more than any reader should wait here: a hang shows as a failure, not a stuck run.
BOUND = 10


def make_cache(hot: HotTier, index: Index, block: int = BLOCK) -> BlockCache:
    """A cache of 64 blocks of ``BLOCK`` over ``hot`` and ``index``, not loaded yet."""
    capacity = 64 * BLOCK
    return BlockCache(hot, index, Batch(index), make_policy("tinylfu", capacity), block,
                      capacity, 0.9, 0.7, 16 * BLOCK, Counters())


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[BlockCache]:
    hot = HotTier(tmp_path / "hot", 2)
    hot.root.mkdir()
    hot.prepare()
    index = Index(hot.index_dir)
    try:
        cache = make_cache(hot, index)
        cache.load()
        yield cache
    finally:
        index.close()


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Fail a stretch of code that never yields to the event loop if it runs too long."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def failing_source(size: int, failures: int, delay: float = 0.01
                   ) -> tuple[Source, list[int]]:
    """A source whose first ``failures`` fetches fail with EIO (a bucket switched off), each
    after ``delay``; returns it and the list of fetch outcomes (0 failed, 1 served)."""
    calls: list[int] = []

    async def fetch(start: int, length: int) -> bytes:
        await trio.sleep(delay)
        if len(calls) < failures:
            calls.append(0)
            raise OSError(errno.EIO, "the bucket is off")
        calls.append(1)
        return bytes([start // BLOCK % 251]) * length

    return Source(b"s" * 16, size, "cold", fetch), calls


async def gather(n: int, get: Callable[[], Awaitable[tuple[bytes, str]]],
                 stagger: float = 0.0) -> list[object]:
    """Run ``n`` readers at once (each ``stagger`` seconds after the one before); each one's
    answer: its bytes, its OSError's errno, or any other exception (a bug)."""
    answers: list[object] = []

    async def one(i: int) -> None:
        await trio.sleep(i * stagger)
        try:
            data, _ = await get()
            answers.append(bytes(data))
        except OSError as e:
            answers.append(e.errno)
        except Exception as e:  # noqa: BLE001 - a bug: recorded so the test names it
            answers.append(e)

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
    return answers


def test_readers_sharing_a_failed_load_all_get_an_answer(cache: BlockCache) -> None:
    """Readers waiting on a load that fails get its error, each at once; no retry of one of
    them may strand the others (a retrying waiter used to take another's place in the table
    of loads: a KeyError for one, and a wait for ever for the readers behind it)."""
    source, calls = failing_source(BLOCK * 3, failures=4)

    async def main() -> None:
        answers = await gather(12, lambda: cache.get(source, 0))
        assert answers == [errno.EIO] * 12
        assert calls == [0]  # one load, shared
        # Later readers, arriving while loads keep failing and then succeed, all get an
        # answer too; once the bucket is back they get the bytes.
        answers = await gather(24, lambda: cache.get(source, 0), stagger=0.004)
        assert all(a == errno.EIO or a == bytes([0]) * BLOCK for a in answers), answers
        assert not cache._loading  # no load left behind
        # How many of them found the bucket back depends on the machine's pace: readers after
        # them get the bytes once the failures are used up (each read now loads once).
        for _ in range(4 - calls.count(0)):
            with pytest.raises(OSError):
                await cache.get(source, 0)
        data, _ = await cache.get(source, 0)
        assert bytes(data) == bytes([0]) * BLOCK

    trio.run(main)


def test_a_load_whose_reader_is_cancelled_is_taken_over(cache: BlockCache) -> None:
    """A load ends with neither bytes nor error when its own reader gives up (an interrupted
    request): the readers waiting on it load the block themselves, once."""
    source, calls = failing_source(BLOCK, failures=0, delay=0.2)

    async def main() -> None:
        answers: list[object] = []
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                first = trio.CancelScope()

                async def cancelled() -> None:
                    with first:
                        await cache.get(source, 0)

                nursery.start_soon(cancelled)
                await trio.sleep(0.05)

                async def waiter() -> None:
                    data, _ = await cache.get(source, 0)
                    answers.append(bytes(data))

                for _ in range(5):
                    nursery.start_soon(waiter)
                await trio.sleep(0.05)
                first.cancel()
        assert answers == [bytes([0]) * BLOCK] * 5
        assert calls == [1]  # the cancelled load's fetch never ended; one more served all
        assert not cache._loading

    trio.run(main)


def test_whole_source_work_is_in_proportion_to_blocks_cached(cache: BlockCache) -> None:
    """A source of 5 TiB (the most a stub may claim) with three blocks cached: counting,
    pinning and evicting it look at those three, not at 2**26 block numbers."""
    source, _ = failing_source(5 * 1024**4, failures=0)
    other, _ = failing_source(BLOCK, failures=0)
    other = Source(b"o" * 16, BLOCK, "cold", other.fetch)
    nblocks = source.blocks(BLOCK)

    async def main() -> None:
        for block in (0, 7, nblocks - 1):
            assert await cache.fill(source, block) == BLOCK
        await cache.fill(other, 0)
        with alarm(BOUND):  # (these calls do not yield: trio's own timeouts cannot stop them)
            assert cache.cached_bytes(source.id, nblocks) == 3 * BLOCK
            assert cache.cached_bytes(other.id, 1) == BLOCK
            cache.set_pinned(source.id, nblocks, True)
            assert all(cache.entries[block_key(source.id, b)].pinned
                       for b in (0, 7, nblocks - 1))
            assert not cache.entries[block_key(other.id, 0)].pinned
            cache.set_pinned(source.id, nblocks, False)
            assert block_key(source.id, 7) in cache.policy
            assert await cache.evict_source(source.id, nblocks) == 3 * BLOCK
            assert cache.cached_bytes(source.id, nblocks) == 0
            assert cache.cached_bytes(other.id, 1) == BLOCK
            assert cache.used == BLOCK

    trio.run(main)


def test_the_source_index_follows_every_change() -> None:
    entries: BySource[int] = BySource(2)
    entries[b"aa\0\2"] = 1
    entries[b"aa\0\1"] = 2
    entries.setdefault(b"bb\0\0", 3)
    entries.update({b"bb\0\1": 4}, **{})
    entries |= {b"cc\0\0": 5}
    assert entries.of_source(b"aa") == [b"aa\0\1", b"aa\0\2"]  # in block order
    assert entries.pop(b"aa\0\1") == 2 and entries.pop(b"aa\0\1", None) is None
    del entries[b"aa\0\2"]
    assert entries.of_source(b"aa") == [] and entries._by_source.keys() == {b"bb", b"cc"}
    key, _ = entries.popitem()
    assert key not in entries.of_source(key[:2])
    entries.clear()
    assert entries.of_source(b"bb") == [] and not entries._by_source


def test_warming_a_block_the_source_cannot_fill_caches_nothing(cache: BlockCache) -> None:
    """A source shorter than it claims (a stub whose object is smaller) gives a short block:
    warming it fails, as reading it does, instead of caching the short block for reads."""
    async def fetch(start: int, length: int) -> bytes:
        return b"x" * (length // 2)

    source = Source(b"t" * 16, 3 * BLOCK, "cold", fetch)

    async def main() -> None:
        with pytest.raises(OSError) as info:
            await cache.fill(source, 1)
        assert info.value.errno == errno.EIO
        with pytest.raises(OSError):
            await cache.get(source, 1)
        assert cache.cached_bytes(source.id, 3) == 0 and cache.used == 0

    trio.run(main)


def small_sources(count: int, size: int) -> list[Source]:
    """``count`` one-block sources of ``size`` bytes each (files of an image folder)."""
    def fetch_of(i: int) -> Callable[[int, int], Awaitable[bytes]]:
        async def fetch(start: int, length: int) -> bytes:
            return bytes([i]) * length
        return fetch

    return [Source(bytes([i]) * 16, size, "warm", fetch_of(i)) for i in range(count)]


def test_blocks_fetched_together_are_written_in_one_hot_tier_call(cache: BlockCache) -> None:
    """Small blocks fetched within a moment of each other go to the hot tier in one call, not
    one call (and one thread hand-off) each; every one of them is cached, with its bytes."""
    sources = small_sources(8, 4096)
    calls: list[str] = []
    run = cache.hot.run

    async def counted(fn: Callable[..., object], *args: object) -> object:
        calls.append(getattr(fn, "__name__", "?"))
        return await run(fn, *args)  # type: ignore[arg-type]

    cache.hot.run = counted  # type: ignore[method-assign]

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                cache.bind(nursery)
                for source in sources:
                    data, origin = await cache.get(source, 0)
                    assert origin == "warm" and bytes(data) == source.id[:1] * 4096
                await cache.settle()
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert [c for c in calls if c.startswith("write")] == ["write_many"]
    for source in sources:
        key = block_key(source.id, 0)
        assert key in cache.entries
        assert cache.files.path(key).read_bytes() == source.id[:1] * 4096
    assert cache.used == 8 * 4096 and cache.reserved == 0


def test_blocks_beyond_what_may_wait_are_served_but_not_cached(cache: BlockCache) -> None:
    """Fetched blocks wait in memory to be written, never more than the queue's bound in
    bytes: a reader beyond it is served, and its block simply not cached."""
    limit = cache._queue.max_bytes // (BLOCK // 2)
    sources = small_sources(limit + 3, BLOCK // 2)

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                cache.bind(nursery)
                for source in sources:  # (nothing here lets the queue's task run)
                    data, _ = await cache.get(source, 0)
                    assert bytes(data) == source.id[:1] * (BLOCK // 2)
                    assert cache._queue.bytes <= cache._queue.max_bytes
                await cache.settle()
                nursery.cancel_scope.cancel()

    trio.run(main)
    cached = [s for s in sources if block_key(s.id, 0) in cache.entries]
    assert len(cached) == limit and cache.reserved == 0
    for source in cached:
        assert cache.files.path(block_key(source.id, 0)).read_bytes() == \
            source.id[:1] * (BLOCK // 2)


def test_a_block_written_over_a_leftover_file_is_a_new_file(cache: BlockCache) -> None:
    """A fetched block is written under its own name; a file already there (a store racing
    the delete of an evicted copy) is replaced, not rewritten: whoever still reads the old
    file reads what it opened."""
    key = block_key(b"k" * 16, 0)
    cache.files.write(key, b"a" * 4096)
    with open(cache.files.path(key), "rb") as old:
        cache.files.write(key, b"b" * 100)
        assert old.read() == b"a" * 4096
    assert cache.files.path(key).read_bytes() == b"b" * 100
    assert os.stat(cache.files.path(key)).st_mode & 0o777 == 0o600


def test_a_fetched_block_is_stored_a_moment_later_without_being_asked(
        cache: BlockCache) -> None:
    """A block waits for others only a moment (``storing.GATHER``): with no unmount to
    settle the queue, it is on the hot tier soon after its read."""
    from tierfs.cache.storing import GATHER

    source = small_sources(1, 4096)[0]

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                cache.bind(nursery)
                await cache.get(source, 0)
                await trio.sleep(GATHER + 0.25)
                assert block_key(source.id, 0) in cache.entries
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_blocks_written_together_are_each_weighed_by_the_policy(cache: BlockCache) -> None:
    """Blocks written in one batch are admitted one by one, as if stored alone: a scan of
    blocks read once, arriving while a cache full of blocks used three times waits to be
    written, displaces none of them (the batch as a whole must not make room for all its
    blocks against the first one's weight)."""
    size = 16 * 1024
    residents = small_sources(230, size)  # 230 x 16 KiB: just under the high watermark
    hot_one = Source(b"used" * 4, size, "warm", residents[0].fetch)
    scan = [Source(b"scan" + bytes([i]) * 12, size, "warm", residents[0].fetch)
            for i in range(29)]

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                cache.bind(nursery)
                cache._queue._go_bytes = 10**9  # (small files beside large blocks)
                for i in range(0, len(residents), 25):
                    for source in residents[i:i + 25]:
                        await cache.get(source, 0)
                    await cache.settle()
                for source in residents:
                    for _ in range(3):
                        cache.accessed(block_key(source.id, 0))
                for _ in range(5):
                    cache.accessed(block_key(hot_one.id, 0))
                for source in [hot_one, *scan]:  # one batch
                    await cache.get(source, 0)
                    cache.accessed(block_key(source.id, 0))
                await cache.settle()
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert block_key(hot_one.id, 0) in cache.entries
    assert sum(block_key(s.id, 0) in cache.entries for s in scan) == 0
    assert sum(block_key(s.id, 0) in cache.entries for s in residents) == 229
    assert cache.reserved == 0 and not cache._storing


def test_a_full_disk_whose_evictions_fail_leaves_the_cache_working(cache: BlockCache
                                                                    ) -> None:
    """The hot disk full (ENOSPC) and the evictions meant to make room failing too (EIO):
    the blocks are not cached, and nothing else happens; later blocks are cached again."""
    sources = small_sources(6, 4096)

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                cache.bind(nursery)
                for source in sources[:3]:
                    await cache.get(source, 0)
                await cache.settle()
                files = cache.files
                write_many, delete = files.write_many, files.delete

                def full(blocks: list[tuple[bytes, bytes]]) -> dict[bytes, OSError]:
                    return {key: OSError(errno.ENOSPC, "full") for key, _ in blocks}

                def failing(key: bytes) -> None:
                    raise OSError(errno.EIO, "unlink failed")

                files.write_many, files.delete = full, failing  # type: ignore[method-assign]
                await cache.get(sources[3], 0)
                await cache.settle()
                assert block_key(sources[3].id, 0) not in cache.entries
                assert cache.counters.values["store_failures"] >= 1
                files.write_many, files.delete = write_many, delete  # type: ignore[method-assign]
                for source in sources[4:]:
                    await cache.get(source, 0)
                await cache.settle()
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert all(block_key(s.id, 0) in cache.entries for s in sources[4:])
    assert cache.reserved == 0 and not cache._storing


def test_warming_a_block_waiting_to_be_stored_stores_it_once(cache: BlockCache) -> None:
    """``tierfs warm`` of a block a reader's fetch has queued takes the block back from the
    queue and stores it itself: one file written, never two writers of one name (the second
    would replace the first's file while its entry is made)."""
    source = small_sources(1, 4096)[0]
    key = block_key(source.id, 0)
    writes: list[bytes] = []
    write = cache.files.write

    def counted(k: bytes, data: bytes) -> None:
        writes.append(k)
        write(k, data)

    cache.files.write = counted  # type: ignore[method-assign]

    async def main() -> None:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                cache.bind(nursery)
                await cache.get(source, 0)  # queued, not yet written
                assert key not in cache.entries
                assert await cache.fill(source, 0) == 4096
                assert key in cache.entries
                await cache.settle()
                await trio.sleep(0.2)
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert writes == [key]
    assert cache.files.path(key).read_bytes() == bytes([0]) * 4096
    assert cache.reserved == 0 and not cache._storing and cache._queue.bytes == 0


def open_cache(tmp_path: Path, block: int = BLOCK) -> tuple[BlockCache, Index]:
    """A cache over the hot tier under ``tmp_path`` (made or found there): the next mount's."""
    hot = HotTier(tmp_path / "hot", 2)
    hot.root.mkdir(exist_ok=True)
    hot.prepare()
    index = Index(hot.index_dir)
    try:
        cache = make_cache(hot, index, block)
        cache.load()
    except BaseException:
        index.close()
        raise
    return cache, index


def counting_source(tag: bytes, size: int, delay: float = 0.0) -> Source:
    """A source whose every byte says where it is (a block read at the wrong offset shows)."""
    async def fetch(start: int, length: int) -> bytes:
        await trio.sleep(delay)
        return bytes((start + i) % 251 for i in range(length))
    return Source(tag * (16 // len(tag)), size, "warm", fetch)


def cache_and_unmount(tmp_path: Path, source: Source, blocks: range) -> None:
    """A mount with blocks of ``BLOCK`` that caches these blocks of ``source`` and ends."""
    cache, index = open_cache(tmp_path, BLOCK)

    async def fill() -> None:
        async with trio.open_nursery() as nursery:
            cache.bind(nursery)
            for block in blocks:
                await cache.fill(source, block)
            cache.persist()
            await cache.batch.flush(cache.hot.run)
            nursery.cancel_scope.cancel()

    try:
        trio.run(fill)
    finally:
        index.close()


def check_twice_the_block_size(tmp_path: Path, source: Source) -> None:
    """The next mount, with blocks of twice ``BLOCK``: none of the old ones left, and block 1
    read is block 1 of the new size, from the source."""
    cache, index = open_cache(tmp_path, 2 * BLOCK)

    async def read() -> None:
        data, origin = await cache.get(source, 1)
        assert bytes(data) == await source.fetch(2 * BLOCK, 2 * BLOCK)
        assert origin == "warm"

    try:
        assert not cache.entries  # dropped at load, files too
        assert not list(cache.files.keys())
        trio.run(read)
    finally:
        index.close()


def test_blocks_cut_with_another_block_size_are_never_served(tmp_path: Path) -> None:
    """A block is named by its source and number: after a remount with another block size,
    block 1 of the old size (its entry and file still agreeing) was served as block 1 of the
    new one, other bytes."""
    source = counting_source(b"S", 4 * BLOCK)
    cache_and_unmount(tmp_path, source, range(1, 2))
    check_twice_the_block_size(tmp_path, source)


def test_a_pinned_block_torn_by_a_crash_is_pinned_again(cache: BlockCache) -> None:
    """Blocks are stored without an fsync, pinned ones too: one a crash tore is dropped at its
    first load and fetched again, and must be cached again whatever the admission policy
    thinks of it next to blocks read more often."""
    pinned = counting_source(b"P", BLOCK, delay=1.0)
    key = block_key(pinned.id, 0)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            cache.bind(nursery)
            cache.set_pinned(pinned.id, 1, True, b"/pinned")
            assert await cache.fill(pinned, 0) == BLOCK
            for i in range(60):  # a full cache of blocks read three times each
                other = counting_source(bytes([i + 1]) * 4, BLOCK)
                for _ in range(3):
                    cache.accessed(block_key(other.id, 0))
                await cache.get(other, 0)
                await cache.settle()
            cache.files.path(key).write_bytes(b"\0" * BLOCK)  # torn: its size, not its bytes
            cache._forget(key)  # (not in memory: the next read loads the file)
            newcomer = counting_source(b"N", BLOCK)
            for _ in range(5):
                cache.accessed(block_key(newcomer.id, 0))
            async with trio.open_nursery() as readers:
                readers.start_soon(cache.get, pinned, 0)
                with trio.fail_after(0.8):  # dropped; fetched again from its source (1 s)
                    while key in cache.entries:
                        await trio.sleep(0.005)
                await cache.get(newcomer, 0)  # another miss takes the room meanwhile
                await cache.settle()
            await cache.settle()
            assert key in cache.entries and cache.entries[key].pinned
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_evicting_a_source_takes_back_its_blocks_waiting_to_be_stored(cache: BlockCache
                                                                      ) -> None:
    """``tierfs evict`` right after a read: the block still waiting in the store queue came
    back a moment after the eviction."""
    source = counting_source(b"E", BLOCK // 2)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            cache.bind(nursery)
            await cache.get(source, 0)  # waiting to be stored
            await cache.evict_source(source.id, 1)
            await cache.settle()
            assert block_key(source.id, 0) not in cache.entries
            assert not list(cache.files.keys())
            # And a read after it caches the block as any read does.
            await cache.get(source, 0)
            await cache.settle()
            assert block_key(source.id, 0) in cache.entries
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_crash_while_blocks_of_another_size_are_dropped_leaves_none_to_serve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new block size is recorded only with the old blocks gone: recorded first, a crash
    half-way through the drop left old blocks that the next mount then served."""
    source = counting_source(b"S", 4 * BLOCK)
    cache_and_unmount(tmp_path, source, range(4))

    class Crash(Exception):
        pass

    deleted: list[bytes] = []

    def delete_then_crash(self: BlockFiles, key: bytes) -> None:
        if deleted:
            raise Crash
        deleted.append(key)
        os.unlink(self.path(key))

    monkeypatch.setattr(BlockFiles, "delete", delete_then_crash)
    with pytest.raises(Crash):
        open_cache(tmp_path, 2 * BLOCK)
    monkeypatch.undo()
    assert len(deleted) == 1
    check_twice_the_block_size(tmp_path, source)
