"""Kept staging (a close's publish failed: ``keep_staged``, closed, flushed at its size,
durably) appended to through a descriptor that outlived the close is no longer closed, but its
first bytes are flushed and unchanged (a change below the flushed size takes it back first,
durably): after a power loss, once a durable commit carried that state, recovery set the kept
data aside instead of publishing it, though data whose publish failed is promised to outlive a
restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import core_test, open_core
from .kept import S, kept_closed, lose_power


@core_test
async def test_kept_entry_appended_then_durable_commit_then_power_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = tmp_path / "durable.mdb"
    async with open_core(tmp_path) as core:  # durability=sync
        fh = await kept_closed(core, monkeypatch, keep)  # (a close of a dup that failed)
        await core.write_all(fh, b"T" * 1_000, offset=len(S))  # appended: S unchanged
        await core.fs.journal.sync(durable=True)  # any durable commit (another file's fsync)
        core.crash()
    lose_power(tmp_path, keep)
    async with open_core(tmp_path) as again:
        report = await again.recover(rebooted=True)
        got = await again.read_file(b"p")
        assert got == S, (report, got[:4], len(got))
