"""An fsync of a streaming file records as flushed only what its fdatasync covered: a truncate
and writes that grow the file back wait for it (the file's lock), and the cut lowers the
flushed size after; after a power loss, recovery never publishes bytes that may be zeros."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from .conftest import PART, SetAttr, core_test, open_core


def content(n: int, seed: int = 3) -> bytes:
    block = bytes((i * 17 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@core_test
async def test_an_fsync_does_not_record_bytes_rewritten_after_a_cut_during_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = content(PART + 100_000)
    cut_at = PART + 10
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        time.sleep(0.4)
        real(fd)

    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        fh = await core.create(b"f")
        await core.write_all(fh, first)
        f = await core.lookup_path(b"f")
        assert f.data.upload is not None
        monkeypatch.setattr(os, "fdatasync", slow_fdatasync)

        async def cut_and_regrow() -> None:
            await trio.sleep(0.1)
            await core.fs.setattr(f.ino, SetAttr(size=cut_at))
            await core.write_all(fh, content(len(first) - cut_at, 9), offset=cut_at)
            regrown.append(True)

        regrown: list[bool] = []
        core.nursery.start_soon(cut_and_regrow)
        await core.fs.fsync(fh)  # (the cut waits for it, or comes during its fdatasync)
        await core.until(lambda: bool(regrown))
        monkeypatch.undo()
        assert f.data.size == len(first)
        await core.sync_journal()
        (entry,) = core.stored_journal().values()
        assert entry.synced is not None and entry.synced <= cut_at, \
            f"synced {entry.synced}: bytes written after the cut, during the fdatasync"
        await core.close(fh)
