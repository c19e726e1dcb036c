"""A publish renames this node's version over the file's name; another node may rename its
own over it a moment later. What this node records as the published version must be its own
(from the file it renamed), never the other node's: its bytes would otherwise be served as
the other node's file, from the block cache, to every later open on this node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import core_test, open_core

MINE = b"m" * 100_000
THEIRS = b"t" * 100_000  # (the same size: only the identity tells them apart)


@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_a_file_renamed_over_a_publish_just_after_it_is_read_as_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    real_rename = os.rename
    armed = [False]

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_rename(src, dst, *args, **kwargs)
        if armed[0] and dst == b"f":  # this node's publish: the other node's rename follows
            armed[0] = False
            theirs = tmp_path / "warm" / "theirs.tmp"
            theirs.write_bytes(THEIRS)
            real_rename(theirs, tmp_path / "warm" / "f")

    monkeypatch.setattr(os, "rename", rename)
    async with open_core(tmp_path, cache_warm=True, attr_timeout=0.1,
                         by_rename=by_rename) as core:
        fh = await core.create(b"f", flags=os.O_RDWR)
        await core.write_all(fh, MINE)
        armed[0] = True
        await core.fs.fsync(fh)
        assert not armed[0] and core.warm_path(b"f").read_bytes() == THEIRS
        assert await core.read_all(fh) == MINE  # the handle reads what it wrote
        await core.close(fh)
        await trio.sleep(0.2)  # past the attribute timeout
        reader = await core.open(b"f")
        assert await core.read_all(reader) == THEIRS
        await core.close(reader)
