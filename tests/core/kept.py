"""Kept staging, for the tests of what recovery and a failed publish keep: publishes that
fail, a recovery that finds no entry's file, data whose publish failed kept and flushed
(``Journal.keep_staged``: synced == size, durably), and a power loss modelled by putting back
the index as its last durable commit left it."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tierfs.index import Batch
from tierfs.write.recovery import Recovery
from tierfs.write.warm import WarmPublisher

S = b"S" * 30_000


def failing_publishes(monkeypatch: pytest.MonkeyPatch, count: int | None) -> dict[str, int]:
    """The warm tier fails the first ``count`` publishes (None: all, until ``left`` is 0)."""
    real = WarmPublisher.publish
    state = {"left": -1 if count is None else count}

    async def flaky(*args: object, **kwargs: object) -> object:
        if state["left"] != 0:
            state["left"] -= 1
            raise OSError(errno.EIO, "warm tier away")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(WarmPublisher, "publish", flaky)
    return state


async def recover_unresolved(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A recovery that fails for every entry before it finds the entry's file (the warm tier
    away): each is left for the next mount (``Journal.left``). Its report."""
    async def away(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "warm tier away")

    with monkeypatch.context() as m:
        m.setattr(Recovery, "_resolve", away)
        return await core.recover()


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
