"""Recovery decides which entry at a path it retries by path (``Recovery._newest``). Two files
that held one path at different times (A written at p, closed, renamed away to q, B written
at p; or A renamed onto p after B was written there) must each end with their own latest
content after a crash, whether recovery's publishes succeed or fail and are retried."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tierfs.write.warm import WarmPublisher

from .conftest import ROOT, Core, core_test, open_core

A = b"A" * 40_000
B = b"B" * 30_000
OLD = b"0" * 10_000


def hold(core: Core) -> None:
    core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0


async def mount_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool,
                      expect: dict[bytes, bytes], gone: list[bytes]) -> None:
    async with open_core(tmp_path, durability="writeback") as again:
        real = WarmPublisher.publish
        away = [fail]

        async def flaky(*args: object, **kwargs: object) -> object:
            if away[0]:
                raise OSError(errno.EIO, "warm tier away")
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(WarmPublisher, "publish", flaky)
        report = await again.recover()
        assert report.failed == (len(expect) if fail else 0), report
        for path, want in expect.items():
            assert await again.read_file(path) == want, (path, report)
        away[0] = False
        for path, want in expect.items():
            await again.until(lambda: again.warm_path(path).read_bytes() == want)
        await again.until(lambda: again.staged() == [])
        for path in gone:
            assert not again.warm_path(path).exists()
    async with open_core(tmp_path, durability="writeback") as third:  # nothing left over
        await third.recover()
        for path, want in expect.items():
            assert third.warm_path(path).read_bytes() == want


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "failing"])
@core_test
async def test_renamed_away_then_new_file_at_the_old_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"p", OLD)
        assert await core.publish_all() == []
        hold(core)
        await core.write_file(b"p", A)  # A acknowledged at p
        await core.fs.rename(ROOT, b"p", ROOT, b"q", 0)
        await core.write_file(b"p", B)  # a new file B at p
        core.crash()
    await mount_again(tmp_path, monkeypatch, fail, {b"q": A, b"p": B}, [])


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "failing"])
@core_test
async def test_renamed_onto_a_path_written_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        hold(core)
        await core.write_file(b"q", A)  # A acknowledged first
        await core.write_file(b"p", B)  # B acknowledged later
        await core.fs.rename(ROOT, b"q", ROOT, b"p", 0)  # A over B
        core.crash()
    await mount_again(tmp_path, monkeypatch, fail, {b"p": A}, [b"q"])


@pytest.mark.parametrize("fail", [False, True], ids=["ok", "failing"])
@core_test
async def test_newer_written_then_renamed_onto_an_older_ones_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        hold(core)
        await core.write_file(b"p", A)  # A acknowledged at p
        await core.write_file(b"q", B)  # B acknowledged later at q
        await core.fs.rename(ROOT, b"q", ROOT, b"p", 0)  # B over A
        await core.write_file(b"q", A + B)  # and a third at q
        core.crash()
    await mount_again(tmp_path, monkeypatch, fail, {b"p": B, b"q": A + B}, [])
