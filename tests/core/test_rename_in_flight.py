"""A rename of a file whose write-back data is acknowledged but not home yet, cut by a crash
between the rename on the warm tier and the journal's record of it. The journal said the data
goes to the old name, gone from the warm tier: recovery set the acknowledged data aside in
lost+found and the new name kept what was there before (nothing, or the file replaced). The
rename is now recorded first (``Move``), and recovery asks the warm tier which happened."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
import trio

from .conftest import ROOT, Core, core_test, open_core

DATA = b"acknowledged " * 1000


async def writeback_core_ready(core: Core) -> None:
    await core.recover()
    core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0


def cut_after_the_warm_rename(core: Core, made: bool, entered: threading.Event | None = None,
                              go: threading.Event | None = None) -> None:
    """The warm rename made (or not), then no more of the rename: as a crash right there (it
    fails, and the journal is not told, as a failed one's is). ``entered``/``go``: it waits
    for ``go`` once it has started."""
    real = core.fs.namespace._rename_blocking
    journal = core.fs.journal
    moving = journal.moving

    def rename(*args: object) -> object:
        if entered is not None and go is not None:
            entered.set()
            go.wait(10)
        if made:
            real(*args)
        journal.moving = lambda move: False if move is None else moving(move)  # type: ignore
        raise OSError(errno.EIO, "cut here")

    core.fs.namespace._rename_blocking = rename  # type: ignore[method-assign]


@pytest.mark.parametrize("over", [False, True], ids=["new-name", "over-a-file"])
@core_test
async def test_a_rename_cut_after_the_warm_rename_keeps_the_data_at_the_new_name(
        tmp_path: Path, over: bool) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        if over:
            await core.write_file(b"t", b"old target")
            await core.publish_all()
        await core.write_file(b"s", DATA)  # closed: acknowledged, not published
        cut_after_the_warm_rename(core, made=True)
        with pytest.raises(OSError):
            await core.fs.rename(ROOT, b"s", ROOT, b"t", 0)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        report = await again.recover()
        assert report.set_aside == 0 and again.lost_found() == []
        assert again.warm_path(b"t").read_bytes() == DATA
        assert not again.warm_path(b"s").exists()


@core_test
async def test_a_rename_cut_before_the_warm_rename_keeps_the_data_at_the_old_name(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.write_file(b"t", b"old target")
        await core.publish_all()
        await core.write_file(b"s", DATA)
        cut_after_the_warm_rename(core, made=False)
        with pytest.raises(OSError):
            await core.fs.rename(ROOT, b"s", ROOT, b"t", 0)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"s").read_bytes() == DATA
        assert again.warm_path(b"t").read_bytes() == b"old target"


@core_test
async def test_an_exchange_cut_after_the_warm_rename(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.write_file(b"a", b"A" * 100)
        await core.write_file(b"b", b"B" * 200)
        await core.publish_all()
        await core.write_file(b"a", DATA)  # acknowledged, not home
        cut_after_the_warm_rename(core, made=True)
        with pytest.raises(OSError):
            await core.fs.rename(ROOT, b"a", ROOT, b"b", os.RENAME_EXCHANGE
                                 if hasattr(os, "RENAME_EXCHANGE") else 2)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"b").read_bytes() == DATA
        assert again.warm_path(b"a").read_bytes() == b"B" * 200


@core_test
async def test_a_folder_rename_cut_after_the_warm_rename(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.mkdirs(b"d")
        await core.write_file(b"d/f", DATA)
        d = await core.lookup_path(b"d")
        cut_after_the_warm_rename(core, made=True)
        with pytest.raises(OSError):
            await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)
        assert d is not None
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        report = await again.recover()
        assert report.set_aside == 0
        assert again.warm_path(b"e/f").read_bytes() == DATA


@core_test
async def test_a_close_acknowledged_while_the_rename_is_on_the_warm_tier(
        tmp_path: Path) -> None:
    """The entry could not be published when the rename began (its file open), so it got no
    record of the rename; the close, which does not wait for it, was acknowledged meanwhile
    with the old name (review)."""
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.write_file(b"t", b"old target")
        await core.publish_all()
        fh = await core.create(b"s")
        await core.write_all(fh, DATA)
        entered, go = threading.Event(), threading.Event()
        cut_after_the_warm_rename(core, True, entered, go)

        async def rename() -> None:
            with pytest.raises(OSError):
                await core.fs.rename(ROOT, b"s", ROOT, b"t", 0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(rename)
            await trio.to_thread.run_sync(entered.wait, 10)
            await core.close(fh)  # acknowledged
            go.set()
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"t").read_bytes() == DATA
        assert not again.warm_path(b"s").exists()


@core_test
async def test_a_failed_rename_is_not_taken_for_made(tmp_path: Path) -> None:
    """Refused (its old name removed by another node), then a crash: the record of the
    rename under way was left committed, and recovery, finding the old name gone, published
    the data over the file at the new name (review)."""
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.write_file(b"t", b"old target")
        await core.publish_all()
        await core.write_file(b"s", DATA)
        os.unlink(core.warm_path(b"s"))  # another node
        with pytest.raises(OSError):
            await core.fs.rename(ROOT, b"s", ROOT, b"t", 0)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"t").read_bytes() == b"old target"


@core_test
async def test_a_record_of_a_rename_never_outlives_it(tmp_path: Path) -> None:
    """The file a rename replaced kept another name (a hard link), its entry re-pointed there
    still holding the rename's record; renamed back to the name later and crashed, recovery
    took the old rename for made and threw the acknowledged data away (review)."""
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.write_file(b"s", b"source")
        await core.publish_all()
        await core.write_file(b"t", DATA)  # acknowledged, not home
        y = await core.lookup_path(b"t")
        await core.fs.link(y.ino, ROOT, b"h")
        await core.fs.rename(ROOT, b"s", ROOT, b"t", 0)  # y keeps the name h
        await core.fs.rename(ROOT, b"t", ROOT, b"u", 0)
        await core.fs.link(y.ino, ROOT, b"t")
        await core.fs.unlink(ROOT, b"h")  # y's entry re-pointed to t
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"t").read_bytes() == DATA
        assert again.warm_path(b"u").read_bytes() == b"source"
