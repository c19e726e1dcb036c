"""The first read of a warm file not cached yet, with warm caching on: what its reader waits
for. A file of one block whose open was answered from memory is opened and read in one warm
call, and that block is cached under the version opened, never the one looked up."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import ROOT, core_test, open_core, rewrite_in_place

BS = 64 * 1024  # block_size in the core's configuration (conftest)


@core_test
async def test_an_uncached_small_file_is_opened_and_read_in_one_warm_call(tmp_path: Path
                                                                          ) -> None:
    data = random.Random(1).randbytes(BS // 2)
    async with open_core(tmp_path, cache_warm=True) as core:
        core.warm_path(b"f").write_bytes(data)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        calls = core.count_warm_calls()
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.fs.read(fh, 0, BS) == data
        assert calls["calls"] == 1  # the open and the block's fetch together
        await core.fs.release(fh)
        await core.until(lambda: core.cached_blocks() == 1)
        assert core.counter("fetches_warm") == 1
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.fs.read(fh, 0, BS) == data
        await core.fs.release(fh)
        assert calls["calls"] <= 2  # (the lookup may ask the tier; the read does not)


@core_test
async def test_a_file_of_one_block_read_from_its_middle_first(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(BS)
    async with open_core(tmp_path, cache_warm=True) as core:
        core.warm_path(b"f").write_bytes(data)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.fs.read(fh, BS // 2, BS) == data[BS // 2:]
        assert await core.fs.read(fh, 0, BS // 2) == data[:BS // 2]
        await core.fs.release(fh)


@core_test
async def test_a_small_file_replaced_after_its_lookup_is_stale_and_nothing_is_cached(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, cache_warm=True) as core:
        core.warm_path(b"f").write_bytes(b"old content")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        new = core.warm_path(b"f.tmp")
        new.write_bytes(b"new content, longer")
        os.rename(new, core.warm_path(b"f"))  # as another node publishes
        with pytest.raises(OSError) as raised:
            await core.fs.read(fh, 0, 4096)
        assert raised.value.errno == errno.ESTALE
        await core.fs.release(fh)
        await trio.sleep(0.1)
        assert core.cached_blocks() == 0
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.read_all(fh) == b"new content, longer"
        await core.fs.release(fh)


@core_test
async def test_a_small_file_changed_in_place_after_its_lookup_is_cached_as_opened(
        tmp_path: Path) -> None:
    """Changed in place (the same inode) before any byte was served: read as it is now, as
    any open file is, and its block cached under that version: an open answered from the old
    lookup's attributes never gets it."""
    old, new = b"o" * 100, b"n" * 200
    async with open_core(tmp_path, cache_warm=True) as core:
        path = core.warm_path(b"f")
        path.write_bytes(old)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        rewrite_in_place(path, new)
        assert await core.read_all(fh) == new
        await core.fs.release(fh)
        await core.until(lambda: core.cached_blocks() == 1)
        path.write_bytes(old)  # back to the old size, another mtime and ctime
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.read_all(fh) == old
        await core.fs.release(fh)


@core_test
async def test_a_large_warm_block_is_fetched_in_parts_at_once(tmp_path: Path) -> None:
    """One pread of a whole block keeps only the warm client's read-ahead window in flight:
    a block of several parts is read in parts, in warm calls running together, and its bytes
    come out whole and in order."""
    from tierfs.vfs.reads import WARM_PART, _read_of

    size = 4 * WARM_PART
    data = random.Random(3).randbytes(size)
    async with open_core(tmp_path, cache_warm=True, block_size=size,
                         read_memory=4 * size, hot_capacity=8 * size) as core:
        core.warm_path(b"f").write_bytes(data)
        warm = core.fs.warm
        inner = warm.run
        running = {"now": 0, "most": 0, "preads": 0}

        async def counted(fn: Any, *args: object) -> Any:
            if fn in (os.pread, os.preadv, _read_of):
                running["preads"] += 1
                running["now"] += 1
                running["most"] = max(running["most"], running["now"])
                try:
                    await trio.sleep(0.01)  # (a network's round trip: the others start)
                    return await inner(fn, *args)
                finally:
                    running["now"] -= 1
            return await inner(fn, *args)

        warm.run = counted  # type: ignore[method-assign]
        assert await core.read_file(b"f") == data
        assert running["most"] >= 2
        await core.until(lambda: core.cached_blocks() == 1)
        assert core.counter("fetches_warm") == 1
