"""A truncate below the fsynced size of a file streaming to the bucket whose ftruncate fails
keeps the fsync promise: ``cut`` lowered the flushed size durably, and nothing put it back
(``reopened`` had taken nothing itself), so a crash then had recovery complete the object at
the cut size, the fsynced data past it lost though staging still held it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tierfs.vfs.filesystem import SetAttr

from .conftest import core_test, open_core

DATA = bytes(range(256)) * 1_000  # 256 kB, past the threshold


@core_test
async def test_failed_cut_keeps_the_fsync_promise(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    opts = dict(durability="writeback", large_file_threshold="64KiB")
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        fh = await core.create(b"p")
        await core.write_all(fh, DATA)
        await core.fs.fsync(fh)
        data = core.fs.files.handles[fh].data
        entry = core.fs.journal.entry_of(data)
        print("fsynced:", entry)
        assert entry.upload is not None and entry.synced == len(DATA)

        def eio(fd: int, size: int) -> None:
            raise OSError(errno.EIO, "hot disk")

        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", eio)
            with pytest.raises(OSError):
                await core.fs.files.truncate(core.fs.files.handles[fh].inode, SetAttr(), 1_000)
        print("after the failed truncate:", entry)
        core.crash()
    async with open_core(tmp_path, **opts) as again:
        report = await again.recover()
        got = await again.read_file(b"p")
        print(report, len(got))
        assert got == DATA, (report, len(got))
