"""Write-back closes are acknowledged in the acknowledgement log, not by an index commit each:
what a crash leaves in the log is applied at recovery, records the index already holds are
not, a record cut short ends the log, and the log is emptied once a commit covers it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tierfs.index import Index
from tierfs.write import acklog

from .conftest import ROOT, Core, core_test, open_core

DATA = b"w" * 30_000


def log_path(core: Core) -> Path:
    acks = core.fs.journal.acks
    assert acks is not None
    return acks.path


def count_commits(core: Core, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = Index.commit

    def commit(self: Index, changes: Any) -> None:
        calls[0] += 1
        real(self, changes)

    monkeypatch.setattr(Index, "commit", commit)
    return calls


@core_test
async def test_a_writeback_close_commits_nothing_and_outlives_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.create(b"f")
        await core.write_all(fh, DATA)
        commits = count_commits(core, monkeypatch)
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
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
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
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
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
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
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
