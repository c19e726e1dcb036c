"""A hard-linked file whose other names this mount does not know (linked by another node, or
before the mount) keeps what was written to it when the name it was written under goes: the
staged data is published in place, through the file's descriptor, to the names that remain."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import ROOT, Core, core_test, open_core

MODES = pytest.mark.parametrize("durability", ["sync", "writeback"])
BOTH = pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])


def linked_elsewhere(core: Core, content: bytes = b"old content") -> None:
    """``a`` with a second name ``b`` made on the warm tier, as another node would."""
    core.warm_path(b"a").write_bytes(content)
    os.link(core.warm_path(b"a"), core.warm_path(b"b"))


@MODES
@BOTH
@core_test
async def test_writes_after_the_unlink_reach_the_other_name(
        tmp_path: Path, durability: str, by_rename: bool) -> None:
    """A writer that goes on after its name was unlinked writes into the file that ``b``
    still names, as on any POSIX file system."""
    async with open_core(tmp_path, by_rename=by_rename, durability=durability) as core:
        linked_elsewhere(core)
        fh = await core.open(b"a", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"new data")
        await core.fs.unlink(ROOT, b"a")
        await core.write_all(fh, b"!", offset=8)
        await core.close(fh)
        await core.publish_all()
        assert core.warm_path(b"b").read_bytes() == b"new data!"
        assert not core.warm_path(b"a").exists()
        assert core.warm_temps() == []
        assert await core.read_file(b"b") == b"new data!"


@BOTH
@core_test
async def test_a_write_back_close_then_unlink_reaches_the_other_name(
        tmp_path: Path, by_rename: bool) -> None:
    """Closed in write-back mode and unlinked before the background publish: ``b`` gets the
    content, before the unlink returns (nothing is left that a crash could lose)."""
    async with open_core(tmp_path, by_rename=by_rename, durability="writeback") as core:
        linked_elsewhere(core)
        await core.write_file(b"a", b"written then unlinked")
        assert core.warm_path(b"b").read_bytes() == b"old content"  # (still waiting)
        await core.fs.unlink(ROOT, b"a")
        assert core.warm_path(b"b").read_bytes() == b"written then unlinked"
        assert core.warm_temps() == []
    async with open_core(tmp_path, durability="writeback") as again:
        assert await again.read_file(b"b") == b"written then unlinked"
        assert again.staged() == []


@MODES
@core_test
async def test_a_rename_over_the_name_keeps_it_for_the_other_name(
        tmp_path: Path, durability: str) -> None:
    async with open_core(tmp_path, durability=durability) as core:
        linked_elsewhere(core)
        await core.write_file(b"a", b"first version")
        await core.write_file(b"c", b"replacement")
        await core.fs.rename(ROOT, b"c", ROOT, b"a", 0)
        await core.publish_all()
        assert core.warm_path(b"a").read_bytes() == b"replacement"
        assert core.warm_path(b"b").read_bytes() == b"first version"


@MODES
@core_test
async def test_a_file_with_no_other_name_is_not_written_anywhere(
        tmp_path: Path, durability: str) -> None:
    """An unlinked open file (a temporary file, say) is not published: nothing names it."""
    async with open_core(tmp_path, durability=durability) as core:
        core.warm_path(b"a").write_bytes(b"old content")
        fh = await core.open(b"a", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"scratch")
        await core.fs.unlink(ROOT, b"a")
        calls = core.count_warm_calls()
        await core.close(fh)
        await core.publish_all()
        assert core.warm_names() == [] and core.staged() == []
        assert calls["calls"] <= 1  # (closing the warm descriptor; no copy)


@core_test
async def test_a_failed_publish_through_the_other_names_sets_the_data_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sync mode: the last close of a file whose only names left are made elsewhere publishes
    it in place; when that fails, the written data has nowhere to be published later (its
    journal entry has no path), so it is kept in lost+found rather than dropped."""
    async with open_core(tmp_path) as core:
        linked_elsewhere(core)
        fh = await core.open(b"a", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"written, then its name unlinked")
        await core.fs.unlink(ROOT, b"a")

        def broken(*args: object) -> None:
            raise OSError(5, "the warm tier failed")

        monkeypatch.setattr(core.fs.core.warm, "write_through", broken)
        try:
            await core.close(fh)
        except OSError:
            pass
        kept = [name for name in core.lost_found() if not name.endswith(".txt")]
        assert [core.lost_path(name).read_bytes() for name in kept] == [
            b"written, then its name unlinked"]
        assert core.staged() == []


