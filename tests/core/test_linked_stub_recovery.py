"""Recovery of a cold file rewritten under its own key (a fsynced stream, then a crash) after
another node hard-linked its stub: the resumed upload never completes over the object the
other name still names."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)
NEW = b"N" * (2 * PART + 5)


@core_test
async def test_recovery_of_an_own_key_rewrite_keeps_a_hard_linked_stubs_object(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        await c.write_file(b"big.bin", DATA)
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, NEW)
        f = await c.lookup_path(b"big.bin")
        assert f.data.upload is not None and f.data.upload.key == old.key
        await c.fs.fsync(fh)
        (entry,) = c.stored_journal().values()
        assert entry.synced == len(NEW) and entry.upload.parts
        # Another node: ``ln big.bin other.bin`` on the warm tree; then this node crashes.
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        c.crash()
        store = c.store
    async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
        await again.recover()
        assert again.objects().get(old.key) == DATA, \
            "recovery completed the rewrite over the object other.bin names"
        assert await again.read_file(b"other.bin") == DATA
