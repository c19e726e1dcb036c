"""Two journal entries at one path (older data kept for another try, newer data acknowledged
before a crash): when the older one's publish fails at recovery, only the newest entry at a
path may live on in the write-back task; the older one is left to be superseded by the newer's
publish. A first version of handing failed recovery publishes to write-back kept the older
state as the inode's, and recovery died on the newer entry (and would have published the
older data over the newer)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tierfs.write.recovery import Recovery
from tierfs.write.warm import WarmPublisher

from .conftest import core_test, open_core
from .test_recovery_retried import crash_with_acknowledged

V2 = b"2" * 30_000


@core_test
async def test_older_entry_failing_at_recovery_does_not_break_the_newer_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await crash_with_acknowledged(tmp_path)  # V1 acknowledged, not home: entry A
    async with open_core(tmp_path, durability="writeback") as again:
        real_resolve = Recovery._resolve

        async def away(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EIO, "warm tier away")

        monkeypatch.setattr(Recovery, "_resolve", away)
        report = await again.recover()
        assert report.failed == 1  # A kept for the next mount
        monkeypatch.setattr(Recovery, "_resolve", real_resolve)
        again.fs.writeback.quiet = again.fs.writeback.max_wait = 60.0
        await again.write_file(b"f", V2)  # acknowledged, not home: entry B, newer
        assert len(again.journal()) == 2
        again.crash()
    async with open_core(tmp_path, durability="writeback") as third:
        real = WarmPublisher.publish
        calls = {"n": 0}

        async def first_fails(*args: object, **kwargs: object) -> object:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError(errno.EIO, "warm tier away for a moment")
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(WarmPublisher, "publish", first_fails)
        await third.recover()  # fails here: AssertionError (inode.data is A's state)
        await third.until(lambda: third.writeback_pending() == 0)
        # The newer acknowledged data wins, whatever order the tries come in.
        assert third.warm_path(b"f").read_bytes() == V2
        assert await third.read_file(b"f") == V2
