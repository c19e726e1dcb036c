"""A publish takes the name from older acknowledged data at its path before it goes home only
for data recovery would publish in its place (closed, or acknowledged). For an fsync of a file
still open for writing it did too: that publish failing and tierfs dying, the newer entry was
discarded (never closed) and the older, kept for another try, had lost its name: the file kept
the content from before both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import core_test, open_core
from .kept import recover_unresolved
from .test_recovery_linked_entries import failing_publishes

OLD = b"0" * 10_000
A = b"A" * 40_000
B = b"B" * 30_000


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_failed_fsync_publish_does_not_lose_older_acknowledged_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    opts = dict(durability="writeback", by_rename=by_rename)
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        await core.write_file(b"p", OLD)
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"p", A)  # acknowledged by its close, not home
        core.crash()
    async with open_core(tmp_path, **opts) as again:
        assert (await recover_unresolved(again, monkeypatch)).failed == 1  # A kept for another try
        fh = await again.open(b"p", os.O_WRONLY | os.O_TRUNC)
        await again.write_all(fh, B)
        failing_publishes(monkeypatch, None)
        with pytest.raises(OSError):
            await again.fs.fsync(fh)  # the publish fails: EIO to the writer
        again.crash()  # before the writer closes
    monkeypatch.undo()
    async with open_core(tmp_path, **opts) as third:
        report = await third.recover()
        got = third.warm_path(b"p").read_bytes()
        assert got == A, (report, got[:4], third.lost_found())
