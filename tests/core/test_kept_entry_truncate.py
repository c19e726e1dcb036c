"""Staged data whose recovery failed before its file was found (the warm tier away) stays
journaled for the next mount; a truncate by path made through the mount meanwhile (no open
state: straight to the warm file) supersedes it, as a publish of new content does, so the
next mount does not publish the older data over it. It used to."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tierfs.write.recovery import Recovery

from .conftest import SetAttr, core_test, open_core
from .test_recovery_retried import BEFORE, crash_with_acknowledged

@core_test
async def test_a_truncate_after_a_failed_recovery_is_not_undone_at_the_next_mount(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await crash_with_acknowledged(tmp_path)
    async with open_core(tmp_path, durability="writeback") as again:
        real = Recovery._resolve

        async def failing(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EIO, "warm tier away")

        monkeypatch.setattr(Recovery, "_resolve", failing)
        report = await again.recover()
        assert report.failed == 1  # kept for the next mount
        monkeypatch.setattr(Recovery, "_resolve", real)
        f = await again.lookup_path(b"f")
        await again.fs.setattr(f.ino, SetAttr(size=3))  # truncate -s 3 f
        assert again.warm_path(b"f").read_bytes() == BEFORE[:3]
    async with open_core(tmp_path, durability="writeback") as third:
        report = await third.recover()
        assert third.warm_path(b"f").read_bytes() == BEFORE[:3], report
