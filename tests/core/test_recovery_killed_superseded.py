"""A recovery killed after the newer entry ``B`` of a hard-linked file is home, the older ``A``
superseded on the same inode (``Recovery._superseded``), and before the final commit: the next
mount must not publish ``A``, the older data, over ``B``'s at both names (``taken_over`` has
committed ``A`` as it was loaded, closed at ``p``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfs.write.journal import Journal

from .conftest import core_test, open_core
from .test_recovery_linked_entries import A, B, crash_with_two_entries, failing_publishes


class Crash(Exception):
    pass


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_killed_after_the_newer_entry_is_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    await crash_with_two_entries(tmp_path, monkeypatch, by_rename)

    async def killed(self: Journal) -> None:
        raise Crash()

    try:
        async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as third:
            third.fs.writeback.quiet = third.fs.writeback.max_wait = 60.0
            third.fs.writeback.busy()
            state = failing_publishes(monkeypatch, 1)  # A's publish fails, B's goes through
            monkeypatch.setattr(Journal, "recovered", killed)  # killed just before it
            third.crash()
            await third.recover()
    except* Crash:
        pass
    assert state["left"] == 0
    assert (tmp_path / "warm" / "p").read_bytes() == B  # B was home
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as fourth:
        report = await fourth.recover()
        got = fourth.warm_path(b"p").read_bytes()
        assert got == B, (report, "older data A came back" if got == A else got[:20])
        assert await fourth.read_file(b"p2") == B
