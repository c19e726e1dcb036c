"""Which data is newer when a publish through a hard link supersedes staged data recovery kept
at another name of the file (``Publisher.supersede_links``): data acknowledged, fsynced or
changed in this run is newer than anything a recovery left, whatever the clocks said
(``Journal.older_than`` knows the entries taken over from an earlier run, and compares no
stamp of this run with one of another); data recovery itself publishes late supersedes only
entries acknowledged before it. And a look at the file's names that fails for another reason
than a name gone fails the publish, tried again, rather than leaving the older data kept."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tierfs.write import journal as journal_module
from tierfs.write import publish as publish_module
from tierfs.write.recovery import Recovery

from .conftest import core_test, open_core
from .test_recovery_hardlinks import B, kept_at_p
from .test_recovery_linked_entries import crash_with_two_entries, failing_publishes

HOUR = 3600 * 10**9


def shifted(monkeypatch: pytest.MonkeyPatch, offset: int) -> None:
    """The journal's wall clock ``offset`` ns off."""
    real = time.time_ns
    monkeypatch.setattr(journal_module, "time",
                        SimpleNamespace(time_ns=lambda: real() + offset))


async def third_reads_b(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as third:
        await third.recover()
        assert third.warm_path(b"p2").read_bytes() == B, "older kept data published over B"


@pytest.mark.parametrize("crash", [True, False], ids=["crash", "clean"])
@core_test
async def test_an_fsync_through_a_hard_link_supersedes_kept_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: bool) -> None:
    async with kept_at_p(tmp_path, monkeypatch) as again:
        fh = await again.open(b"p2", os.O_WRONLY | os.O_TRUNC)
        await again.write_all(fh, B)
        await again.fs.fsync(fh)  # published, never closed: B is the file's newest content
        assert again.warm_path(b"p").read_bytes() == B
        if crash:
            again.crash()
        else:
            await again.close(fh)
            assert await again.publish_all() == []
    await third_reads_b(tmp_path)


@core_test
async def test_a_close_stamped_after_the_clock_went_back_supersedes_kept_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with kept_at_p(tmp_path, monkeypatch) as again:
        with monkeypatch.context() as m:
            shifted(m, -HOUR)  # the clock stepped back an hour during the run
            fh = await again.open(b"p2", os.O_WRONLY | os.O_TRUNC)
            await again.write_all(fh, B)
            await again.close(fh)
            assert await again.publish_all() == []
        assert again.warm_path(b"p").read_bytes() == B
    await third_reads_b(tmp_path)


@pytest.mark.parametrize("ahead", [False, True], ids=["same-clock", "earlier-clock-ahead"])
@core_test
async def test_older_data_recovery_publishes_late_keeps_a_newer_entry_left_at_a_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    with monkeypatch.context() as m:
        if ahead:
            shifted(m, HOUR)  # the earlier runs' clock was an hour fast
        await crash_with_two_entries(tmp_path, m, True)  # A at p (older), B at p2
    async with open_core(tmp_path, durability="writeback") as third:
        third.fs.writeback.quiet = third.fs.writeback.max_wait = 60.0
        third.fs.writeback.busy()
        real = Recovery._resolve

        async def p2_away(self: Recovery, rel: bytes) -> object:
            if rel == b"p2":
                raise OSError(errno.EIO, "warm tier away")
            return await real(self, rel)

        with monkeypatch.context() as m:
            m.setattr(Recovery, "_resolve", p2_away)
            failing_publishes(m, 1)  # A's publish fails: held, then handed to write-back
            assert (await third.recover()).failed == 2
        assert await third.publish_all() == []  # write-back publishes the older A, via p
    async with open_core(tmp_path, durability="writeback") as fourth:
        await fourth.recover()
        assert fourth.warm_path(b"p").read_bytes() == B, "the newer B was superseded"


@core_test
async def test_a_failed_look_at_the_files_names_fails_the_publish(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with kept_at_p(tmp_path, monkeypatch) as again:
        inner = again.fs.warm.run

        async def flaky_look(fn: object, *args: object) -> object:
            if fn is publish_module._same_file:
                lstat, rel, paths = args

                def failing(path: bytes) -> os.stat_result:
                    if path == rel:
                        raise OSError(errno.EIO, "the tier hiccups")
                    return lstat(path)  # type: ignore[operator]

                args = (failing, rel, paths)
            return await inner(fn, *args)  # type: ignore[operator]

        again.fs.warm.run = flaky_look  # type: ignore[method-assign]
        fh = await again.open(b"p2", os.O_WRONLY | os.O_TRUNC)
        await again.write_all(fh, B)
        await again.close(fh)
        failed = await again.publish_all()
        again.fs.warm.run = inner  # type: ignore[method-assign]
        if failed:  # (tried again, once the tier answers)
            assert await again.publish_all() == []
        assert again.warm_path(b"p").read_bytes() == B
    await third_reads_b(tmp_path)
