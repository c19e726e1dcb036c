"""A full hot disk. The first change to an existing warm file copies it into staging: a copy
that finds the disk full makes room as a write does, cached blocks evicted first
(docs/semantics.md, "A full hot tier"), where it failed with ENOSPC. And a write that fails
for room changes nothing, so it takes back no acknowledgement of a write-back close."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from conftest import tmpfs  # (tests/conftest.py)
from tierfs.write import writer as writer_module

from .conftest import MIB, Core, SetAttr, core_test, open_core


def fill(path: Path) -> None:
    """Take whatever room is left on the disk holding ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\1" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def full_of_cached_blocks(tmp_path: Path, small: bytes) -> AsyncIterator[Core]:
    """A 10 MiB hot tier holding 6 MiB of cached blocks, the rest of it filled, and the warm
    file ``f`` holding ``small``."""
    big = os.urandom(6 * MIB)
    with tmpfs(tmp_path / "hot", "10m") as hot:
        (tmp_path / "warm").mkdir()
        (tmp_path / "warm" / "big").write_bytes(big)
        (tmp_path / "warm" / "f").write_bytes(small)
        async with open_core(tmp_path, cache_warm=True, hot_capacity="1GiB",
                             by_rename=False) as core:
            assert await core.read_file(b"big") == big
            await core.fs.cache.settle()
            assert core.fs.cache.used >= 4 * MIB  # the disk holds the cached blocks
            fill(hot / "filler")
            yield core


@core_test
async def test_staging_an_existing_file_on_a_disk_full_of_cached_blocks(tmp_path: Path) -> None:
    small = os.urandom(1 * MIB)
    async with full_of_cached_blocks(tmp_path, small) as core:
        fh = await core.open(b"f", os.O_RDWR)
        # Cached blocks can make the room: this write must not fail.
        await core.fs.write(fh, 0, b"x")
        await core.close(fh)
        assert (tmp_path / "warm" / "f").read_bytes() == b"x" + small[1:]


@core_test
async def test_truncating_an_open_file_on_a_disk_full_of_cached_blocks(tmp_path: Path) -> None:
    small = os.urandom(1 * MIB)
    async with full_of_cached_blocks(tmp_path, small) as core:
        fh = await core.open(b"f", os.O_RDWR)
        inode = await core.lookup_path(b"f")
        await core.fs.setattr(inode.ino, SetAttr(size=MIB // 2))  # ftruncate(2)
        await core.close(fh)
        assert (tmp_path / "warm" / "f").read_bytes() == small[: MIB // 2]


OLD = b"o" * 20_000
NEW = b"n" * 20_000


@core_test
async def test_a_write_that_failed_for_room_does_not_take_back_an_acknowledged_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", OLD)
        await core.publish_all()
        assert core.warm_path(b"f").read_bytes() == OLD
        fh = await core.open(b"f", os.O_RDWR)
        await core.write_all(fh, NEW)
        await core.fs.flush(fh)  # close(2) of a dup: acknowledged, the handle lives on

        real = os.pwrite

        def full(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(writer_module.os, "pwrite", full)
        with pytest.raises(OSError) as e:
            await core.fs.write(fh, 0, b"x" * 100)
        assert e.value.errno == errno.ENOSPC
        monkeypatch.setattr(writer_module.os, "pwrite", real)
        await core.sync_journal()  # (any later commit)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"f").read_bytes() == NEW, \
            "the acknowledged close was lost to a write that failed"

TAIL = b"t" * 100


@core_test
async def test_a_close_acknowledged_during_a_failing_write_stays_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", OLD)
        await core.publish_all()
        fh = await core.open(b"f", os.O_RDWR)
        await core.write_all(fh, NEW)
        await core.fs.flush(fh)  # close(2) of a dup: acknowledged (closed, 20000 bytes)
        await core.fs.write(fh, len(NEW), TAIL)  # an append: acked = 20000 kept
        entry = core.fs.journal.entry_of(core.fs.files.handles[fh].data)
        assert (entry.closed, entry.acked) == (False, len(NEW))

        waiting = trio.Event()
        go_on = trio.Event()

        async def slow_make_room(nbytes: int) -> None:
            waiting.set()
            await go_on.wait()

        def full(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        real = os.pwrite
        monkeypatch.setattr(core.fs.staging, "make_room", slow_make_room)
        monkeypatch.setattr(writer_module.os, "pwrite", full)
        failed: list[OSError] = []

        async def failing_write() -> None:
            try:
                await core.fs.write(fh, 0, b"x" * 100)  # rewrites below the acked prefix
            except OSError as e:
                failed.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(failing_write)
            await waiting.wait()
            # Meanwhile another dup of the descriptor is closed: the whole staged file
            # (NEW + TAIL: the failing write changes nothing) is acknowledged.
            await core.fs.flush(fh)
            go_on.set()
        monkeypatch.setattr(writer_module.os, "pwrite", real)
        assert failed and failed[0].errno == errno.ENOSPC
        await core.sync_journal()
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"f").read_bytes() == NEW + TAIL, \
            "the close acknowledged while the write waited was taken back by its failure"


@core_test
async def test_a_failed_truncate_does_not_take_back_an_acknowledged_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", OLD)
        await core.publish_all()
        fh = await core.open(b"f", os.O_RDWR)
        await core.write_all(fh, NEW)
        await core.fs.flush(fh)  # close(2) of a dup: NEW acknowledged, the handle lives on
        await core.fs.write(fh, len(NEW), TAIL)  # appended: the NEW prefix stays acked

        def broken(fd: int, size: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        real = os.ftruncate
        monkeypatch.setattr(writer_module.os, "ftruncate", broken)
        inode = await core.lookup_path(b"f")
        with pytest.raises(OSError) as e:
            await core.fs.setattr(inode.ino, SetAttr(size=10))  # ftruncate(2), fails
        assert e.value.errno == errno.EIO
        monkeypatch.setattr(writer_module.os, "ftruncate", real)
        await core.sync_journal()  # (any later commit)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"f").read_bytes()[:len(NEW)] == NEW, \
            "the acknowledged close was lost to a truncate that failed"
