"""A demoted cold file (its object at a key of its own) rewritten large through the mount
streams to a new key; another node hard-links its stub on the warm tree after the open. The
publish leaves the replaced object to the other name: the link count is read fresh before
the publish (``ColdPublisher.settle_replaced``), not taken from the attributes cached at
open."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)
NEW = b"N" * (2 * PART + 5)


@core_test
async def test_large_rewrite_of_a_demoted_stub_linked_after_open_keeps_the_object(
        tmp_path: Path) -> None:
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "warm" / "big.bin").write_bytes(DATA)
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, NEW)
        # Another node: ``ln big.bin other.bin`` on the warm tree.
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        await c.close(fh)
        assert await c.publish_all() == []
        assert await c.read_file(b"big.bin") == NEW
        assert old.key in c.objects(), "the object other.bin names was deleted"
        assert await c.read_file(b"other.bin") == DATA
