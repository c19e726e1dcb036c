"""Two entries at one path, ``A`` older (kept: its publish failed), ``B`` newer. A recovery in
which ``A``'s publish fails again and ``B``'s goes home is killed once ``B`` is home: the next
mount published ``A`` over ``B`` (``A`` lost its name only after ``B``'s publish, and that was
committed later still). ``A`` now loses its name, committed, before ``B``'s publish
(``Publisher._supersede``). Killed between the two publishes, the next mount publishes ``B``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfs.write.journal import Journal
from tierfs.write.recovery import Recovery

from .conftest import core_test, open_core
from .kept import recover_unresolved
from .test_recovery_linked_entries import failing_publishes

OLD = b"0" * 10_000
A = b"A" * 40_000
B = b"B" * 30_000


class Crash(Exception):
    pass


async def two_entries_at_p(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           by_rename: bool) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as core:
        await core.recover()
        await core.write_file(b"p", OLD)
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"p", A)  # acknowledged, not home
        core.crash()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as again:
        # A kept for the next mount
        assert (await recover_unresolved(again, monkeypatch)).failed == 1
        again.fs.writeback.quiet = again.fs.writeback.max_wait = 60.0
        await again.write_file(b"p", B)  # acknowledged, not home
        entries = sorted((e.path, e.closed, e.size) for e in again.journal().values())
        assert entries == sorted([(b"p", True, len(A)), (b"p", True, len(B))]), entries
        again.crash()


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_killed_after_newer_is_home_before_superseded_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    await two_entries_at_p(tmp_path, monkeypatch, by_rename)
    real_superseded = Journal.superseded

    def killed(self: Journal, rel: bytes, current: str | None) -> bool:
        if (tmp_path / "warm" / "p").read_bytes() == B:
            raise Crash()  # the process dies right after B's rename into place
        return real_superseded(self, rel, current)

    try:
        async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as third:
            third.fs.writeback.quiet = third.fs.writeback.max_wait = 60.0
            third.fs.writeback.busy()
            state = failing_publishes(monkeypatch, 1)  # A fails, B goes through
            monkeypatch.setattr(Journal, "superseded", killed)
            third.crash()
            await third.recover()
    except* Crash:
        pass
    assert state["left"] == 0
    assert (tmp_path / "warm" / "p").read_bytes() == B  # B was home
    monkeypatch.setattr(Journal, "superseded", real_superseded)
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as fourth:
        report = await fourth.recover()
        got = fourth.warm_path(b"p").read_bytes()
        assert got == B, (report, "older data A published over B" if got == A else got[:20])
        assert await fourth.read_file(b"p") == B


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_killed_between_the_two_publishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    """A's publish succeeds in the killed recovery, killed before B's."""
    await two_entries_at_p(tmp_path, monkeypatch, by_rename)
    real = Recovery._publish
    calls = {"n": 0}

    async def second_dies(self: Recovery, *args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        await real(self, *args)  # type: ignore[arg-type]

    try:
        async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as third:
            third.fs.writeback.quiet = third.fs.writeback.max_wait = 60.0
            monkeypatch.setattr(Recovery, "_publish", second_dies)
            third.crash()
            await third.recover()
    except* Crash:
        pass
    assert calls["n"] == 2
    assert (tmp_path / "warm" / "p").read_bytes() == A
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as fourth:
        report = await fourth.recover()
        got = fourth.warm_path(b"p").read_bytes()
        assert got == B, (report, got[:20])
        assert fourth.lost_found() == [], fourth.lost_found()
