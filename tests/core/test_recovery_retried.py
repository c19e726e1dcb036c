"""Acknowledged data whose publish fails at recovery (the warm tier away at mount) is read as
written from then on and published in the background once the tier answers, as after a live
close whose publish failed. It used to be left for the next mount alone: the file read as
before all along, and a change made to that through the mount superseded the acknowledged
data (a write-back save lost)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tierfs.write.warm import WarmPublisher

from .conftest import core_test, open_core

V1 = b"1" * 50_000
BEFORE = b"0" * 20_000


async def crash_with_acknowledged(tmp_path: Path) -> None:
    """A write-back mount where ``f`` holds BEFORE on the warm tier and V1 acknowledged
    (logged, not home yet) when tierfs crashes."""
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"f", BEFORE)
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", V1)  # acknowledged, not home yet
        core.crash()


@core_test
async def test_data_recovery_failed_to_publish_is_read_and_published_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await crash_with_acknowledged(tmp_path)
    async with open_core(tmp_path, durability="writeback") as again:
        real = WarmPublisher.publish
        away = True

        async def flaky(*args: object, **kwargs: object) -> object:
            if away:
                raise OSError(errno.EIO, "warm tier away")
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(WarmPublisher, "publish", flaky)
        report = await again.recover()
        assert report.failed == 1
        assert await again.read_file(b"f") == V1  # (was: BEFORE, until the next mount)
        away = False
        await again.until(lambda: again.warm_path(b"f").read_bytes() == V1)
        await again.until(lambda: again.staged() == [])
        assert await again.read_file(b"f") == V1
