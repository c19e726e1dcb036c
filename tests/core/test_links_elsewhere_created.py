"""A file created through this mount, hard-linked by another node, then unlinked here: its
publishes write in place through its descriptor, which stays open for the next one (a
created file's descriptor has no ``warm_id`` to tell it from one a publish by copy replaced)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import ROOT, core_test, open_core


@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_a_created_file_linked_elsewhere_keeps_writes_after_an_fsync(
        tmp_path: Path, by_rename: bool) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        fh = await core.create(b"a", flags=os.O_RDWR)
        os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
        await core.write_all(fh, b"first")
        await core.fs.unlink(ROOT, b"a")
        await core.fs.fsync(fh)
        assert core.warm_path(b"b").read_bytes() == b"first"
        await core.write_all(fh, b" second", offset=5)
        await core.close(fh)
        await core.publish_all()
        assert core.warm_path(b"b").read_bytes() == b"first second"
