"""A cold file rewritten small (it goes back to the warm tier) while another node hard-links its
stub on the warm tree after the open: the warm publish renames the new file over this name
and leaves the object to the other name."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)


@core_test
async def test_small_rewrite_of_a_stub_linked_after_open_keeps_the_object(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        await c.write_file(b"big.bin", DATA)
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, b"small")
        # Another node: ``ln big.bin other.bin`` on the warm tree.
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        await c.close(fh)
        assert await c.publish_all() == []
        assert await c.read_file(b"big.bin") == b"small"
        assert old.key in c.objects(), "the object other.bin names was deleted"
        assert await c.read_file(b"other.bin") == DATA
