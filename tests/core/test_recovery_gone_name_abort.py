"""An entry whose name another node removed is set aside, then its upload aborted. Should the
abort fail (the bucket not answering), the entry is kept for the abort alone, with no name:
kept naming the path with its staging file, a new file another node made at that name before
the next mount got this node's stale data published over it."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_abort_failing_for_a_gone_name_then_the_name_comes_back(tmp_path: Path) -> None:
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
    store.fail_always("abort_multipart")
    async with open_core(tmp_path, store, **opts) as again:
        await again.recover()  # (this commit: failed=1, the entry kept with its staging)
    store.heal()
    (tmp_path / "warm" / "f").write_bytes(b"theirs")  # another node creates f anew
    async with open_core(tmp_path, store, **opts) as third:
        report = await third.recover()
        got = await third.read_file(b"f")
        assert got == b"theirs", (report, len(got))
