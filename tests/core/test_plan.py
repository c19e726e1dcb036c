"""Order-aware prefetch (tierfs/cache/plan.py): the plan's progress and eviction logic alone,
then plans run by the core through the ``prefetch`` control command: fetched in order, within
their bounds, skipping what is hot, counted as misses, dropped when the reader strays or
finishes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.cache.entries import Source, block_key
from tierfs.cache.eviction import LRU
from tierfs.cache.plan import Plan, PlanPolicy
from tierfs.control.commands import make_handlers
from tierfs.control.server import CommandError

from .conftest import Core, core_test, open_core

BS = 64 * 1024


def fake(n: int, size: int = 2 * BS) -> Source:
    async def fetch(start: int, length: int) -> bytes:
        raise AssertionError("not fetched in these tests")

    return Source(bytes([n]) * 16, size, "cold", fetch)


def keys_of(source: Source) -> list[bytes]:
    return [block_key(source.id, b) for b in range(source.blocks(BS))]


def test_progress_follows_reads_and_tolerates_a_little_disorder() -> None:
    plan = Plan(lag=2, stray_limit=3)
    files = [fake(n) for n in range(4)]
    for source in files:
        plan.add(source, 0, 1, BS, f"f{source.id[0]}")
    keys = [k for s in files for k in keys_of(s)]
    assert [plan.next_use(k) for k in keys] == list(range(8))
    assert plan.read(keys[1]) == [keys[1]]  # ahead of position 0: the cursor moves past it
    assert plan.cursor == 2 and plan.next_use(keys[0]) == 0  # still ahead (within the lag)
    assert plan.read(keys[0]) == [keys[0]]
    assert plan.read(keys[3]) == [keys[3]] and plan.cursor == 4
    assert plan.read(keys[5]) == [keys[5], keys[2]]  # 2 falls behind the lag, unread
    assert plan.next_use(keys[2]) is None and plan.next_use(keys[4]) == 4
    assert plan.strays == 0
    assert plan.read(block_key(b"x" * 16, 0)) == []  # not in the plan
    assert plan.read(keys[5]) == []  # read already: a stray too
    assert plan.strays == 2 and not plan.strayed
    assert plan.read(keys[6]) == [keys[6], keys[4]] and plan.strays == 0
    plan.read(b"y" * 20)
    plan.read(b"z" * 20)
    plan.read(keys[0])
    assert plan.strayed
    plan.complete = True
    assert not plan.finished
    plan.read(keys[7])
    assert plan.finished


def test_a_block_read_twice_in_the_plan_stays_planned_until_its_last_use() -> None:
    plan = Plan(lag=1, stray_limit=10)
    a, b = fake(1, BS), fake(2, BS)
    for source in (a, b, a):
        plan.add(source, 0, 0, BS, "")
    ka, kb = keys_of(a)[0], keys_of(b)[0]
    assert plan.read(ka) == [] and plan.next_use(ka) == 2
    assert plan.read(kb) == [kb]
    assert plan.read(ka) == [ka]


def test_eviction_prefers_done_then_unplanned_then_the_latest_needed() -> None:
    plan = Plan(lag=1, stray_limit=10)
    first, later, last = fake(1, BS), fake(2, BS), fake(3, BS)
    for source in (first, later, last):
        plan.add(source, 0, 0, BS, "")
    k1, k2, k3 = (keys_of(s)[0] for s in (first, later, last))
    other = block_key(b"o" * 16, 0)
    inner = LRU(10 * BS)
    for key in (k1, other, k3, k2):
        inner.insert(key, BS)
    policy = PlanPolicy(inner, plan, {k1: BS, other: BS, k3: BS, k2: BS})
    assert policy.spare == BS
    assert policy.victim() == other  # LRU alone would evict k1, read next
    policy.record(k1)  # the reader is done with it
    assert policy.victim() == k1 and policy.spare == 2 * BS
    policy.remove(k1)
    policy.remove(other)
    inner.remove(k1)  # (PlanPolicy.remove did; LRU ignores a second)
    assert policy.victim() == k3  # of the planned ones, the one needed last
    newcomer = block_key(b"n" * 16, 0)
    assert not policy.admits(newcomer, k3)  # not in the plan: not worth a planned block
    # A block a reader fetched is being read from memory: never kept at a planned one's cost.
    assert not policy.admits(k2, k3) and not policy.admits(k3, k2)
    policy.remove(k3)
    assert policy.victim() == k2
    assert len(policy) == len(inner) == 1


# -- plans run by the core -----------------------------------------------------------------


async def write_cold(core: Core, count: int, size: int) -> dict[str, bytes]:
    await core.mkdirs(b"data")
    files = {}
    for i in range(count):
        data = i.to_bytes(4, "little") + os.urandom(size - 4)
        files[f"data/f{i:03d}"] = data
        await core.write_file(f"data/f{i:03d}".encode(), data)
    for name in files:
        assert core.stub(name.encode()) is not None
    for key in list(core.fs.cache.entries):  # start cold, whatever writing left
        await core.fs.cache.evict_source(key[:16], 1 << 20)
    return files


async def ask(core: Core, request: dict[str, Any]) -> Any:
    handlers = make_handlers(core.fs, "/mnt") if not hasattr(core, "handlers") else \
        core.handlers  # type: ignore[attr-defined]
    core.handlers = handlers  # type: ignore[attr-defined]

    async def send(message: dict[str, Any]) -> None:
        pass

    return await handlers["prefetch"](request, send)


def gets(core: Core) -> list[tuple[str, int]]:
    return [(key, offset) for method, key, offset in core.store.log if method == "get_range"]


def open_plan_core(tmp_path: Path, **overrides: Any) -> Any:
    return open_core(tmp_path, large_file_threshold="4KiB", **overrides)


@core_test
async def test_a_plan_is_fetched_in_its_order_skipping_what_is_hot(tmp_path: Path) -> None:
    async with open_plan_core(tmp_path) as core:
        files = await write_cold(core, 6, 2 * BS)
        names = sorted(files)
        assert await core.read_file(names[2].encode()) == files[names[2]]  # now hot
        await core.until(lambda: core.cached_blocks() == 2)
        before = len(gets(core))
        order = [names[i] for i in (4, 1, 2, 5, 0, 3)]
        status = await ask(core, {"paths": order, "fetches": 1})
        assert status["files"] == 6 and status["blocks"] == 12 and status["missing"] == 0
        assert status["hot_at_start"] == 2 * BS
        await core.until(lambda: core.cached_blocks() == 12)
        fetched = gets(core)[before:]
        stubs = {core.cold(n.encode()).key: n for n in names}
        assert [(stubs[k], off) for k, off in fetched] == [
            (n, off) for n in order if n != names[2] for off in (0, BS)]
        hits, misses = core.counter("hits"), core.counter("misses")
        for name in order:
            assert await core.read_file(name.encode()) == files[name]
        # Fetched by the plan: misses when read; the block hot before it: hits.
        assert core.counter("misses") - misses == 10 and core.counter("hits") - hits == 2
        assert len(gets(core)) == before + 10
        status = await ask(core, {"status": True})
        assert status["ended"] == "finished" and status["position"] == 12
        assert core.fs.cache.policy.name == "tinylfu"


@core_test
async def test_a_plan_stays_within_its_bytes_and_fetches(tmp_path: Path) -> None:
    async with open_plan_core(tmp_path) as core:
        files = await write_cold(core, 12, 2 * BS)
        core.store.delay("get_range", 0.05)
        names = sorted(files)
        status = await ask(core, {"paths": names, "fetches": 2, "window": 5 * BS})
        await core.until(lambda: core.cached_blocks() == 5)
        await trio.sleep(0.7)  # the reader has not started: nothing more is fetched
        assert core.cached_blocks() == 5
        status = await ask(core, {"status": True})
        assert status["peak_fetches"] == 2 and status["peak_ahead"] == 5 * BS
        assert status["fetched"] == 5 * BS and status["active"]
        for name in names:  # reading moves the window along
            assert await core.read_file(name.encode()) == files[name]
        status = await ask(core, {"status": True})
        assert status["ended"] == "finished"
        assert status["peak_fetches"] <= 2 and status["peak_ahead"] <= 5 * BS
        assert status["fetched"] > 5 * BS


@core_test
async def test_a_plan_is_dropped_when_the_reader_strays(tmp_path: Path) -> None:
    async with open_plan_core(tmp_path) as core:
        files = await write_cold(core, 40, BS)
        names = sorted(files)
        policy = core.fs.cache.policy
        # window 1 block: stray after 32 reads outside the plan's near part
        await ask(core, {"paths": names[:4], "window": BS, "fetches": 1})
        assert core.fs.cache.policy is not policy
        for name in names[4:35]:
            await core.read_file(name.encode())
        assert (await ask(core, {"status": True}))["active"]
        await core.read_file(names[35].encode())
        status = await ask(core, {"status": True})
        assert status["ended"] == "strayed" and not status["active"]
        assert core.fs.cache.policy is policy
        assert not core.fs.cache.ahead


@core_test
async def test_a_plan_sent_in_parts_and_replaced(tmp_path: Path) -> None:
    async with open_plan_core(tmp_path) as core:
        files = await write_cold(core, 4, BS)
        names = sorted(files)
        first = await ask(core, {"paths": names[:2] + ["data/missing"], "more": True})
        assert first["missing"] == 1 and first["missing_paths"] == ["data/missing"]
        second = await ask(core, {"paths": names[2:], "plan": first["plan"]})
        assert second["plan"] == first["plan"] and second["blocks"] == 4
        assert second["complete"]
        await core.until(lambda: core.cached_blocks() == 4)
        third = await ask(core, {"paths": names[::-1]})
        assert third["plan"] == first["plan"] + 1
        with pytest.raises(CommandError, match="not running"):
            await ask(core, {"paths": names, "plan": first["plan"]})
        stopped = await ask(core, {"stop": True})
        assert stopped["ended"] == "stopped"


@core_test
async def test_an_empty_plan_ends_at_once(tmp_path: Path) -> None:
    async with open_plan_core(tmp_path) as core:
        policy = core.fs.cache.policy
        status = await ask(core, {"paths": ["missing"]})
        assert status["ended"] == "finished" and status["missing"] == 1
        assert core.fs.cache.policy is policy


@core_test
async def test_a_reader_catching_up_with_the_plan_shares_its_fetch(tmp_path: Path) -> None:
    async with open_plan_core(tmp_path) as core:
        files = await write_cold(core, 2, BS)
        names = sorted(files)
        core.store.delay("get_range", 0.3)
        before = len(gets(core))
        await ask(core, {"paths": names, "fetches": 2})
        await core.until(lambda: len(gets(core)) == before + 2)
        hits, misses = core.counter("hits"), core.counter("misses")
        for name in names:  # while the plan's GETs are under way
            assert await core.read_file(name.encode()) == files[name]
        assert len(gets(core)) == before + 2  # one GET per block
        assert core.counter("misses") - misses == 2 and core.counter("hits") == hits
        await core.until(lambda: core.cached_blocks() == 2)


@core_test
async def test_a_plan_starting_in_a_full_cache_fetches_its_next_blocks_into_memory(
        tmp_path: Path) -> None:
    # The cache is full of blocks the plan reads: no room that costs no planned block. The
    # missing blocks of the next URGENT positions are still fetched at once, into memory only,
    # evicting nothing; the reader gets them from there (misses) without a GET of its own.
    async with open_plan_core(tmp_path, cache_high_watermark=0.1,
                              cache_low_watermark=0.1) as core:
        cache = core.fs.cache
        count = cache.high // (2 * BS)
        files = await write_cold(core, count + 2, 2 * BS)
        names = sorted(files)
        hot, cold = names[:count], names[count:]

        def source(name: str) -> Source:
            return core.fs.reads.cold_source(core.stub(name.encode()))

        for name in hot:  # (as ``tierfs warm`` does: reads may serve blocks without caching)
            for block in range(2):
                await cache.fill(source(name), block)
        assert core.cached_blocks() == 2 * count
        assert cache.high - cache.used < BS
        evictions = core.counter("evictions")
        before = len(gets(core))
        order = [cold[0], hot[0], cold[1], *hot[1:]]  # cold[1] at positions 4 and 5
        await ask(core, {"paths": order})
        await core.until(lambda: len(gets(core)) == before + 4)
        await trio.sleep(0.3)  # nothing else is fetched, nothing evicted
        assert len(gets(core)) == before + 4
        assert core.counter("evictions") == evictions
        assert core.cached_blocks() == 2 * count
        hits, misses = core.counter("hits"), core.counter("misses")
        for name in order[:3]:  # in requests smaller than a block, as the kernel's may be
            fh = await core.open(name.encode())
            assert await core.read_all(fh, chunk=BS // 4) == files[name]
            await core.fs.release(fh)
        assert core.counter("misses") - misses == 4 and core.counter("hits") - hits == 2
        stubs = {core.cold(n.encode()).key: n for n in names}
        fetched = [stubs[k] for k, _ in gets(core)[before:]]
        assert fetched.count(cold[0]) == 2 and fetched.count(cold[1]) == 2
        # Not written to the hot tier either, over the blocks the plan is done with (hot[0]'s,
        # read): those are the room its next fetches to the hot tier count on.
        await trio.sleep(0.3)
        assert not any(cache.on_hot_tier(key) for name in cold for key in keys_of(source(name)))
        assert all(cache.on_hot_tier(key) for name in hot[1:] for key in keys_of(source(name)))
