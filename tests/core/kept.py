"""Kept staging, for the tests of its flushed size: data whose publish failed stays staged and
is flushed first (``Journal.keep_staged``: synced == size, durably), and a power loss is
modelled by putting back the index as its last durable commit left it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tierfs.index import Batch

from .test_recovery_linked_entries import failing_publishes

S = b"S" * 30_000


def durable_commits(monkeypatch: pytest.MonkeyPatch, index_dir: Path | None = None,
                    keep: Path | None = None) -> list[int]:
    """Count the durable commits from now on (``[count]``); with ``keep``, copy the index's
    data file there after each: what a power loss leaves."""
    calls = [0]
    real = Batch.sync

    async def sync(self: Batch, run: object, durable: bool = False) -> None:
        await real(self, run, durable)  # type: ignore[arg-type]
        if durable:
            calls[0] += 1
            if keep is not None and index_dir is not None:
                shutil.copyfile(index_dir / "data.mdb", keep)

    monkeypatch.setattr(Batch, "sync", sync)
    return calls


def lose_power(root: Path, keep: Path) -> None:
    """The index as its last durable commit left it."""
    shutil.copyfile(keep, root / "hot" / "index" / "data.mdb")


async def kept_closed(core: Any, monkeypatch: pytest.MonkeyPatch, keep: Path | None = None
                      ) -> int:
    """``p`` written S through a handle whose flush fails (a close of a dup, sync mode): kept,
    closed, flushed at its size. Returns the handle, still open. ``keep``: as for
    ``durable_commits``, from before the open."""
    await core.recover()
    await core.write_file(b"p", b"old")
    if keep is not None:
        durable_commits(monkeypatch, core.hot / "index", keep)
    fh = await core.open(b"p", os.O_WRONLY | os.O_TRUNC)
    await core.write_all(fh, S)
    with monkeypatch.context() as m:
        failing_publishes(m, None)
        with pytest.raises(OSError):
            await core.fs.flush(fh)
    return fh


async def kept_then_copied(core: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """S kept (a write-back publish failed: flushed, synced), then an open for writing
    publishes it by copy, keeping staging and its flushed size. Returns that handle."""
    await core.recover()
    await core.write_file(b"p", b"old")
    assert await core.publish_all() == []
    core.fs.writeback.quiet = 0.0
    with monkeypatch.context() as m:
        failing_publishes(m, None)
        await core.write_file(b"p", S)
        await core.until(lambda: any(e.synced for e in core.journal().values()))
    core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
    return await core.open(b"p", os.O_WRONLY)
