"""A publish takes the name from older acknowledged data at its path before it goes home only
where recovery would publish the file's own entry (``Journal.would_publish``, which asks
``journal.publishable``). An entry with an acknowledged prefix that then started streaming to
the bucket passed the looser ``Entry.may_be_published``, though recovery publishes that prefix
only with no upload: when that publish failed and tierfs died, the older entry had lost its
name and the newer was discarded, both lost."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tierfs.write.cold import ColdPublisher

from .conftest import core_test, open_core
from .kept import recover_unresolved

OLD = b"0" * 10_000
A = b"A" * 40_000
B = b"B" * 20_000
MORE = b"C" * 200_000


@pytest.mark.parametrize("publish", [False, True])
@core_test
async def test_acked_prefix_then_streaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           publish: bool) -> None:
    opts = dict(durability="writeback", large_file_threshold="64KiB")
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        await core.write_file(b"p", OLD)
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"p", A)  # acknowledged by its close, not home
        core.crash()
    async with open_core(tmp_path, **opts) as again:
        assert (await recover_unresolved(again, monkeypatch)).failed == 1  # A kept for another try
        again.fs.writeback.quiet = again.fs.writeback.max_wait = 60.0
        fh = await again.open(b"p", os.O_WRONLY | os.O_TRUNC)
        await again.write_all(fh, B)
        await again.fs.flush(fh)  # a close of a dup: B acknowledged
        await again.write_all(fh, MORE, offset=len(B))  # appended: past the threshold
        entry = again.fs.journal.entries[again.fs.files.handles[fh].data.staging_id]
        assert entry.acked == len(B) and entry.upload is not None
        if publish:
            async def fails(*args: object, **kwargs: object) -> None:
                raise OSError(errno.EIO, "bucket away")

            monkeypatch.setattr(ColdPublisher, "publish", fails)
            assert await again.fs.files.publish_all() != []  # (as unmount does; fails)
        again.crash()
    monkeypatch.undo()
    async with open_core(tmp_path, **opts) as third:
        report = await third.recover()
        got = await third.read_file(b"p")
        # B was acknowledged by a close, and the stream's start made it a flushed size
        # (``Journal.streaming``): neither it nor A is lost, and the newer wins.
        assert len(got) >= len(B) and got == (B + MORE)[:len(got)], (report, got[:4],
                                                                     len(got))
