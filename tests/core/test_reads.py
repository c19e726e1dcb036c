"""Reads through the block cache: a cold file's blocks are fetched once and then served from
the hot tier, a changed object (new ETag) is never served from old blocks, and readers of one
block at once share one GET (counted by the fault store)."""

from __future__ import annotations

import dataclasses
import errno
import os
import random
from pathlib import Path

import pytest
import trio

from .conftest import ROOT, Core, core_test, open_core

BS = 64 * 1024  # block_size in the core's configuration (conftest)
SMALL = "64KiB"  # the threshold: a file of a block or more is cold


def content(n: int, seed: int = 5) -> bytes:
    return random.Random(seed).randbytes(n)


async def cold_file(core: Core, path: bytes, data: bytes) -> None:
    """A cold file none of whose blocks are cached (written through the mount, they would be)."""
    await core.write_file(path, data)
    assert core.stub(path) is not None, "the file should be cold"
    await core.evict(path)
    assert core.cached_blocks() == 0


@core_test
async def test_cold_blocks_are_fetched_once_then_hit(tmp_path: Path) -> None:
    data = content(5 * BS)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        gets = core.store.calls["get_range"]
        assert await core.read_file(b"f") == data
        assert core.store.calls["get_range"] - gets == 5
        await core.until(lambda: core.cached_blocks() == 5)
        hits = core.counter("hits")
        assert await core.read_file(b"f") == data
        assert core.store.calls["get_range"] - gets == 5  # no GET the second time
        assert core.counter("hits") - hits == 5


@core_test
async def test_cached_blocks_outlive_a_restart(tmp_path: Path) -> None:
    data = content(3 * BS + 100)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        assert await core.read_file(b"f") == data
        await core.until(lambda: core.cached_blocks() == 4)
        store = core.store
    gets = store.calls["get_range"]
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert again.cached_blocks() == 4
        assert await again.read_file(b"f") == data
        assert store.calls["get_range"] == gets
        assert again.counter("fetches_hot") >= 1


