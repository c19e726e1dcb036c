"""A read through the block cache that spans several blocks fetches them one after another.
If, while it waits for one, another handle on this node writes or truncates the file and
closes it, the publish makes the file another version (a warm file: the readers' descriptor
of the old version is dropped; a cold file: the old object is deleted). The read then failed
with ESTALE (warm) or EIO (cold), where a read racing a write on a local disk returns one
version's bytes; it is now made again from what the file is.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import trio

from core.conftest import SetAttr, core_test, open_core
from tierfs.vfs.reads import _read_of

BS = 64 * 1024


async def _race(tmp_path: Path, change: str) -> None:
    data = random.Random(1).randbytes(8 * BS)
    async with open_core(tmp_path, cache_warm=True) as core:
        core.warm_path(b"f").write_bytes(data)
        fh_r = await core.open(b"f")
        # A first small read opens the warm file and makes the block-cache reader.
        assert bytes(await core.fs.read(fh_r, 0, 10)) == data[:10]
        await trio.sleep(0.2)  # (its read-ahead of block 1 is done)
        warm = core.fs.warm
        inner = warm.run
        in_block_4 = trio.Event()
        gate = trio.Event()

        async def slow(fn: Any, *args: Any) -> Any:
            # A slow warm tier: the pread of block 4 takes a while.
            if fn is _read_of and args[2] == 4 * BS and not gate.is_set():
                in_block_4.set()
                await gate.wait()
            return await inner(fn, *args)

        warm.run = slow  # type: ignore[method-assign]
        result: dict[str, Any] = {}

        async def reader() -> None:
            try:
                result["got"] = bytes(await core.fs.read(fh_r, 4 * BS, 4 * BS))
            except OSError as e:
                result["error"] = e

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await in_block_4.wait()
            fh_w = await core.open(b"f", os.O_WRONLY)
            if change == "write":
                assert await core.fs.write(fh_w, 0, b"X") == 1  # stages the file
            else:  # ftruncate(2): stages the file too
                inode = await core.lookup_path(b"f")
                await core.fs.setattr(inode.ino, SetAttr(size=8 * BS - 1))
            # The writer's close publishes (sync mode): the file's warm version changes,
            # and the readers' descriptor of the old version is dropped.
            await core.close(fh_w)
            gate.set()
        await core.fs.release(fh_r)
        assert "error" not in result, (
            f"the read failed with {result['error']!r} ({type(result['error']).__name__}, "
            f"errno {errno.errorcode.get(result['error'].errno)}) because another handle "
            "wrote and closed the file while it read")
        # One version's bytes, whichever: the write left blocks 4 to 7 as they were, the
        # truncate cut the last byte.
        assert result["got"] in (data[4 * BS:], data[4 * BS:8 * BS - 1])


@core_test
async def test_a_read_waiting_for_a_block_as_another_handle_writes_and_closes_gets_bytes(tmp_path: Path) -> None:
    await _race(tmp_path, "write")


@core_test
async def test_a_read_waiting_for_a_block_as_another_handle_truncates_and_closes_gets_bytes(tmp_path: Path) -> None:
    await _race(tmp_path, "truncate")


async def _cold_race(tmp_path: Path, seed: int, held: int, length: int,
                     read_ahead: bool) -> None:
    """A read of blocks ``held``.. (``length`` bytes) of a cold file waits for the GET of
    block ``held``, its own (or, ``read_ahead``, one a read-ahead started), while another
    handle rewrites the file and closes it: the publish deletes the object the GET reads."""
    data = random.Random(seed).randbytes(8 * BS)
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.write_file(b"f", data)
        assert core.stub(b"f") is not None, "not cold: the test would test nothing"
        await core.evict(b"f")  # (its written bytes were kept as cached blocks)
        c = core.fs.core
        inner = c.get_object
        in_held = trio.Event()
        gate = trio.Event()

        async def slow(stub: Any, offset: int, size: int) -> bytes:
            # A slow bucket: the GET of the block held takes a while.
            if offset == held * BS and not gate.is_set():
                in_held.set()
                await gate.wait()
            return await inner(stub, offset, size)

        fh_r = await core.open(b"f")
        if not read_ahead:
            assert bytes(await core.fs.read(fh_r, 0, 10)) == data[:10]
            await trio.sleep(0.2)  # (its read-ahead is done)
        c.get_object = slow  # type: ignore[method-assign]
        if read_ahead:
            # Block 0, and a read-ahead of block 1 (a read from the start: sequential).
            assert bytes(await core.fs.read(fh_r, 0, 10)) == data[:10]
            await in_held.wait()  # (the read-ahead's GET is under way)
        result: dict[str, Any] = {}

        async def reader() -> None:
            try:
                result["got"] = bytes(await core.fs.read(fh_r, held * BS, length))
            except OSError as e:
                result["error"] = e

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            if read_ahead:
                await trio.sleep(0.05)  # (the read waits for the read-ahead's load)
            else:
                await in_held.wait()
            fh_w = await core.open(b"f", os.O_RDWR)
            assert await core.fs.write(fh_w, 0, b"X") == 1  # downloads and stages it
            await core.close(fh_w)  # publishes a new object, deletes the old one
            gate.set()
        await core.fs.release(fh_r)
        assert "error" not in result, (
            f"the read failed with {result['error']!r} ({type(result['error']).__name__}) "
            "because another handle rewrote the file while it read")
        assert result["got"] == data[held * BS:held * BS + length]


@core_test
async def test_a_read_of_a_cold_file_waiting_for_a_block_as_it_is_rewritten_gets_bytes(
        tmp_path: Path) -> None:
    """The same with a cold file: the read's next block is a GET of the object the rewrite's
    publish has just deleted (its stub replaced), which failed with EIO."""
    await _cold_race(tmp_path, 2, held=4, length=4 * BS, read_ahead=False)


@core_test
async def test_a_read_waiting_on_a_read_ahead_of_a_cold_file_being_rewritten_gets_bytes(
        tmp_path: Path) -> None:
    """The read shares a read-ahead's load of its block (``BlockCache.get``), which fails
    with VersionChanged: the error that reaches the read must still be one, not a plain
    OSError (``cache.flight.shared_error`` rebuilt it so, and the read failed with ESTALE)."""
    await _cold_race(tmp_path, 3, held=1, length=BS, read_ahead=True)
