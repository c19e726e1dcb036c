"""A streaming file whose uploaded parts left the hot tier, unlinked while a reader still has
it open, and closed by its writer: the publish finds no name (the upload kept for the reader's
handle). A read of a freed range asks for a publish, which cannot complete the upload, and
then fails with EIO. Before, it asked again, for ever: the read never returned, and the event
loop spun."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from .conftest import PART, ROOT, core_test
from .test_streaming import SMALL, content, open_short


@core_test
async def test_a_read_of_a_freed_range_of_an_unlinked_streaming_file_returns(tmp_path: Path
                                                                             ) -> None:
    data = content(2 * PART + 1000)
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL,
                          upload_window=2) as core:
        fh = await core.create(b"f", flags=os.O_RDWR)
        reader = await core.open(b"f")
        await core.write_all(fh, data)
        inode = await core.lookup_path(b"f")
        await core.until(lambda: inode.data.upload is not None and inode.data.upload.punched)
        await core.fs.unlink(ROOT, b"f")
        await core.close(fh)  # the writer is done; the reader keeps the file open
        outcome = "hung"
        with trio.move_on_after(5):
            try:
                got = await core.fs.read(reader, 0, 4096)
                outcome = "data" if bytes(got) == data[:4096] else "wrong bytes"
            except OSError:
                outcome = "error"
        await core.fs.release(reader)
        assert outcome in ("data", "error"), f"the read {outcome}"