@core_test
async def test_rewritten_file_is_never_read_from_old_blocks(tmp_path: Path) -> None:
    one, two = content(2 * BS, seed=1), content(2 * BS, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", one)
        assert await core.read_file(b"f") == one
        await core.until(lambda: core.cached_blocks() == 2)
        await core.write_file(b"f", two)
        assert await core.read_file(b"f") == two


@core_test
async def test_object_and_stub_replaced_by_another_node(tmp_path: Path) -> None:
    one, two = content(2 * BS, seed=1), content(2 * BS, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", one)
        assert await core.read_file(b"f") == one
        await core.until(lambda: core.cached_blocks() == 2)
        old = core.cold(b"f")
        info = core.store.inner.put(old.key, two)  # another node's new object and stub
        assert info.etag != old.etag
        core.put_stub(b"f", dataclasses.replace(old, etag=info.etag))
        gets = core.store.calls["get_range"]
        assert await core.read_file(b"f") == two
        assert core.store.calls["get_range"] - gets == 2


@core_test
async def test_object_changed_under_its_stub_is_an_error_not_its_bytes(tmp_path: Path
                                                                      ) -> None:
    one, two = content(2 * BS, seed=1), content(2 * BS, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", one)
        fh = await core.open(b"f")
        core.store.inner.put("f", two)  # the stub still names the old ETag
        for offset in (0, BS + 7):
            with pytest.raises(OSError) as e:
                await core.fs.read(fh, offset, 100)
            assert e.value.errno == errno.EIO
        await core.fs.release(fh)
        assert core.cached_blocks() == 0


@core_test
async def test_concurrent_readers_of_one_block_share_one_get(tmp_path: Path) -> None:
    data = content(BS)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        core.store.delay("get_range", 0.3)
        handles = [await core.open(b"f") for _ in range(4)]
        results: list[bytes] = []

        async def reader(fh: int) -> None:
            results.append(bytes(await core.fs.read(fh, 0, BS)))

        async with trio.open_nursery() as nursery:
            for fh in handles:
                nursery.start_soon(reader, fh)
        assert results == [data] * 4
        assert core.store.gets_at("f", 0) == 1
        for fh in handles:
            await core.fs.release(fh)


@core_test
async def test_concurrent_readers_inside_a_larger_file(tmp_path: Path) -> None:
    data = content(6 * BS)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        core.store.delay("get_range", 0.2)
        handles = [await core.open(b"f") for _ in range(3)]
        results: dict[int, bytes] = {}

        async def reader(fh: int) -> None:
            results[fh] = bytes(await core.fs.read(fh, 3 * BS + 10, 1000))

        async with trio.open_nursery() as nursery:
            for fh in handles:
                nursery.start_soon(reader, fh)
        assert all(r == data[3 * BS + 10:3 * BS + 1010] for r in results.values())
        assert len(results) == 3
        assert core.store.gets_at("f", 3 * BS) == 1
        for fh in handles:
            await core.fs.release(fh)


@core_test
async def test_failed_get_is_an_error_and_not_remembered(tmp_path: Path) -> None:
    data = content(BS)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        core.store.fail_nth("get_range", 1)
        fh = await core.open(b"f")
        with pytest.raises(OSError) as e:
            await core.fs.read(fh, 0, 100)
        assert e.value.errno == errno.EIO
        assert await core.fs.read(fh, 0, BS) == data
        await core.fs.release(fh)
        assert core.store.calls["get_range"] == 2


@core_test
async def test_reads_at_any_offset_match_the_object(tmp_path: Path) -> None:
    data = content(5 * BS + 1234)
    rng = random.Random(11)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        fh = await core.open(b"f")
        for _ in range(60):
            offset = rng.randrange(0, len(data) + 100)
            size = rng.choice([1, 100, BS - 1, BS, BS + 1, 3 * BS])
            got = bytes(await core.fs.read(fh, offset, size))
            assert got == data[offset:offset + size], (offset, size)
        await core.fs.release(fh)
        # every block fetched at most once, whatever the order of the requests
        assert all(core.store.gets_at("f", b * BS) <= 1 for b in range(6))


@core_test
async def test_warm_blocks_are_cached_when_warm_caching_is_on(tmp_path: Path) -> None:
    data = content(3 * BS)
    async with open_core(tmp_path, cache_warm=True) as core:
        await core.write_file(b"w", data)
        assert core.stub(b"w") is None
        assert await core.read_file(b"w") == data
        assert core.counter("fetches_warm") == 3
        await core.until(lambda: core.cached_blocks() == 3)
        assert await core.read_file(b"w") == data
        assert core.counter("fetches_warm") == 3


@core_test
async def test_warm_file_replaced_by_another_node_is_not_read_stale(tmp_path: Path) -> None:
    one, two = content(2 * BS, seed=1), content(2 * BS, seed=2)
    async with open_core(tmp_path, cache_warm=True) as core:
        await core.write_file(b"w", one)
        assert await core.read_file(b"w") == one
        await core.until(lambda: core.cached_blocks() == 2)
        p = core.warm_path(b"w")
        st = p.stat()
        tmp = p.with_name("other-node-temp")
        tmp.write_bytes(two)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime as before
        os.rename(tmp, p)
        assert await core.read_file(b"w") == two


@core_test
async def test_counters_continue_across_a_restart(tmp_path: Path) -> None:
    data = content(2 * BS)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        assert await core.read_file(b"f") == data
        misses = core.counter("misses")
        assert misses == 2
        await core.until(lambda: core.cached_blocks() == 2)
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert again.counter("misses") == misses
        assert await again.read_file(b"f") == data
        assert again.counter("misses") == misses  # from the hot tier now
        assert again.counter("hits") >= 2


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "file://{root}/cold/../secret"],
                         ids=["outside", "dotdot"])
@core_test
async def test_stub_pointing_outside_the_bucket_is_never_followed(tmp_path: Path, uri: str
                                                                   ) -> None:
    secret = b"not for this mount"
    (tmp_path / "secret").write_bytes(secret)
    async with open_core(tmp_path) as core:
        target = ("tierfs:v1?uri=" + uri.format(root=tmp_path)
                  + "&size=18&etag=x&mode=0644&mtime_ns=0").encode()
        os.symlink(target, core.warm_path(b"evil"))
        await core.write_file(b"good", b"fine")
        dh = await core.fs.opendir(ROOT)  # the bad stub is refused alone
        names = [e.name for _, e in await core.fs.readdir(dh, 0)]
        await core.fs.releasedir(dh)
        assert b"good" in names
        assert await core.read_file(b"good") == b"fine"
        try:
            evil = await core.lookup_path(b"evil")
        except OSError:
            return  # refused outright
        try:
            fh, _, _ = await core.fs.open(evil.ino, os.O_RDONLY)
        except OSError:
            return
        try:
            got = bytes(await core.fs.read(fh, 0, 100))
        except OSError:
            got = b""
        await core.fs.release(fh)
        assert secret not in got and b"root:" not in got
