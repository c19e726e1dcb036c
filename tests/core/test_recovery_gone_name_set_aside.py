"""An entry whose name another node removed, whose set-aside fails (lost+found unwritable, the
hot disk full), is kept nameless: kept closed at the path with its staging file, a file another
node made at that name before the next mount got this node's stale data published over it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tierfs.write.recovery import Recovery

from .conftest import core_test, open_core


@core_test
async def test_set_aside_failing_for_a_gone_name_then_the_name_comes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"f", b"old")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", b"stale data of this node")
        core.crash()
    os.unlink(tmp_path / "warm" / "f")  # another node's rm

    async def fails(self: Recovery, *args: object) -> None:
        raise OSError(errno.EIO, "lost+found: I/O error")

    with monkeypatch.context() as m:
        m.setattr(Recovery, "_set_aside", fails)
        async with open_core(tmp_path, durability="writeback") as again:
            assert (await again.recover()).failed == 1
    (tmp_path / "warm" / "f").write_bytes(b"theirs")  # another node creates f anew
    async with open_core(tmp_path, durability="writeback") as third:
        report = await third.recover()
        got = await third.read_file(b"f")
        assert got == b"theirs", (report, got)