@core_test
async def test_a_file_unlinked_everywhere_is_not_set_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path) as core:
        linked_elsewhere(core)
        fh = await core.open(b"a", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"written, then unlinked everywhere")
        await core.fs.unlink(ROOT, b"a")
        os.unlink(core.warm_path(b"b"))  # another node removes the other name

        def gone(fd: int, *args: object) -> None:
            # As over NFS: the file removed on the server is stale for this client.
            assert os.fstat(fd).st_nlink == 0
            raise OSError(errno.ESTALE, "Stale file handle")

        monkeypatch.setattr(core.fs.core.warm, "write_through", gone)
        try:
            await core.close(fh)
        except OSError:
            pass
        assert core.lost_found() == [], \
            "the data of a file with no name anywhere was set aside in lost+found"
        assert core.staged() == []


UNLINKED_DURING = b"n" * 70_000


@pytest.mark.parametrize("durability", ["writeback", "sync"])
@pytest.mark.parametrize("created", [True, False], ids=["created", "existing"])
@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_an_unlink_during_the_publish_keeps_the_data_for_the_other_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool, created: bool,
        durability: str) -> None:
    async with open_core(tmp_path, durability=durability, by_rename=by_rename) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        if created:
            fh = await core.create(b"a")
        else:
            core.warm_path(b"a").write_bytes(b"old content")
            fh = await core.open(b"a", os.O_WRONLY | os.O_TRUNC)
        os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
        await core.write_all(fh, UNLINKED_DURING)

        # The warm tier is slow: the publish's first warm call (the link-count look and the
        # in-place write) starts only after the unlink below went through.
        warm_cls = type(core.fs.warm)
        real = warm_cls.publish_copy
        entered, go = threading.Event(), threading.Event()

        def publish_copy(self: Any, *args: Any, **kwargs: Any) -> Any:
            entered.set()
            go.wait(10)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(warm_cls, "publish_copy", publish_copy)
        async with trio.open_nursery() as nursery:
            if durability == "sync":
                nursery.start_soon(core.close, fh)  # the close's publish
            else:
                await core.close(fh)  # acknowledged; published in the background
                nursery.start_soon(core.publish_all)
            while not entered.is_set():
                await trio.sleep(0.01)
            nursery.start_soon(core.fs.unlink, ROOT, b"a")
            await trio.sleep(0.2)
            go.set()
        await core.publish_all()
        assert not core.warm_path(b"a").exists()
        assert core.warm_path(b"b").read_bytes() == UNLINKED_DURING


AFTER_FAILED = b"c" * 70_000


@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_a_failed_publish_then_an_unlink_keeps_the_data_for_the_other_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.create(b"a")
        os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
        await core.write_all(fh, AFTER_FAILED)
        await core.close(fh)  # acknowledged

        # The warm tier refuses the in-place write by path (an NFS hiccup, for a while).
        warm_cls = type(core.fs.warm)

        def write_in_place(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.EIO, "the warm tier did not answer")

        monkeypatch.setattr(warm_cls, "write_in_place", write_in_place)
        assert await core.publish_all() != []
        # The background task's own try fails too; it waits a second before the next.
        await core.until(lambda: core.counter("upload_errors") >= 1)
        await core.fs.unlink(ROOT, b"a")  # published through b before it returns
        assert await core.publish_all() == []
        assert core.warm_path(b"b").read_bytes() == AFTER_FAILED
