"""A closed entry kept with a flushed size (``keep_staged``: closed, synced == size, durably)
whose first change is an append keeps that flushed size (the bytes below it are unchanged): it
was cleared without a durable commit, so a later rewrite below it found nothing to take back
durably, and after a power loss the index still said closed and flushed at the old size:
recovery published the rewritten, never-flushed bytes as flushed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfs.vfs.filesystem import SetAttr

from .conftest import core_test, open_core
from .kept import S, kept_closed, lose_power

Z = b"Z" * 1_000



@pytest.mark.parametrize("first", ["append", "extend"])
@core_test
async def test_closed_kept_entry_appended_then_rewritten_then_power_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    keep = tmp_path / "durable.mdb"
    async with open_core(tmp_path) as core:  # durability=sync
        fh = await kept_closed(core, monkeypatch, keep)  # (a close of a dup that failed)
        if first == "append":
            await core.write_all(fh, b"T" * 1_000, offset=len(S))  # appended: fine as it is
        else:
            await core.fs.files.truncate(core.fs.files.handles[fh].inode,
                                         SetAttr(),
                                         len(S) + 1_000)  # extended: fine as it is
        await core.write_all(fh, Z, offset=0)  # ... then rewritten in place
        core.crash()  # ... and the system loses power: the last non-durable commits undone
    lose_power(tmp_path, keep)
    async with open_core(tmp_path) as again:
        report = await again.recover(rebooted=True)
        got = await again.read_file(b"p")
        # The rewrite was never closed nor flushed: not published as flushed data.
        assert not got.startswith(b"Z"), (report, got[:4], len(got))
