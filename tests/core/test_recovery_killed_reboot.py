"""A recovery after a restart of the system, killed midway, must be followed by a mount that
still knows the system restarted. ``Index.begin_run`` records the new boot id at mount, before
recovery runs, so the next mount, under the same boot id, recovered with ``rebooted=False``:
it published closed write-back data that was never flushed to disk (possibly zeros or torn
after the power loss) over the file's good content, where the interrupted recovery would have
set it aside. A mark in the index now stays until a recovery ends (``REBOOT_PENDING``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tierfs.index as index_module
from tierfs.index import Index
from tierfs.write.recovery import Recovery

from .conftest import core_test, open_core


class Crash(Exception):
    """The daemon killed during recovery."""


def _mount_says_rebooted(root: Path, boot: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    """What ``Index.begin_run`` tells a mount under boot id ``boot`` (as session._open_fs)."""
    monkeypatch.setattr(index_module, "boot_id", lambda: boot)
    index = Index(root / "hot" / "index")
    try:
        return index.begin_run().rebooted
    finally:
        index.close()


@core_test
async def test_a_killed_recovery_after_a_reboot_is_not_followed_by_a_normal_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hot").mkdir()
    (tmp_path / "warm").mkdir()
    (tmp_path / "cold").mkdir()
    assert not _mount_says_rebooted(tmp_path, b"boot-1", monkeypatch)
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        for name in (b"a", b"b"):
            await core.write_file(name, b"old " + name)
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        for name in (b"a", b"b"):
            await core.write_file(name, b"new, never flushed to disk " + name)
        core.crash()  # then the system restarts

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    assert rebooted
    real = Recovery._set_aside
    calls = {"n": 0}

    async def die_at_second(self: Recovery, *args: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        await real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Recovery, "_set_aside", die_at_second)
    try:
        async with open_core(tmp_path, durability="writeback") as again:
            again.crash()
            await again.recover(rebooted=rebooted)
    except* Crash:
        pass
    assert calls["n"] == 2
    monkeypatch.setattr(Recovery, "_set_aside", real)

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)  # same boot: False
    async with open_core(tmp_path, durability="writeback") as third:
        report = await third.recover(rebooted=rebooted)
        got = {n: third.warm_path(n).read_bytes() for n in (b"a", b"b")}
        # The interrupted recovery would have set both aside: each file keeps "old ...".
        assert got == {b"a": b"old a", b"b": b"old b"}, (rebooted, report, got)
