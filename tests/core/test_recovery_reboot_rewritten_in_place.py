"""A flushed size (``Entry.synced``, set when a failed publish flushed the staging file)
survived a publish by copy that kept the staging file; a rewrite in place, then a close, left
the entry closed with synced == size, and after a restart of the system recovery took those
never-flushed bytes for flushed and published them instead of setting them aside. A change
below the flushed size now lowers it, durably, as a cut does (``Journal.reopened``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import core_test, open_core
from .test_recovery_linked_entries import failing_publishes

S = b"S" * 30_000
Z = b"Z" * 1_000


@core_test
async def test_rewrite_after_copy_publish_is_not_trusted_as_flushed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = dict(durability="writeback", by_rename=False)
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        await core.write_file(b"p", b"old")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = 0.0
        with monkeypatch.context() as m:
            failing_publishes(m, None)  # write-back publish fails: kept, flushed (synced)
            await core.write_file(b"p", S)
            await core.until(lambda: any(e.synced for e in core.journal().values()))
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.open(b"p", os.O_WRONLY)  # publishes S first, by copy; staging kept
        await core.write_all(fh, Z, offset=0)  # rewritten in place, not flushed
        await core.close(fh)  # acknowledged (write-back), not home
        print({sid: e for sid, e in core.fs.journal.entries.items()})
        core.crash()  # ... and the system loses power
    async with open_core(tmp_path, **opts) as again:
        report = await again.recover(rebooted=True)
        # Closed data not known to be on disk after a restart: set aside, not published.
        assert report.published == 0 and report.set_aside == 1, report
