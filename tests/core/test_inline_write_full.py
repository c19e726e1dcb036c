"""Staging pwrites up to ``INLINE_WRITE`` (128 KiB) run on the event loop: a full hot disk
still makes room for them (``make_room``), for a new file's first write (``new_staging_with``)
and for later ones, at sizes between the old limit (64 KiB) and the new one, and at the limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tierfs.tiers.hot import INLINE_WRITE

from .conftest import MIB, core_test
from .test_hot_full import full_of_cached_blocks


@pytest.mark.parametrize("chunk", [100 * 1024, INLINE_WRITE])
@core_test
async def test_inline_writes_make_room_on_a_full_hot_disk(tmp_path: Path, chunk: int) -> None:
    assert INLINE_WRITE == 128 * 1024
    async with full_of_cached_blocks(tmp_path, b"small") as core:
        data = os.urandom(3 * MIB)
        made_room: list[int] = []
        real = core.fs.staging.make_room

        async def make_room(nbytes: int) -> None:
            made_room.append(nbytes)
            await real(nbytes)

        core.fs.staging.make_room = make_room  # type: ignore[method-assign]
        fh = await core.create(b"new")
        await core.write_all(fh, data, chunk=chunk)  # every request inline, and full first
        await core.close(fh)
        assert (tmp_path / "warm" / "new").read_bytes() == data
        assert made_room and set(made_room) == {chunk}  # the inline writes found it full
        assert core.fs.cache.used < 6 * MIB  # cached blocks made the room
