"""A failed truncate below a flushed size puts it back, durably (``as_now``, ``unreopened``),
and common write patterns pay no durable commit per write: none for a write-back close then a
new open for writing, none for plain files in either mode, one in all for data kept after a
failed close and then rewritten."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tierfs.vfs.filesystem import SetAttr
from tierfs.index import Index
from tierfs.write.entries import Entry, load

from .conftest import core_test, open_core
from .kept import S, durable_commits, kept_closed, kept_then_copied




def _durable_entry(tmp_path: Path, keep: Path) -> Entry:
    d = tmp_path / "snap"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    shutil.copyfile(keep, d / "data.mdb")
    idx = Index(d, readonly=True)
    try:
        (entry,) = load(idx).values()
    finally:
        idx.env.close()
    return entry


def _failing_ftruncate(m: pytest.MonkeyPatch) -> None:
    def eio(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "hot disk")
    m.setattr(os, "ftruncate", eio)




@pytest.mark.parametrize("closed", [False, True])
@core_test
async def test_failed_cut_below_flushed_size_restores_it_durably(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed: bool) -> None:
    keep = tmp_path / "durable.mdb"
    opts = {} if closed else dict(durability="writeback", by_rename=False)
    async with open_core(tmp_path, **opts) as core:
        fh = await (kept_closed if closed else kept_then_copied)(core, monkeypatch)
        durable_commits(monkeypatch, core.hot / "index", keep)
        inode = core.fs.files.handles[fh].inode
        before = dict(vars(core.fs.files.handles[fh].data.__class__ and
                           core.fs.journal.entry_of(core.fs.files.handles[fh].data)))
        with monkeypatch.context() as m:
            _failing_ftruncate(m)
            with pytest.raises(OSError):
                await core.fs.files.truncate(inode, SetAttr(), 1_000)
        entry = core.fs.journal.entry_of(core.fs.files.handles[fh].data)
        assert (entry.closed, entry.synced, entry.acked) == (
            before["closed"], before["synced"], before["acked"])
        d = _durable_entry(tmp_path, keep)
        assert d.synced == len(S)
        # and a cut that works lowers it durably (not closed) or clears it (closed)
        await core.fs.files.truncate(inode, SetAttr(), 1_000)
        d = _durable_entry(tmp_path, keep)
        assert not d.closed or d.synced is None or d.synced >= d.size and d.size == 1_000
        assert d.synced in (None, 1_000)
        await core.close(fh)


@pytest.mark.parametrize("pattern", ["writeback_reopen", "sync_kept", "sync_plain",
                                     "writeback_plain"])
@core_test
async def test_durable_commits_per_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         pattern: str) -> None:
    keep = tmp_path / "durable.mdb"
    opts = dict(durability="writeback") if pattern.startswith("writeback") else {}
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        if pattern == "sync_kept":
            fh = await kept_closed(core, monkeypatch)
        else:
            await core.write_file(b"p", S)
            if pattern.startswith("writeback"):
                core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
                if pattern == "writeback_reopen":
                    await core.write_file(b"p", S)  # acknowledged, not home
            fh = await core.open(b"p", os.O_WRONLY)
        calls = durable_commits(monkeypatch, core.hot / "index", keep)
        n = 30
        for i in range(n):
            await core.write_all(fh, b"x" * 1_000, offset=(n - 1 - i) * 1_000)
        await core.write_all(fh, b"y" * 1_000, offset=len(S))
        for i in range(n):
            await core.write_all(fh, b"x" * 1_000, offset=i * 1_000)
        assert calls[0] <= 1, calls[0]
        with monkeypatch.context():
            pass
        await core.close(fh)
