"""Recovery of a file streamed early (``stream_after``) that ended below the threshold, after
its uploaded parts were punched out of staging: they exist in the upload alone, so it is
completed and the file brought back from it, never published from staging's holes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfs.transfer import streaming

from .conftest import MIB, PART, core_test, open_core


def content(n: int, seed: int = 5) -> bytes:
    block = bytes((i * 13 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@core_test
async def test_recovered_early_stream_ending_small_keeps_punched_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = content(2 * PART + MIB)
    conf = dict(large_file_threshold="64MiB", stream_after="64KiB", durability="writeback")
    # The hot tier is short of room: every uploaded part leaves staging at once.
    monkeypatch.setattr(streaming, "free_bytes", lambda fd: 0)
    async with open_core(tmp_path, **conf) as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        (entry,) = core.journal().values()
        assert sorted(entry.upload.parts) == [1, 2, 3]
        store = core.store
        core.crash()
    monkeypatch.undo()
    store.heal()
    async with open_core(tmp_path, store, **conf) as again:
        await again.recover()
        # Its parts exist only in the upload: completed, and brought back to the warm
        # tier (it ends below the threshold), never published with zeros where they were.
        assert again.warm_path(b"f").read_bytes() == data
        assert await again.read_file(b"f") == data
        assert again.objects() == {} and again.uploads() == []
