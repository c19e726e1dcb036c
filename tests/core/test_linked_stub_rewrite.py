"""A stub hard-linked on the warm tree (``ln``, ``cp -al``): a rewrite through one name gives
that name the new content and leaves the object the other names still name."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, Core, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)


async def demoted(c: Core, name: bytes) -> None:
    assert (await c.fs.demoter.demote(name)).done
    assert c.stub(name) is not None


@core_test
async def test_rewriting_one_name_of_a_hard_linked_stub_keeps_the_others_data(
        tmp_path: Path) -> None:
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "warm" / "big.bin").write_bytes(DATA)
    async with open_core(tmp_path) as c:
        await demoted(c, b"big.bin")
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        fh = await c.open(b"big.bin", os.O_RDWR)
        await c.fs.write(fh, 0, b"changed")
        try:
            await c.close(fh)
        except OSError:
            pass  # (refusing the rewrite would be fine; losing the other name's data is not)
        await c.publish_all()
        assert await c.read_file(b"other.bin") == DATA, "the other name's data is gone"
