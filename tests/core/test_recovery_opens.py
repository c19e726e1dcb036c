"""Recovery leaves no reference in the inode table (``Inodes.opened``/``closed``) once a file's
data is home: each file it published stayed in the table for the life of the mount (an
``opened`` when it put the rebuilt state on the inode, never closed), and a held or superseded
entry of a hard-linked file adds none either."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import core_test, open_core
from .test_recovery_linked_entries import crash_with_two_entries, failing_publishes


@core_test
async def test_plain_recovery_leaves_no_open_reference(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"f", b"x" * 10_000)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        inode = await again.lookup_path(b"f")
        assert inode.opens == 0, f"recovery left {inode.opens} open reference(s)"


@pytest.mark.parametrize("count", [1, None])
@core_test
async def test_held_and_superseded_entries_add_no_reference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int | None) -> None:
    await crash_with_two_entries(tmp_path, monkeypatch, True)
    async with open_core(tmp_path, durability="writeback") as third:
        third.fs.writeback.quiet = third.fs.writeback.max_wait = 60.0
        third.fs.writeback.busy()
        state = failing_publishes(monkeypatch, count)
        await third.recover()
        inode = await third.lookup_path(b"p")
        held = third.fs.writeback.holds(inode)
        assert held == (count is None)
        state["left"] = 0
        assert await third.publish_all() == []
        await third.until(lambda: not third.fs.writeback.holds(inode))
        assert inode.opens == 0, inode.opens
