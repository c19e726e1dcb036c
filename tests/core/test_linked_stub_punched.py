"""A cold file rewritten under its own key, some of whose uploaded parts left staging (the hot
tier was short of room), is hard-linked on the warm tree by another node before its close:
the completion must not overwrite the object the other name needs. The rewrite is given up
instead (what is staged set aside, EIO): only unacknowledged data is lost."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)
NEW = b"N" * (2 * PART + 5)


@core_test
async def test_punched_own_key_rewrite_never_overwrites_a_hard_linked_stubs_object(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        await c.write_file(b"big.bin", DATA)
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, NEW)
        f = await c.lookup_path(b"big.bin")
        upload = f.data.upload
        assert upload is not None and upload.key == old.key
        await c.until(lambda: not upload._running)
        assert await upload.give_back() > 0 and upload.punched  # hot tier short of room
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        try:
            await c.close(fh)
        except OSError:
            pass  # (refusing is fine)
        await c.publish_all()
        assert c.objects().get(old.key) == DATA, "the object other.bin names was overwritten"
        assert await c.read_file(b"other.bin") == DATA
