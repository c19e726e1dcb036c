"""A node killed after its multipart upload was created and before the upload's id reached the
journal (a lost reply, then a crash) aborts, at recovery, only the key's uploads that hold
no part (its own holds none): another node streaming the same path keeps its upload
(docs/stubs.md:
"its recovery after a crash aborts that upload alone, never another node's of the same
key")."""

from __future__ import annotations

import os
import random
from pathlib import Path

from .conftest import PART, core_test, open_core


def content(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@core_test
async def test_recovery_without_an_upload_id_leaves_another_nodes_upload(
        tmp_path: Path) -> None:
    (tmp_path / "hot-b").mkdir(mode=0o700)
    from_b = content(PART + 1000, 5)
    async with open_core(tmp_path, hot=str(tmp_path / "hot-b"),
                         large_file_threshold="64KiB") as b:
        fb = await b.create(b"ckpt")
        await b.write_all(fb, from_b)
        await b.until(lambda: len(b.uploads()) == 1)
        # (its first part stored: B's upload holds a part when A's recovery looks)
        await b.until(lambda: any(1 in e.upload.parts for e in b.journal().values()
                                  if e.upload is not None))
        ((_, b_upload),) = b.uploads()
        async with open_core(tmp_path, large_file_threshold="64KiB") as a:
            # A's upload is created, its reply lost (A's write fails), and A is killed
            # before a later try journals any id: the journal names the key, no id.
            a.store.lose_reply("create_multipart")
            fa = await a.open(b"ckpt", os.O_WRONLY)
            try:
                await a.write_all(fa, content(PART + 1000, 6))
            except OSError:
                pass
            assert len(a.uploads()) == 2
            (entry,) = a.stored_journal().values()
            assert entry.upload is not None and entry.upload.upload_id is None
            store = a.store
            a.crash()
        store.heal()
        async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
            await again.recover()
        assert [u for _, u in b.uploads()] == [b_upload]  # B's, still there; A's gone
        await b.close(fb)
        assert await b.read_file(b"ckpt") == from_b
