"""A file in the bucket that this node rewrites while another node changes its mode (a chmod
there rewrites the stub at the name, same object): the new stub this node's close puts in
place keeps the other node's mode, as a warm publish keeps the mode of the file at the name.
It took the mode this node remembered, so a mode narrowed to shut readers out came back
wide."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from .conftest import core_test, open_core

DATA = bytes(range(256)) * 400  # (past the 16 KiB threshold below: in the bucket)


@pytest.mark.parametrize("mode", [0o600, 0o664])
@core_test
async def test_a_rewrite_keeps_the_mode_another_node_gave(tmp_path: Path, mode: int) -> None:
    async with open_core(tmp_path, large_file_threshold="16KiB") as c:
        await c.write_file(b"m", DATA, mode=0o644)
        before = c.cold(b"m")
        assert before.mode == 0o644
        fh = await c.open(b"m", os.O_RDWR)
        await c.fs.write(fh, 0, b"XY")
        c.put_stub(b"m", dataclasses.replace(before, mode=mode))  # (the other node's chmod)
        await c.close(fh)
        after = c.cold(b"m")
        assert after.mode == mode, oct(after.mode)
        assert await c.read_file(b"m") == b"XY" + DATA[2:]  # (its owner check passes too)
