"""Closed data whose publish failed is flushed to the hot disk and then said to be so in the
journal (``Journal.keep_staged``: synced = size), so that recovery after a power loss trusts
it. The fdatasync runs without the file's lock: a write meanwhile (another thread of the
writer, or a new writer) may land after it began and so not be on the disk. The journal must
then not say the rewritten bytes are flushed: with synced = size left standing, the writer's
next close finds the data "flushed at its size" and flushes nothing, and a power loss then has
recovery publish bytes that may never have reached the disk."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trio

from .conftest import core_test, open_core
from .test_recovery_linked_entries import failing_publishes

S = b"S" * 30_000


@core_test
async def test_a_write_during_the_flush_of_kept_data_is_not_taken_for_flushed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="sync") as core:
        await core.recover()
        await core.write_file(b"p", b"old")
        fh = await core.open(b"p", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, S)
        data = core.fs.files.handles[fh].data
        staging_fd = data.staging_fd
        events: list[str] = []
        started, go_on = threading.Event(), threading.Event()
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            if fd == staging_fd:
                events.append("flush")
                if not go_on.is_set():
                    started.set()
                    go_on.wait(10)
            real(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        failing_publishes(monkeypatch, None)

        async def rewrite() -> None:
            await core.until(started.is_set)
            await core.fs.write(fh, 0, b"new bytes")  # lands while the flush runs
            events.append("rewrite")
            go_on.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(rewrite)
            with pytest.raises(OSError):
                await core.fs.flush(fh)  # its publish fails: kept, and flushed
        with pytest.raises(OSError):
            await core.fs.flush(fh)  # the writer's close: its publish fails again
        entry = core.fs.journal.entry_of(data)
        assert entry is not None and entry.closed
        if entry.synced:
            # Said to be on the disk from 0 on: a flush must have begun after the rewrite.
            assert "flush" in events[events.index("rewrite"):], (
                f"synced={entry.synced}, but no flush since the rewrite: {events}")
        go_on.set()
        await core.fs.release(fh)
