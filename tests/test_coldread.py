"""The cold block reader on its own: single flight, read-ahead, bounded memory, errors."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from tierfs.vfs.coldread import KEEP, BlockReader

DATA = os.urandom(10_000)


def test_concurrent_readers_of_one_block_share_one_fetch() -> None:
    calls: list[tuple[int, int]] = []

    async def fetch(start: int, length: int) -> bytes:
        calls.append((start, length))
        await trio.sleep(0.05)
        return DATA[start:start + length]

    async def main() -> None:
        reader = BlockReader(fetch, len(DATA), 1000, None)
        results: list[bytes] = []

        async def one(offset: int) -> None:
            results.append(await reader.read(offset, 100))

        async with trio.open_nursery() as n:
            for offset in (0, 100, 200, 900):
                n.start_soon(one, offset)
        assert calls == [(0, 1000)]
        assert sorted(results) == sorted(DATA[o:o + 100] for o in (0, 100, 200, 900))
        assert await reader.read(950, 100) == DATA[950:1050]  # spans two blocks
        assert await reader.read(9_990, 100) == DATA[9_990:]  # short at the end

    trio.run(main)


def test_sequential_reader_gets_read_ahead_and_memory_stays_bounded() -> None:
    calls: list[int] = []

    async def fetch(start: int, length: int) -> bytes:
        calls.append(start)
        return DATA[start:start + length]

    async def main() -> None:
        async with trio.open_nursery() as n:
            reader = BlockReader(fetch, len(DATA), 1000, n)
            out = b""
            for offset in range(0, len(DATA), 250):
                out += await reader.read(offset, 250)
                assert len(reader._blocks) <= KEEP
                await trio.sleep(0)
            assert out == DATA
        assert sorted(calls) == list(range(0, 10_000, 1000))  # each block fetched once

    trio.run(main)


def test_a_failed_fetch_reaches_every_waiting_reader() -> None:
    async def fetch(start: int, length: int) -> bytes:
        await trio.sleep(0.01)
        raise OSError(errno.EIO, "store down")

    async def main() -> None:
        reader = BlockReader(fetch, len(DATA), 1000, None)
        errors: list[int] = []

        async def one() -> None:
            try:
                await reader.read(0, 10)
            except OSError as e:
                errors.append(e.errno)

        async with trio.open_nursery() as n:
            n.start_soon(one)
            n.start_soon(one)
        assert errors == [errno.EIO, errno.EIO]

    trio.run(main)
    with pytest.raises(OSError):
        trio.run(BlockReader(fetch, 10, 1000, None).read, 0, 5)
