"""Kept staging (a close's publish failed: ``keep_staged``, closed, flushed at its size,
durably) appended to through a descriptor that outlived the close is no longer closed, but its
first bytes are flushed and unchanged (a change below the flushed size takes it back first,
durably): after a power loss, once a durable commit carried that state, recovery set the kept
data aside instead of publishing it, though data whose publish failed is promised to outlive a
restart."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import core_test, open_core
from .test_kept_staging_appended import _snapshot_durable
from .test_recovery_linked_entries import failing_publishes

S = b"S" * 30_000


@core_test
async def test_kept_entry_appended_then_durable_commit_then_power_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = tmp_path / "durable.mdb"
    async with open_core(tmp_path) as core:  # durability=sync
        await core.recover()
        await core.write_file(b"p", b"old")
        _snapshot_durable(monkeypatch, core.hot / "index", keep)
        fh = await core.open(b"p", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, S)
        with monkeypatch.context() as m:
            failing_publishes(m, None)
            with pytest.raises(OSError):
                await core.fs.flush(fh)  # kept: closed, synced=size, durably
        await core.write_all(fh, b"T" * 1_000, offset=len(S))  # appended: S unchanged
        await core.fs.journal.sync(durable=True)  # any durable commit (another file's fsync)
        print("durable:", core.journal())
        core.crash()
    shutil.copyfile(keep, tmp_path / "hot" / "index" / "data.mdb")
    async with open_core(tmp_path) as again:
        print("durable journal:", again.stored_journal())
        report = await again.recover(rebooted=True)
        got = await again.read_file(b"p")
        print(report, got[:4], len(got))
        assert got == S, (report, got[:4], len(got))
