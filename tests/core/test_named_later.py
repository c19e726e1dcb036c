"""In write-back, a create that truncates, in a directory where a create just succeeded,
returns before its name is made on the warm tier (``core.naming``). The name is held back here
(the warm call that makes it waits for a gate) to check every way a user could tell: the
file's own close waits for it, listings, renames and unlinks find it made, a lookup answers
it, a crash after the close loses nothing, and a name that cannot be made fails the close and
publishes nothing anywhere."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import pytest
import trio

from .conftest import ROOT, Core, core_test, open_core

SAVE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
DATA = b"shard " * 5000


def gate_names(core: Core) -> trio.Event:
    """Hold back the warm calls that make a pending name until the event is set (10 s at
    most)."""
    gate = trio.Event()
    warm = core.fs.warm
    inner = warm.run

    async def run(fn: Callable[..., Any], *args: object) -> Any:
        if getattr(fn, "__name__", "") == "make" and args[-1] is True:
            with trio.move_on_after(10):  # (a test failing before it opens the gate ends)
                await gate.wait()
        return await inner(fn, *args)

    warm.run = run  # type: ignore[method-assign]
    return gate


def open_soon(core: Core, gate: trio.Event, delay: float) -> None:
    """Open the gate after ``delay`` seconds, while the test goes on."""
    async def opener() -> None:
        await trio.sleep(delay)
        gate.set()

    core.nursery.start_soon(opener)


async def first_file(core: Core) -> int:
    """A directory ``d`` with one file made (a create there succeeded): its inode number."""
    d = await core.mkdirs(b"d")
    await core.write_file(b"d/first", b"1")
    assert await core.publish_all() == []
    return d


def pending(core: Core) -> int:
    return len(core.fs.core.namings)


@core_test
async def test_a_save_returns_before_its_name_and_close_waits_for_it(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/shard", flags=SAVE)
        assert pending(core) == 1
        assert not core.warm_path(b"d/shard").exists()
        await core.write_all(fh, DATA)
        inode, attrs = await core.fs.lookup((await core.lookup_path(b"d")).ino, b"shard")
        assert attrs.size == len(DATA)
        closed = trio.Event()

        async def close() -> None:
            await core.close(fh)
            closed.set()

        core.nursery.start_soon(close)
        await trio.sleep(0.05)
        assert not closed.is_set()  # (the close waits for the name)
        gate.set()
        with trio.fail_after(5):
            await closed.wait()
        assert core.warm_path(b"d/shard").exists()  # named before the close returned
        assert pending(core) == 0
        assert await core.publish_all() == []
        assert core.warm_path(b"d/shard").read_bytes() == DATA
        assert (await core.lookup_path(b"d/shard")).ino == inode.ino


@core_test
async def test_a_listing_waits_for_pending_names(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        d = await first_file(core)
        gate = gate_names(core)
        fhs = [await core.create(b"d/s%d" % i, flags=SAVE) for i in range(3)]
        assert pending(core) == 3
        open_soon(core, gate, 0.05)
        dh = await core.fs.opendir(d)
        names = {e.name for _, e in await core.fs.readdir(dh, 0)}
        await core.fs.releasedir(dh)
        assert {b"first", b"s0", b"s1", b"s2"} <= names
        for fh in fhs:
            await core.close(fh)


@core_test
async def test_a_rename_and_an_unlink_right_after_the_create(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        d = await first_file(core)
        gate = gate_names(core)
        a = await core.create(b"d/a", flags=SAVE)
        b = await core.create(b"d/b", flags=SAVE)
        await core.write_all(a, b"A" * 1000)
        await core.write_all(b, b"B" * 1000)
        open_soon(core, gate, 0.05)
        await core.fs.rename(d, b"a", d, b"renamed", 0)
        await core.fs.unlink(d, b"b")
        await core.close(a)
        await core.close(b)
        assert await core.publish_all() == []
        assert core.warm_path(b"d/renamed").read_bytes() == b"A" * 1000
        assert not core.warm_path(b"d/a").exists()
        assert not core.warm_path(b"d/b").exists()
        assert sorted(core.warm_names(b"d")) == ["first", "renamed"]


@core_test
async def test_a_renamed_directory_gets_the_name(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/x", flags=SAVE)
        await core.write_all(fh, DATA)
        open_soon(core, gate, 0.05)
        await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)
        await core.close(fh)
        assert await core.publish_all() == []
        assert core.warm_path(b"e/x").read_bytes() == DATA
        assert not core.warm_path(b"d").exists()


@core_test
async def test_a_name_that_cannot_be_made_fails_the_close(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/lost", flags=SAVE)
        await core.write_all(fh, DATA)
        # Another node removes the directory meanwhile.
        os.remove(core.warm_path(b"d/first"))
        os.rmdir(core.warm_path(b"d"))
        gate.set()
        with pytest.raises(OSError) as failed:
            await core.close(fh)
        assert failed.value.errno == errno.ENOENT
        assert pending(core) == 0
        assert await core.publish_all() == []
        assert not core.warm_path(b"d").exists()
        assert core.staged() == []
        assert all(not e.get("path") for e in core.journal().values())


@core_test
async def test_a_file_another_node_made_at_the_name_meanwhile_is_replaced(tmp_path: Any
                                                                          ) -> None:
    """As open(2) without O_EXCL: the file there is opened and truncated; the save's bytes
    replace it."""
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/same", flags=SAVE)
        await core.write_all(fh, DATA)
        core.warm_path(b"d/same").write_bytes(b"the other node's, longer " * 10000)
        gate.set()
        await core.close(fh)
        assert await core.publish_all() == []
        assert core.warm_path(b"d/same").read_bytes() == DATA
        assert await core.read_file(b"d/same") == DATA


@core_test
async def test_what_is_not_named_later(tmp_path: Any) -> None:
    """O_EXCL, no O_TRUNC, the first create in a directory, and sync mode: named at once."""
    async with open_core(tmp_path, durability="writeback") as core:
        await core.mkdirs(b"d")
        gate_names(core)  # (never set: a create named later would not be on the tier)
        fh = await core.create(b"d/first", flags=SAVE)
        assert core.warm_path(b"d/first").exists()
        await core.close(fh)
        for name, flags in ((b"excl", SAVE | os.O_EXCL), (b"plain", os.O_WRONLY)):
            fh = await core.create(b"d/" + name, flags=flags)
            assert core.warm_path(b"d/" + name).exists()
            await core.close(fh)
    (tmp_path / "sync").mkdir()
    async with open_core(tmp_path / "sync", durability="sync") as core:
        await first_file(core)
        gate_names(core)
        fh = await core.create(b"d/x", flags=SAVE)
        assert core.warm_path(b"d/x").exists()
        await core.close(fh)


@core_test
async def test_a_crash_after_the_close_publishes_at_the_name(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0  # (by recovery only)
        fh = await core.create(b"d/ckpt", flags=SAVE)
        await core.write_all(fh, DATA)
        gate.set()
        await core.close(fh)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        assert core.warm_path(b"d/ckpt").read_bytes() == DATA


@core_test
async def test_unmount_makes_pending_names(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/late", flags=SAVE)
        await core.write_all(fh, DATA)
        open_soon(core, gate, 0.05)
        # (left open: the unmount waits for the name, then publishes what the file holds)
    assert (tmp_path / "warm" / "d" / "late").read_bytes() == DATA


@core_test
async def test_a_directory_another_node_made_at_the_name_fails_the_close(tmp_path: Any
                                                                         ) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/taken", flags=SAVE)
        await core.write_all(fh, DATA)
        os.mkdir(core.warm_path(b"d/taken"))
        gate.set()
        with pytest.raises(OSError) as failed:
            await core.close(fh)
        assert failed.value.errno == errno.EEXIST
        assert await core.publish_all() == []
        assert core.warm_path(b"d/taken").is_dir()
        assert core.staged() == []


@core_test
async def test_a_save_growing_past_the_threshold_streams_once_named(tmp_path: Any) -> None:
    """Its upload starts after the name is made (the stub goes there); an fsync then holds
    through a crash."""
    big = bytes(range(256)) * 1024
    async with open_core(tmp_path, large_file_threshold="64KiB",
                         durability="writeback") as core:
        await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/big", flags=SAVE)
        assert pending(core) == 1
        open_soon(core, gate, 0.1)
        await core.write_all(fh, big, chunk=32 * 1024)
        assert pending(core) == 0
        await core.fs.fsync(fh)
        core.crash()
    async with open_core(tmp_path, large_file_threshold="64KiB",
                         durability="writeback") as core:
        await core.recover()
        assert await core.read_file(b"d/big") == big
