"""A promotion deletes the object at its stub's key after the swap only if it is still the
version the stub named (its ETag). docs/stubs.md: a cold file rewritten on another node may
replace the object under its own key, that node's stub naming the same key and a new ETag; if
that completion lands between this node's download and its delete, the object is the other
node's. Before, the promotion deleted it by key, and the other node's stub named nothing."""

from __future__ import annotations

from pathlib import Path

from .conftest import Stub, core_test, open_core
from .test_demote import DATA, put_warm

NEW = b"written again on another node" * 1000


@core_test
async def test_a_promotion_does_not_delete_another_nodes_newer_object(tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
        old = c.cold(b"big.bin")
        newer: list[Stub] = []

        async def other_node(step: str) -> None:
            if step == "downloaded":
                # Another node completes its rewrite of the file under the same key (the
                # object replaced); its stub goes in place after this node's swap.
                info = c.store.inner.put(old.key, NEW)
                newer.append(Stub(old.key, len(NEW), info.etag, 0o644, 2))

        c.fs.demoter.at_step = other_node
        await c.fs.demoter.promote(b"big.bin")
        c.fs.demoter.at_step = None
        c.put_stub(b"big.bin", newer[0])  # the other node's stub, renamed over the path
        assert c.objects().get(old.key) == NEW, \
            "the promotion deleted the object another node had just written at its key"
        assert await c.read_file(b"big.bin") == NEW
