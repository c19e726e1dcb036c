"""A write-back close while a reader on this node still holds the file (a loader reading what
was just saved, a ``tail -f``): the file goes to the write-back task at that close, as after
any last close, and ``tierfs flush`` publishes it; so does a truncate by path, which no writer
will close (acknowledged as a close is). They used to be handed over only at the last
handle's release: neither the background nor a flush published them while the reader
stayed, and the pending count said 0. (A first fix handed over a writer's close only.)"""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import SetAttr, core_test, open_core

DATA = b"d" * 40_000


@core_test
async def test_a_close_a_reader_outlives_is_published_in_the_background(tmp_path: Path
                                                                        ) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        fh = await core.create(b"f")
        await core.write_all(fh, DATA)
        reader = await core.open(b"f", os.O_RDONLY)
        await core.close(fh)  # the last writer's close: acknowledged
        assert core.writeback_pending() == 1
        await core.until(lambda: core.warm_path(b"f").read_bytes() == DATA)
        assert await core.read_all(reader) == DATA
        await core.fs.release(reader)
        await core.until(lambda: core.staged() == [])


@core_test
async def test_a_flush_publishes_a_close_a_reader_outlives(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0  # (no turn meanwhile)
        fh = await core.create(b"f")
        await core.write_all(fh, DATA)
        reader = await core.open(b"f", os.O_RDONLY)
        await core.close(fh)
        assert await core.publish_all() == []  # tierfs flush
        assert core.warm_path(b"f").read_bytes() == DATA
        await core.fs.release(reader)


@core_test
async def test_a_truncate_by_path_a_reader_outlives_is_published_by_flush(tmp_path: Path
                                                                          ) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"f", DATA)
        assert await core.publish_all() == []
        assert core.warm_path(b"f").read_bytes() == DATA
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0  # (no turn meanwhile)
        reader = await core.open(b"f", os.O_RDONLY)
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=10))  # truncate -s 10 f
        assert await core.size_of(b"f") == 10
        try:
            assert await core.publish_all() == []  # tierfs flush
            assert core.warm_path(b"f").read_bytes() == DATA[:10], (
                "tierfs flush did not publish a truncate a reader outlives")
        finally:
            await core.fs.release(reader)


@core_test
async def test_a_truncate_by_path_a_reader_outlives_is_published_in_the_background(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"f", DATA)
        assert await core.publish_all() == []
        reader = await core.open(b"f", os.O_RDONLY)
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=10))
        try:
            await core.until(lambda: core.warm_path(b"f").stat().st_size == 10, timeout=6.0)
        finally:
            await core.fs.release(reader)
