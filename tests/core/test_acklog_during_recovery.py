"""A publish by copy made by recovery itself (before ``Journal.recovered``) commits instead of
logging: a log record would have queued the log's new last number in the batch, and the next
commit during recovery would then have said every record of the earlier run's log was in the
index while the entries recovery had not reached yet were only in that log. A crash before
recovery ended lost their acknowledged closes. (A first version of logging publishes did.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tierfs.write.recovery import Recovery

from .conftest import core_test, open_core

A = b"a" * 40_000
B = b"b" * 40_000
C = b"c" * 40_000


class Crash(Exception):
    """The daemon killed during recovery (SIGKILL, OOM)."""


@core_test
async def test_a_crash_during_recovery_loses_no_acknowledged_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"a", A)
        await core.write_file(b"b", B)
        await core.write_file(b"c", C)  # three write-back closes, in the log only
        core.crash()
    real = Recovery._publish
    calls = {"n": 0}

    async def slow_then_killed(self: Recovery, sid: str, entry: object, report: object
                               ) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # b: a slow warm tier, and the daemon is killed meanwhile
            await trio.sleep(1.5)  # (the background commits the batch once a second)
            raise Crash()
        await real(self, sid, entry, report)  # type: ignore[arg-type]

    monkeypatch.setattr(Recovery, "_publish", slow_then_killed)
    try:
        async with open_core(tmp_path, durability="writeback", by_rename=False) as again:
            again.crash()
            await again.recover()
    except* Crash:
        pass
    assert calls["n"] == 2
    monkeypatch.setattr(Recovery, "_publish", real)
    assert (tmp_path / "warm" / "a").read_bytes() == A  # (published by copy: logged)
    async with open_core(tmp_path, durability="writeback", by_rename=False) as third:
        report = await third.recover()
        assert third.warm_path(b"b").read_bytes() == B, report
        assert third.warm_path(b"c").read_bytes() == C, report  # fails: c's close lost
