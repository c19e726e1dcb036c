"""A flushed size that outlives a close (kept staging after a publish by copy) is taken back
once, durably, by the first change below it, in both branches of ``Journal.reopened``: lowered
to the write's offset at each write, it cost a durable commit per write going backwards, and,
picked up by an upload that started when the file grew past the threshold, read to recovery as
a stream's fsync promise (a crash of tierfs published the first bytes only); cleared with a
commit that was not durable in the closed branch, a power loss left the index saying closed and
flushed, and recovery after the restart published the rewritten staging as flushed data. A
failed write puts it back durably too (``unreopened``)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tierfs.write.writer import Writer

from .conftest import core_test, open_core
from .kept import S, durable_commits, kept_closed, kept_then_copied, lose_power

Z = b"Z" * 1_000




@core_test
async def test_backward_writes_each_pay_a_durable_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        fh = await kept_then_copied(core, monkeypatch)
        calls = durable_commits(monkeypatch)
        n = 20
        for i in range(n):  # pages rewritten from the end towards the start
            await core.write_all(fh, b"x" * 1_000, offset=(n - 1 - i) * 1_000)
        await core.close(fh)
        assert calls[0] <= 1, calls[0]


@core_test
async def test_lowered_kept_size_becomes_a_stream_promise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = dict(durability="writeback", by_rename=False, large_file_threshold="64KiB")
    async with open_core(tmp_path, **opts) as core:
        fh = await kept_then_copied(core, monkeypatch)
        assert await core.read_file(b"p") == S  # home
        await core.write_all(fh, Z, offset=0)  # rewritten in place: synced lowered to 0
        await core.write_all(fh, b"C" * 100_000, offset=len(S))  # past the threshold: streams
        core.crash()  # tierfs alone; never closed, never fsynced
    async with open_core(tmp_path, **opts) as again:
        report = await again.recover()
        got = await again.read_file(b"p")
        # Nothing was closed or fsynced since S went home: S stays.
        assert got == S, (report, len(got), got[:4])



@core_test
async def test_closed_kept_entry_rewritten_then_power_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = tmp_path / "durable.mdb"
    async with open_core(tmp_path) as core:  # durability=sync
        fh = await kept_closed(core, monkeypatch, keep)  # (a close of a dup that failed)
        await core.write_all(fh, Z, offset=0)  # the other descriptor rewrites in place
        core.crash()  # ... and the system loses power: the last (non-durable) commit undone
    lose_power(tmp_path, keep)
    async with open_core(tmp_path) as again:
        report = await again.recover(rebooted=True)
        got = await again.read_file(b"p")
        # Half-written (never closed since the rewrite, never flushed): not published.
        assert report.published == 0, (report, got[:4])


@core_test
async def test_failed_rewrite_of_a_closed_kept_entry_then_power_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The companion of the above once ``reopened`` commits durably there: ``unreopened``
    (the write failed, staging unchanged) must restore "closed, flushed" durably too, or the
    kept data the close failed on is discarded by recovery after a power loss."""
    keep = tmp_path / "durable.mdb"
    async with open_core(tmp_path) as core:  # durability=sync
        fh = await kept_closed(core, monkeypatch, keep)  # (a close of a dup that failed)
        with monkeypatch.context() as m:

            async def eio(*args: object) -> int:
                raise OSError(errno.EIO, "hot disk")

            m.setattr(Writer, "_pwrite", eio)
            with pytest.raises(OSError):
                await core.write_all(fh, Z, offset=0)  # failed: staging as it was
        core.crash()
    lose_power(tmp_path, keep)
    async with open_core(tmp_path) as again:
        report = await again.recover(rebooted=True)
        got = await again.read_file(b"p")
        assert got == S, (report, got[:4], len(got))
