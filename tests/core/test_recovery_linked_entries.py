"""Two journal entries for one hard-linked file, at two of its names: ``A`` acknowledged
through ``p`` and kept (recovery could not publish it), then ``B`` acknowledged through its
other name ``p2`` before a crash. The next recovery publishes them oldest first; when ``A``'s
publish fails, it used to hand ``A`` to the write-back task at once (newest at its path), so
the inode still held ``A``'s state when ``B``'s entry resolved to the same inode through
``p2``: ``assert inode.data is None`` failed and the mount could not recover; or, when the
write-back task got to publish ``A`` during recovery (the tier answering again), ``A`` came
home over ``B``, or the two publishes, both in place, mixed (``B``'s bytes, then zeros up to
``A``'s size). ``B`` is the file's newer content, whole: it wins, at both names, now and at
the next mount; ``A``'s entry loses its name, as a publish at its path would have made it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import ROOT, Core, core_test, open_core
from .kept import failing_publishes, recover_unresolved

OLD = b"0" * 10_000
A = b"A" * 40_000
B = b"B" * 30_000


async def crash_with_two_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 by_rename: bool) -> None:
    """Leave ``A`` kept at ``p`` and ``B`` acknowledged at ``p2`` (one file) in the journal."""
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as core:
        await core.recover()
        await core.write_file(b"p", OLD)
        p = await core.lookup_path(b"p")
        await core.fs.link(p.ino, ROOT, b"p2")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"p", A)  # acknowledged, not home
        core.crash()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as again:
        # A kept for the next mount, at p
        assert (await recover_unresolved(again, monkeypatch)).failed == 1
        again.fs.writeback.quiet = again.fs.writeback.max_wait = 60.0
        fh = await again.open(b"p2", os.O_WRONLY | os.O_TRUNC)
        await again.write_all(fh, B)
        await again.close(fh)  # acknowledged, not home
        entries = again.journal().values()
        assert sorted((e.path, e.closed) for e in entries) == [(b"p", True), (b"p2", True)]
        again.crash()


async def reads_b(core: Core) -> None:
    assert await core.read_file(b"p") == B
    assert await core.read_file(b"p2") == B


@pytest.mark.parametrize("by_rename", [True, False])
@pytest.mark.parametrize("busy", [True, False])
@core_test
async def test_older_entry_failing_at_another_name_does_not_stop_recovery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool, busy: bool) -> None:
    await crash_with_two_entries(tmp_path, monkeypatch, by_rename)
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as third:
        if busy:  # no background publish during recovery (else: one may start at once)
            third.fs.writeback.quiet = third.fs.writeback.max_wait = 60.0
            third.fs.writeback.busy()
        state = failing_publishes(monkeypatch, 1)  # A's publish fails, B's goes through
        report = await third.recover()  # (was: AssertionError, the mount failed)
        assert state["left"] == 0
        assert (report.published, report.failed) == (1, 1)
        await reads_b(third)
        assert third.warm_path(b"p").read_bytes() == B
        assert await third.publish_all() == []
        await reads_b(third)
        assert third.warm_path(b"p2").read_bytes() == B
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as fourth:
        await fourth.recover()  # A, superseded by B, is never published over it
        await reads_b(fourth)
        assert fourth.warm_path(b"p").read_bytes() == B
        assert fourth.staged() == []


@core_test
async def test_both_entries_failing_keep_the_newer_for_the_write_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await crash_with_two_entries(tmp_path, monkeypatch, True)
    async with open_core(tmp_path, durability="writeback") as third:
        state = failing_publishes(monkeypatch, None)
        report = await third.recover()  # (was: AssertionError, the mount failed)
        assert (report.published, report.failed) == (0, 2)
        await reads_b(third)  # the newer acknowledged data, as written
        assert third.warm_path(b"p").read_bytes() == OLD  # (not home yet)
        state["left"] = 0  # the tier answers again
        await third.until(lambda: third.warm_path(b"p").read_bytes() == B)
        await third.until(lambda: third.writeback_pending() == 0)
        await reads_b(third)
    async with open_core(tmp_path, durability="writeback") as fourth:
        await fourth.recover()
        await reads_b(fourth)
        assert fourth.warm_path(b"p2").read_bytes() == B
        assert fourth.staged() == []
