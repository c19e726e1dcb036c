"""A closed entry kept with a flushed size (``keep_staged``: closed, synced == size, durably)
whose first change is an append keeps that flushed size (the bytes below it are unchanged): it
was cleared without a durable commit, so a later rewrite below it found nothing to take back
durably, and after a power loss the index still said closed and flushed at the old size:
recovery published the rewritten, never-flushed bytes as flushed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tierfs.index import Batch

from .conftest import core_test, open_core
from .test_recovery_linked_entries import failing_publishes

S = b"S" * 30_000
Z = b"Z" * 1_000


def _snapshot_durable(monkeypatch: pytest.MonkeyPatch, index_dir: Path, keep: Path) -> None:
    real = Batch.sync

    async def sync(self: Batch, run: object, durable: bool = False) -> None:
        await real(self, run, durable)  # type: ignore[arg-type]
        if durable:
            shutil.copyfile(index_dir / "data.mdb", keep)

    monkeypatch.setattr(Batch, "sync", sync)


@pytest.mark.parametrize("first", ["append", "extend"])
@core_test
async def test_closed_kept_entry_appended_then_rewritten_then_power_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str) -> None:
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
                await core.fs.flush(fh)  # a close of a dup: EIO, kept (closed, synced=size)
        print("kept:", core.journal())
        if first == "append":
            await core.write_all(fh, b"T" * 1_000, offset=len(S))  # appended: fine as it is
        else:
            await core.fs.files.truncate(core.fs.files.handles[fh].inode,
                                         __import__("tierfs.vfs.filesystem", fromlist=["SetAttr"]).SetAttr(),
                                         len(S) + 1_000)  # extended: fine as it is
        print("after the append:", core.journal())
        await core.write_all(fh, Z, offset=0)  # ... then rewritten in place
        print("after the rewrite:", core.journal())
        core.crash()  # ... and the system loses power: the last non-durable commits undone
    shutil.copyfile(keep, tmp_path / "hot" / "index" / "data.mdb")
    async with open_core(tmp_path) as again:
        print("durable journal:", again.stored_journal())
        report = await again.recover(rebooted=True)
        got = await again.read_file(b"p")
        print(report, got[:4], len(got))
        # The rewrite was never closed nor flushed: not published as flushed data.
        assert not got.startswith(b"Z"), (report, got[:4], len(got))
