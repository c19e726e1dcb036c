"""A recovery (or the write-back task it starts) killed at each step: after a warm publish's
rename, a stream's completion and stub swap, a held entry's publish, a set-aside after a restart
of the system. The next mount must end with the last acknowledged content (or, after a restart,
the previous content and the staged copy set aside), nothing lost, nothing left over."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tierfs.write.journal import Journal
from tierfs.write.recovery import Recovery

from .conftest import PART, MIB, core_test, open_core
from .test_recovery_linked_entries import failing_publishes
from .test_streaming import SMALL, content
from .test_recovery_killed_two_entries import Crash

OLD = b"o" * 10_000
NEW = b"n" * 20_000


async def closed_not_home(tmp_path: Path, by_rename: bool, old: bytes, new: bytes,
                          **opts: object) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename, **opts) as core:
        await core.recover()
        await core.write_file(b"p", old)
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"p", new)  # acknowledged in the log, not home
        core.crash()


async def killed_recovery(tmp_path: Path, by_rename: bool, patch, **opts: object) -> None:
    killed = False
    try:
        async with open_core(tmp_path, durability="writeback", by_rename=by_rename,
                             **opts) as again:
            again.fs.writeback.quiet = again.fs.writeback.max_wait = 60.0
            patch(again)
            again.crash()
            await again.recover()
    except* Crash:
        killed = True
    assert killed, "not killed" 


# (1) warm publish killed right after the rename (by rename: at the journal drop; by copy:
# at mark_published), and killed at the final commit.
@pytest.mark.parametrize("where", ["drop", "mark_published", "recovered"])
@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_warm_killed_after_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        by_rename: bool, where: str) -> None:
    await closed_not_home(tmp_path, by_rename, OLD, NEW)

    def die(*args: object, **kwargs: object) -> None:
        raise Crash()

    await killed_recovery(tmp_path, by_rename,
                          lambda c: monkeypatch.setattr(Journal, where, die))
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as third:
        report = await third.recover()
        assert third.warm_path(b"p").read_bytes() == NEW, report
        assert await third.read_file(b"p") == NEW
        assert third.lost_found() == [] and report.set_aside == 0, report


# (2) streaming: killed after the completion, after the stub swap before the drop.
@pytest.mark.parametrize("where", ["complete", "swap", "recovered"])
@core_test
async def test_streaming_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                where: str) -> None:
    old, new = content(PART + MIB, seed=3), content(2 * PART + 7, seed=4)
    opts = dict(large_file_threshold=SMALL)
    await closed_not_home(tmp_path, True, old, new, **opts)

    def patch(c) -> None:
        if where == "complete":
            real = c.store.complete_multipart

            def complete_then_die(*args: object) -> object:
                real(*args)
                raise Crash()

            c.store.complete_multipart = complete_then_die
        elif where == "swap":
            monkeypatch.setattr(Journal, "drop", lambda *a: (_ for _ in ()).throw(Crash()))
        else:
            monkeypatch.setattr(Journal, "recovered", lambda *a: (_ for _ in ()).throw(Crash()))

    await killed_recovery(tmp_path, True, patch, **opts)
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback", **opts) as third:
        report = await third.recover()
        got = await third.read_file(b"p")
        assert got == new, (report, len(got), got == old)
        stub = third.cold(b"p")
        assert third.objects()[stub.key] == new
        assert report.lost == 0 and report.set_aside == 0, report
        assert third.uploads() == []


# (4) a publish failed in recovery: held, handed to the write-back task, which publishes
# before ``recovered`` commits; killed then.
@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_writeback_publishes_before_recovered_then_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    await closed_not_home(tmp_path, by_rename, OLD, NEW)
    real = Journal.recovered

    async def slow_then_die(self: Journal) -> None:
        with trio.fail_after(10):
            while (tmp_path / "warm" / "p").read_bytes() != NEW:
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        raise Crash()

    try:
        async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as again:
            failing_publishes(monkeypatch, 1)
            monkeypatch.setattr(Journal, "recovered", slow_then_die)
            again.crash()
            await again.recover()
    except* Crash:
        pass
    monkeypatch.undo()
    assert Journal.recovered is real
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as third:
        report = await third.recover()
        assert third.warm_path(b"p").read_bytes() == NEW, report
        assert third.lost_found() == [], report


# (5) rebooted recovery killed after setting an entry aside (before its drop commits).
@core_test
async def test_rebooted_killed_after_set_aside(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    await closed_not_home(tmp_path, True, OLD, NEW)
    real = Recovery._set_aside

    async def then_die(self: Recovery, *args: object) -> None:
        await real(self, *args)  # type: ignore[arg-type]
        raise Crash()

    try:
        async with open_core(tmp_path, durability="writeback") as again:
            monkeypatch.setattr(Recovery, "_set_aside", then_die)
            again.crash()
            await again.recover(rebooted=True)
    except* Crash:
        pass
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback") as third:
        report = await third.recover(rebooted=True)
        assert third.warm_path(b"p").read_bytes() == OLD, report
        assert len([n for n in third.lost_found() if not n.endswith(".note")]) >= 1
        assert third.staged() == []
