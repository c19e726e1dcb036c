"""Write-back closes are acknowledged in the acknowledgement log, not by an index commit each:
what a crash leaves in the log is applied at recovery, records the index already holds are
not, a record cut short ends the log, and the log is emptied once a commit covers it."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.index import Index
from tierfs.write import acklog

from .conftest import ROOT, Core, core_test, open_core

DATA = b"w" * 30_000


def log_path(core: Core) -> Path:
    return core.fs.journal.acks.path


def watch_commits(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[int]:
    """Count the index's commits from now on; each takes ``delay`` seconds more (a slow
    disk's fdatasync: other calls come meanwhile)."""
    calls = [0]
    real = Index.commit

    def commit(self: Index, changes: Any) -> None:
        calls[0] += 1
        time.sleep(delay)
        real(self, changes)

    monkeypatch.setattr(Index, "commit", commit)
    return calls


async def writeback_core_ready(core: Core) -> None:
    """Recovered (the log is emptied from now on) and publishing only when told."""
    await core.recover()
    core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0


@core_test
async def test_a_writeback_close_commits_nothing_and_outlives_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        fh = await core.create(b"f")
        await core.write_all(fh, DATA)
        commits = watch_commits(monkeypatch)
        await core.close(fh)
        assert commits[0] == 0
        assert stat.S_IMODE(os.stat(log_path(core)).st_mode) == 0o600
        core.crash()  # (the batch, with the entry, is lost)
    async with open_core(tmp_path, durability="writeback") as again:
        report = await again.recover()
        assert report.published == 1
        assert again.warm_path(b"f").read_bytes() == DATA
        assert os.path.getsize(log_path(again)) == 0  # applied, committed: emptied


@core_test
async def test_the_log_is_emptied_once_a_commit_covers_it(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        for name in (b"a", b"b", b"c"):
            await core.write_file(name, DATA)
        assert len(list(acklog.records(log_path(core)))) == 3
        await core.sync_journal()
        await core.write_file(b"d", DATA)
        (record,) = acklog.records(log_path(core))  # the three earlier ones are committed
        assert core.fs.journal.entries[record[1]].path == b"d"


@core_test
async def test_records_the_index_holds_are_not_applied_again(tmp_path: Path) -> None:
    # Acknowledged, then renamed (the rename commits): the record, older than the commit,
    # must not put the entry back under its first name.
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.write_file(b"a", DATA)
        await core.fs.rename(ROOT, b"a", ROOT, b"b", 0)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        (entry,) = again.stored_journal().values()
        assert entry.path == b"b" and entry.closed
        await again.recover()
        assert again.warm_path(b"b").read_bytes() == DATA
        assert not again.warm_path(b"a").exists()


@core_test
async def test_a_record_cut_short_ends_the_log(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        await core.write_file(b"a", DATA)
        path = log_path(core)
        core.crash()
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])  # a second record's write cut short by the crash
    async with open_core(tmp_path, durability="writeback") as again:
        report = await again.recover()
        assert report.published == 1 and report.failed == 0
        assert again.warm_path(b"a").read_bytes() == DATA


@core_test
async def test_a_failed_append_never_erases_a_record_another_close_made_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a's record cannot be written (disk full): its close waits for a commit instead. b's
    # close comes while that commit runs, and its record is in no commit yet.
    async with open_core(tmp_path, durability="writeback") as core:
        await writeback_core_ready(core)
        fa = await core.create(b"a")
        await core.write_all(fa, DATA)
        fb = await core.create(b"b")
        await core.write_all(fb, DATA)
        real_append = acklog.AckLog.append
        failed = [False]

        def append(self: acklog.AckLog, sid: str, encoded: bytes) -> int:
            if not failed[0]:
                failed[0] = True
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_append(self, sid, encoded)

        monkeypatch.setattr(acklog.AckLog, "append", append)
        watch_commits(monkeypatch, delay=0.3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.close, fa)
            await trio.sleep(0.1)
            await core.close(fb)
        core.crash()
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"a").read_bytes() == DATA
        assert again.warm_path(b"b").read_bytes() == DATA, "b's acknowledged close was lost"


@pytest.mark.parametrize("meanwhile", ["write", "fsync"])
@core_test
async def test_a_close_waiting_for_room_in_the_log_acknowledges_the_file_as_it_is_then(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str) -> None:
    # Past the log's limit, a close waits for a commit first. A descriptor sharing the file
    # (dup) writes or fsyncs meanwhile: what the close acknowledges is the file after that,
    # under its staging file then (an fsync published it by rename: a new one or none).
    async with open_core(tmp_path, durability="writeback", by_rename=True) as core:
        await writeback_core_ready(core)
        monkeypatch.setattr(acklog, "LIMIT", 0)  # (stands for a log past 4 MiB)
        await core.write_file(b"z", DATA)  # a record no commit covers yet
        fh = await core.create(b"f")
        await core.write_all(fh, DATA)
        watch_commits(monkeypatch, delay=0.3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.fs.flush, fh)
            await trio.sleep(0.1)
            if meanwhile == "write":
                await core.fs.write(fh, 0, b"half")
            else:
                await core.fs.fsync(fh)
        core.crash()
    monkeypatch.undo()
    async with open_core(tmp_path, durability="writeback", by_rename=True) as again:
        await again.recover()
        expected = b"half" + DATA[4:] if meanwhile == "write" else DATA
        assert again.warm_path(b"f").read_bytes() == expected
