"""A cold file rewritten (O_TRUNC) streams to its own key; meanwhile another node hard-links
its stub on the warm tree, and the file is renamed through the mount. The upload must not
complete over the object the other name needs: it goes to a key of its own."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, ROOT, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)
NEW = b"N" * (2 * PART + 5)


@core_test
async def test_rewrite_streamed_then_linked_elsewhere_and_renamed(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        await c.write_file(b"big.bin", DATA)
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, NEW)
        f = await c.lookup_path(b"big.bin")
        assert f.data.upload is not None and f.data.upload.key == old.key
        # Another node: ``ln big.bin other.bin`` on the warm tree.
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        await c.fs.rename(ROOT, b"big.bin", ROOT, b"moved.bin", 0)
        try:
            await c.close(fh)
        except OSError:
            pass
        assert await c.publish_all() == []
        assert c.objects().get(old.key) == DATA, "the object other.bin names was overwritten"
        assert await c.read_file(b"other.bin") == DATA
        assert await c.read_file(b"moved.bin") == NEW
