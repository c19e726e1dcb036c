"""``open`` with ``O_TRUNC``: a read-only open truncates too, as on Linux's own file systems (the
kernel checks write permission and passes the flag on; tierfs truncated only for a writable
handle, and the file kept its content); and an open whose truncate fails leaves no handle
behind (the kernel never closes an open that failed: its handle kept the open state, and
counted as a writer, for ever)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .conftest import core_test, open_core


@core_test
async def test_a_read_only_open_with_o_trunc_truncates(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"warm content")
        inode = await core.lookup_path(b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY | os.O_TRUNC)
        assert await core.read_all(fh) == b""
        await core.fs.release(fh)
        assert core.warm_path(b"f").read_bytes() == b""
        assert await core.read_file(b"f") == b""


@pytest.mark.parametrize("flags", [os.O_WRONLY | os.O_TRUNC, os.O_RDONLY | os.O_TRUNC])
@core_test
async def test_an_open_whose_truncate_fails_leaves_no_handle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: int) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"warm content")
        inode = await core.lookup_path(b"f")

        async def broken(*args: object) -> None:
            raise OSError(errno.EIO, "the truncate failed")

        monkeypatch.setattr(core.fs.files.writer, "truncate", broken)
        with pytest.raises(OSError):
            await core.fs.open(inode.ino, flags)
        monkeypatch.undo()
        assert core.fs.files.handles == {}
        assert inode.data is None or (inode.data.handles, inode.data.writers) == (0, 0)
        assert await core.read_file(b"f") == b"warm content"
