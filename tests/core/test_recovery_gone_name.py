"""An entry whose name another node removed is set aside by recovery, and then leaves the
journal as any entry not published does, its upload aborted: it stayed in the journal (in
memory, and committed at the end of recovery) for the life of the mount, closed, at a path
with no staging file, and a streaming file's multipart upload stayed in the bucket until the
next mount's recovery found the entry again."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_a_set_aside_entry_leaves_the_journal(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"f", b"old")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", b"new")
        core.crash()
    os.unlink(tmp_path / "warm" / "f")  # another node's rm
    async with open_core(tmp_path, durability="writeback") as again:
        report = await again.recover()
        assert report.set_aside == 1, report
        assert again.journal() == {}, again.journal()
        assert again.stored_journal() == {}, again.stored_journal()


@core_test
async def test_a_set_aside_stream_leaves_no_upload(tmp_path: Path) -> None:
    opts = dict(durability="writeback", large_file_threshold=SMALL)
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        await core.write_file(b"f", b"old")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", content(300_000, seed=3))
        core.crash()
        store = core.store
    store.heal()
    os.unlink(tmp_path / "warm" / "f")  # another node's rm
    async with open_core(tmp_path, store, **opts) as again:
        report = await again.recover()
        assert report.set_aside == 1, report
        assert again.uploads() == [], again.uploads()
        assert again.journal() == {}, again.journal()
