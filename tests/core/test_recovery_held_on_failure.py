"""Recovery raising midway (here: killed while it resolves the newer entry's name) after an
older entry of the same hard-linked file was held on its inode: the held entry is handed to
the write-back task, and the mount fails. The next mount must still end with the newer data at
both names, and nothing staged left."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfs.write.recovery import Recovery

from .conftest import core_test, open_core
from .test_recovery_linked_entries import (B, crash_with_two_entries, failing_publishes,
                                           reads_b)


class Crash(Exception):
    pass


@core_test
async def test_recovery_killed_after_holding_an_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await crash_with_two_entries(tmp_path, monkeypatch, True)
    real = Recovery._resolve
    calls = {"n": 0}

    async def die_second(self: Recovery, rel: bytes) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        return await real(self, rel)

    try:
        async with open_core(tmp_path, durability="writeback") as third:
            failing_publishes(monkeypatch, 1)  # A fails, held
            monkeypatch.setattr(Recovery, "_resolve", die_second)
            third.crash()
            await third.recover()
    except* Crash:
        pass
    assert calls["n"] == 2
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback") as fourth:
        report = await fourth.recover()
        assert report.failed == 0, report
        await reads_b(fourth)
        assert await fourth.publish_all() == []
    async with open_core(tmp_path, durability="writeback") as fifth:
        await fifth.recover()
        await reads_b(fifth)
        assert fifth.warm_path(b"p").read_bytes() == B
        assert fifth.staged() == []
