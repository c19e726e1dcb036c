"""A cold file rewritten under its own key (O_TRUNC, streamed) while another node moves it (its
stub, naming the old object) to another name: the rewrite never completes onto the moved
file's object; its content goes to a key of its own, and, its name being gone, is taken as
unlinked here ("the new object deleted and the replaced one left to whoever moved or removed
the file")."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, core_test, open_core


def content(n: int, seed: int) -> bytes:
    block = bytes((i * 3 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@core_test
async def test_a_file_moved_by_another_node_during_its_own_key_rewrite_keeps_its_data(
        tmp_path: Path) -> None:
    old, new = content(PART + 1000, 1), content(PART + 1000, 2)
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.write_file(b"f", old)
        assert core.cold(b"f").key == "f"
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, new)  # streams to key "f": the file's own
        os.rename(core.warm_path(b"f"), core.warm_path(b"moved"))  # another node's mv
        try:
            await core.close(fh)
        except OSError:
            pass
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
        stub = again.cold(b"moved")
        assert stub.key == "f"
        # (read from the bucket, not from the blocks this node kept of the old version)
        assert again.objects().get("f") == old
        await again.evict(b"moved")
        assert await again.read_file(b"moved") == old
