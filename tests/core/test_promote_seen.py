"""A file looked up (its attributes remembered for an open answered from memory,
``Inode.seen``), then demoted and promoted back within ``attr_timeout``: rekeying the inode to
the file that replaced it forgets those attributes. Before, an open was answered from the
attributes of the file before the demotion (another inode by then), and the first read found
another inode at the path: ESTALE, though nobody but tierfs touched the file."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import core_test, open_core
from .test_demote import DATA, put_warm


@core_test
async def test_a_file_read_after_demotion_and_promotion_reads_its_bytes(
        tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB", attr_timeout=30) as c:
        inode = await c.lookup_path(b"big.bin")  # attributes remembered (seen)
        before = c.warm_path(b"big.bin").stat().st_ino
        # Held open outside the mount, the demoted file's inode is not freed: the promoted
        # file gets another number (a local file system may reuse a freed one at once).
        keep = os.open(c.warm_path(b"big.bin"), os.O_RDONLY)
        try:
            assert (await c.fs.demoter.demote(b"big.bin")).done
            assert (await c.fs.demoter.promote(b"big.bin")).done
        finally:
            os.close(keep)
        assert c.warm_path(b"big.bin").stat().st_ino != before
        fh, _, _ = await c.fs.open(inode.ino, os.O_RDONLY)
        try:
            assert await c.read_all(fh) == DATA
        finally:
            await c.fs.release(fh)
