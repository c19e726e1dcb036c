"""Written files stay hot: a file published to the bucket leaves its staged bytes as cached
blocks of the new object, so reading it back costs no GET; within the cache's capacity; never
served for another version; safe across a crash."""

from __future__ import annotations

import os
from pathlib import Path

from tierfs.cache.entries import ID_BYTES, cold_source_id

from .conftest import MIB, PART, ROOT, Core, core_test, open_core
from .test_streaming import SMALL, content, open_short

BLOCK = 64 * 1024  # open_core's block_size


def gets(core: Core) -> int:
    return core.store.calls["get_range"]


def blocks_of(core: Core, path: bytes) -> list[bytes]:
    """The cache's blocks of the object a path's stub names now."""
    stub = core.cold(path)
    source = cold_source_id(str(core.fs.config.bucket), stub.key, stub.etag, stub.size)
    return core.fs.cache.entries.of_source(source)


async def read_counted(core: Core, path: bytes) -> tuple[bytes, int, int, int]:
    """A file's bytes, and the GETs, hits and misses reading it took."""
    g, h, m = gets(core), core.counter("hits"), core.counter("misses")
    data = await core.read_file(path)
    return data, gets(core) - g, core.counter("hits") - h, core.counter("misses") - m


@core_test
async def test_file_written_to_the_bucket_reads_back_from_the_hot_tier(tmp_path: Path) -> None:
    data = content(2 * PART + 300_000, seed=3)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"big", data)
        assert core.objects() == {"big": data} and core.staged() == []
        nblocks = -(-len(data) // BLOCK)
        assert len(blocks_of(core, b"big")) == nblocks
        assert core.counter("kept_written") == nblocks
        assert core.counter("bytes_kept_written") == len(data)
        assert core.fs.cache.used == len(data)
        got, n_gets, hits, misses = await read_counted(core, b"big")
        assert got == data
        assert n_gets == 0 and misses == 0 and hits == nblocks
        assert core.counter("fetches_cold") == 0
        # The blocks are the cache's like any other: they survive a remount.
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        got, n_gets, _, misses = await read_counted(again, b"big")
        assert got == data and n_gets == 0 and misses == 0


@core_test
async def test_a_cache_too_small_keeps_the_beginning_and_stays_within(tmp_path: Path) -> None:
    data = content(2 * PART + 300_000, seed=4)
    # 64 MiB, eviction from 6.4 MiB on: room for fewer blocks than the file has.
    async with open_core(tmp_path, large_file_threshold=SMALL, cache_high_watermark=0.1,
                         cache_low_watermark=0.1) as core:
        high = core.fs.cache.high
        assert high < len(data)
        await core.write_file(b"big", data)
        kept = blocks_of(core, b"big")
        assert len(kept) == high // BLOCK and core.fs.cache.used <= high
        # the first blocks, in order
        assert [int.from_bytes(k[ID_BYTES:], "big") for k in kept] == list(range(len(kept)))
        assert core.counter("bytes_kept_written") == len(kept) * BLOCK
        assert core.staged() == [] and os.listdir(core.fs.cache.files.tmp) == []
        got, n_gets, hits, misses = await read_counted(core, b"big")
        assert got == data
        assert n_gets > 0 and hits == len(kept) and misses == -(-len(data) // BLOCK) - len(kept)
        assert core.fs.cache.used <= high


@core_test
async def test_written_blocks_do_not_push_out_blocks_read_more_often(tmp_path: Path) -> None:
    often = content(6 * MIB, seed=5)
    data = content(2 * PART + 300_000, seed=6)
    async with open_core(tmp_path, large_file_threshold=SMALL, cache_high_watermark=0.1,
                         cache_low_watermark=0.1) as core:
        cache = core.fs.cache
        await core.write_file(b"often", often)
        for _ in range(2):
            assert await core.read_file(b"often") == often
        before = set(blocks_of(core, b"often"))
        assert len(before) == len(often) // BLOCK
        await core.write_file(b"big", data)
        # Only what fits beside them: each victim was read more often than the newcomer.
        kept = blocks_of(core, b"big")
        assert len(kept) == (cache.high - len(often)) // BLOCK
        assert set(blocks_of(core, b"often")) == before
        assert cache.used <= cache.high
        got, n_gets, _, _ = await read_counted(core, b"big")
        assert got == data and n_gets > 0


@core_test
async def test_a_rewrite_never_reads_the_old_versions_blocks(tmp_path: Path) -> None:
    first = content(PART + 300_000, seed=6)
    second = content(PART + 300_000, seed=7)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"big", first)
        old = core.cold(b"big")
        await core.write_file(b"big", second)  # O_TRUNC: same key, same size, a new object
        new = core.cold(b"big")
        assert new.key == old.key and new.etag != old.etag
        got, n_gets, _, misses = await read_counted(core, b"big")
        assert got == second and n_gets == 0 and misses == 0
        # Changed in place (staged whole from the object, one block changed): a new version.
        fh = await core.open(b"big", os.O_WRONLY)
        await core.fs.write(fh, 3 * BLOCK + 10, b"x" * 100)
        await core.close(fh)
        third = second[:3 * BLOCK + 10] + b"x" * 100 + second[3 * BLOCK + 110:]
        assert core.cold(b"big").etag not in (old.etag, new.etag)
        got, n_gets, _, misses = await read_counted(core, b"big")
        assert got == third and n_gets == 0 and misses == 0


@core_test
async def test_parts_punched_out_of_staging_are_not_kept(tmp_path: Path) -> None:
    data = content(3 * PART + MIB, seed=8)
    # A hot tier under the reserve of the window: uploaded parts leave staging at once.
    async with open_short(tmp_path, "24m", large_file_threshold=SMALL) as core:
        fh = await core.create(b"big")
        await core.write_all(fh, data)
        upload = (await core.lookup_path(b"big")).data.upload
        await core.until(lambda: 1 in upload.gone)
        await core.close(fh)
        kept = {int.from_bytes(k[ID_BYTES:], "big") for k in blocks_of(core, b"big")}
        punched = {n for n in range(-(-len(data) // BLOCK)) if n * BLOCK < PART}
        assert kept and not kept & punched  # what was still staged is kept
        got, _, _, _ = await read_counted(core, b"big")
        assert got == data


@core_test
async def test_writeback_crash_after_close_recovers_right_bytes(tmp_path: Path) -> None:
    data = content(2 * PART + 300_000, seed=9)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")  # closed, not yet home
        await core.write_file(b"big", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        store = core.store
        core.crash()
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.objects() == {"big": data} and again.staged() == []
        # Every part recorded before the crash may have been punched out of staging: none of
        # them is kept (here all of the file).
        assert again.fs.cache.used == 0
        got, _, _, _ = await read_counted(again, b"big")
        assert got == data


@core_test
async def test_crash_after_the_blocks_are_made_keeps_index_and_files_agreeing(
        tmp_path: Path) -> None:
    data = content(2 * PART + 300_000, seed=10)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"big", data)
        assert core.fs.cache.entries
        store = core.store
        core.crash()  # the entries never reached the index: their files are dropped
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        cache = again.fs.cache
        assert set(cache.files.keys()) == set(cache.entries)
        assert os.listdir(cache.files.tmp) == []
        got, _, _, _ = await read_counted(again, b"big")
        assert got == data


@core_test
async def test_warm_file_published_by_copy_reads_back_from_its_cached_blocks(
        tmp_path: Path) -> None:
    data = content(300_000, seed=11)
    async with open_core(tmp_path, by_rename=False, cache_warm=True) as core:
        await core.write_file(b"w", data)
        assert not core.warm_path(b"w").is_symlink() and core.staged() == []
        nblocks = -(-len(data) // BLOCK)
        assert core.counter("kept_written") == nblocks
        fetched = core.counter("fetches_warm")
        got, _, hits, misses = await read_counted(core, b"w")
        assert got == data and misses == 0 and hits == nblocks
        assert core.counter("fetches_warm") == fetched
        # Rewritten: the new version's blocks, never the old ones.
        second = content(300_000, seed=12)
        await core.write_file(b"w", second)
        got, _, _, misses = await read_counted(core, b"w")
        assert got == second and misses == 0
        # Changed on the warm tier behind tierfs (another node): another version, read there.
        third = content(300_000, seed=13)
        core.warm_path(b"w").write_bytes(third)
        got, _, _, misses = await read_counted(core, b"w")
        assert got == third and misses == nblocks


@core_test
async def test_warm_staging_changed_after_its_publish_is_not_kept(tmp_path: Path) -> None:
    data = content(300_000, seed=14)
    async with open_core(tmp_path, by_rename=False, cache_warm=True) as core:
        fh = await core.create(b"w")
        await core.write_all(fh, data)
        await core.fs.flush(fh)  # published by copy; the writer goes on
        await core.fs.write(fh, 0, b"changed")
        await core.fs.unlink(ROOT, b"w")  # nothing to publish: staging is not the warm file
        await core.close(fh)
        assert core.counter("kept_written") == 0 and core.fs.cache.used == 0
        assert core.staged() == [] and os.listdir(core.fs.cache.files.tmp) == []


@core_test
async def test_warm_file_with_caching_off_keeps_nothing(tmp_path: Path) -> None:
    async with open_core(tmp_path, by_rename=False) as core:
        await core.write_file(b"w", content(300_000, seed=15))
        assert core.counter("kept_written") == 0 and core.staged() == []


@core_test
async def test_entries_reach_the_index_with_the_next_batch_and_survive_a_crash(
        tmp_path: Path) -> None:
    data = content(2 * PART + 300_000, seed=16)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"big", data)
        await core.fs.save_index()
        store = core.store
        core.crash()  # nothing more committed
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert again.fs.cache.used == len(data)
        got, n_gets, _, misses = await read_counted(again, b"big")
        assert got == data and n_gets == 0 and misses == 0


@core_test
async def test_kept_blocks_a_crash_tore_are_fetched_again(tmp_path: Path) -> None:
    """Kept blocks are not fsynced (they are copies of bytes already home): after a system
    crash one may be cut short, emptied or hold zeros where its bytes never reached the disk,
    under an entry the index holds. Each fails its size or checksum at its first load and is
    fetched from the bucket; the file reads back whole."""
    data = content(2 * PART + 300_000, seed=17)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"big", data)
        await core.fs.save_index()
        store = core.store
        keys = sorted(blocks_of(core, b"big"))
        files = core.fs.cache.files
        core.crash()
    torn = {keys[0]: b"", keys[1]: b"\0" * BLOCK, keys[-1]: data[:100]}
    for key, body in torn.items():
        files.path(key).write_bytes(body)
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        got, n_gets, _, misses = await read_counted(again, b"big")
        assert got == data
        assert n_gets >= 1 and misses == len(torn)
        assert again.counter("bad_blocks") == len(torn)
        got, n_gets, _, misses = await read_counted(again, b"big")  # cached again
        assert got == data and n_gets == 0 and misses == 0
