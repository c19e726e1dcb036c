"""Lookups answered from a listing (``vfs.listed``) after changes through the mount that a
listing taken before them would still describe the old way: each must void the listing, so
that the lookup after it reads the warm tier again."""

from __future__ import annotations

import os
from pathlib import Path

from tierfs.vfs import listed

from .conftest import ROOT, core_test, open_core
from .test_listed import NAMES, fill, look_up_until_listed


@core_test
async def test_a_hard_linked_file_published_in_place_voids_the_listing(tmp_path: Path
                                                                        ) -> None:
    """A hard-linked file is published by writing into its own inode (no rename, no new
    inode number): the listing taken while it was staged still holds its old size."""
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)
        target = NAMES[-1]
        os.link(core.warm_path(target), core.warm_path(b"other-link"))
        fh = await core.open(target, os.O_WRONLY)
        await core.fs.write(fh, 0, b"y" * 100)  # staged: the warm file is unchanged yet
        await look_up_until_listed(core)  # (listed while it is staged)
        await core.close(fh)  # published in place
        await core.until(lambda: core.writeback_pending() == 0)
        assert core.warm_path(target).stat().st_size == 100
        _, attrs = await core.fs.lookup(ROOT, target)
        assert attrs.size == 100
        _, attrs = await core.fs.lookup(ROOT, b"other-link")
        assert attrs.size == 100
