"""A cold file rewritten under its own key (streaming), hard-linked by another node on the warm
tree, then renamed through the mount: its close moves the upload off the shared key, finds the
file now hard-linked (not to be streamed), and publishes it to the warm tier: the close does
not fail."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, ROOT, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)
NEW = b"N" * (2 * PART + 5)


@core_test
async def test_close_of_a_renamed_rewrite_linked_elsewhere_does_not_fail(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        await c.write_file(b"big.bin", DATA)
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, NEW)
        f = await c.lookup_path(b"big.bin")
        assert f.data.upload is not None and f.data.upload.key == old.key
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        await c.fs.rename(ROOT, b"big.bin", ROOT, b"moved.bin", 0)
        await c.close(fh)  # EIO on the current code
        assert await c.read_file(b"moved.bin") == NEW
        assert await c.read_file(b"other.bin") == DATA
