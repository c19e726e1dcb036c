"""A created file streaming to the bucket, hard-linked by another node on the warm tree, then
unlinked here: its writes are published in place to the name that remains (the upload is
dropped: a stub cannot be hard-linked), never dropped with a successful close."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, ROOT, core_test, open_core

DATA = bytes(range(256)) * (2 * PART // 256 + 9)


@core_test
async def test_streaming_file_linked_elsewhere_then_unlinked_keeps_its_writes(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        fh = await core.create(b"a", flags=os.O_RDWR)
        await core.write_all(fh, DATA[:PART + 10])
        f = await core.lookup_path(b"a")
        assert f.data.upload is not None  # streaming
        os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
        await core.fs.unlink(ROOT, b"a")
        await core.write_all(fh, DATA[PART + 10:], offset=PART + 10)
        try:
            await core.close(fh)
        except OSError:
            pass  # (refusing is fine; silently losing the data is not)
        await core.publish_all()
        b = core.warm_path(b"b")
        got = b.read_bytes() if not b.is_symlink() else await core.read_file(b"b")
        assert got == DATA, f"b holds {len(got)} bytes, the writes went nowhere"
