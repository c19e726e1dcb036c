"""Order-aware prefetch over a dataset larger than the cache: a block the plan reads once more
and is then done with is handed to its reader from memory, not stored on the hot tier over a
block the plan is done with (tierfs/cache/plan.py, ``_feed`` and ``PlanPolicy.admits``), and
the memory pool keeps such blocks until their reader has used them (``BlockCache._remember``).
"""

from __future__ import annotations

from pathlib import Path

import trio

from tierfs.cache.entries import Source, block_key
from tierfs.cache.eviction import LRU
from tierfs.cache.plan import Plan, PlanPolicy

from .conftest import core_test
from .test_plan import BS, ask, fake, gets, keys_of, open_plan_core, write_cold


def test_a_block_read_once_more_is_not_stored_over_a_block_the_plan_is_done_with() -> None:
    plan = Plan(lag=1, stray_limit=10)
    read, once, twice = fake(1, BS), fake(2, BS), fake(3, BS)
    for source in (read, twice, once, twice):
        plan.add(source, 0, 0, BS, "")
    kr, ko, kt = (keys_of(s)[0] for s in (read, once, twice))
    other = block_key(b"o" * 16, 0)
    inner = LRU(10 * BS)
    inner.insert(kr, BS)
    policy = PlanPolicy(inner, plan, {kr: BS})
    policy.record(kr)
    assert policy.victim() == kr  # done with
    # A reader's own fetch of a block read once: not worth the write; one read twice, or
    # a block outside the plan, is.
    assert not policy.admits(ko, kr)
    assert policy.admits(kt, kr) and policy.admits(other, kr)
    policy.record(kt)  # read once of twice: once more to go
    assert not policy.admits(kt, kr)


@core_test
async def test_a_plan_over_a_full_cache_streams_what_it_reads_once(tmp_path: Path) -> None:
    # The cache is full of blocks the plan reads first; the blocks after them are read once
    # and then done with. They are fetched ahead into memory, beyond the first URGENT
    # positions too, and handed to the reader from there (misses, one GET each): never written
    # to the hot tier, so the blocks hot at the start stay, none evicted.
    async with open_plan_core(tmp_path, cache_high_watermark=0.1,
                              cache_low_watermark=0.1) as core:
        cache = core.fs.cache
        count = cache.high // (2 * BS)
        files = await write_cold(core, count + 6, 2 * BS)
        names = sorted(files)
        hot, cold = names[:count], names[count:]
        assert 2 * count > 8  # the cold blocks are past the plan's first URGENT positions

        def source(name: str) -> Source:
            return core.fs.reads.cold_source(core.stub(name.encode()))

        for name in hot:
            for block in range(2):
                await cache.fill(source(name), block)
        assert cache.high - cache.used < BS
        evictions, stored = core.counter("evictions"), core.counter("stored")
        before = len(gets(core))
        await ask(core, {"paths": hot + cold})
        await core.until(lambda: len(gets(core)) == before + 2 * len(cold), timeout=5)
        hits, misses = core.counter("hits"), core.counter("misses")
        for name in hot + cold:
            fh = await core.open(name.encode())
            assert await core.read_all(fh, chunk=BS // 4) == files[name]
            await core.fs.release(fh)
        assert core.counter("misses") - misses == 2 * len(cold)
        assert core.counter("hits") - hits == 2 * count
        assert len(gets(core)) == before + 2 * len(cold)
        status = await ask(core, {"status": True})
        assert status["ended"] == "finished" and status["fetched"] == 2 * len(cold) * BS
        await trio.sleep(0.3)  # (any background store would be done)
        assert core.counter("evictions") == evictions and core.counter("stored") == stored
        assert not any(cache.on_hot_tier(key) for name in cold for key in keys_of(source(name)))
        assert all(cache.on_hot_tier(key) for name in hot for key in keys_of(source(name)))


@core_test
async def test_the_memory_pool_keeps_a_planned_block_until_it_is_read(tmp_path: Path) -> None:
    async with open_plan_core(tmp_path, block_size="4MiB", read_memory="16MiB") as core:
        cache = core.fs.cache  # room in memory for four blocks
        files = await write_cold(core, 7, 4 << 20)
        sources = [core.fs.reads.cold_source(core.stub(name.encode())) for name in sorted(files)]
        planned, used = (block_key(s.id, 0) for s in sources[:2])
        cache.unstored.update((planned, used))  # fetched by a plan into memory only
        for s in sources[:2]:
            await cache.get(s, 0)
        cache.accessed(used)  # its reader has it
        for s in sources[2:]:  # the reader's other blocks fill the pool, and more
            await cache.get(s, 0)
        assert cache.loaded(planned)  # older than all of them, and still there
        assert not cache.loaded(used)
