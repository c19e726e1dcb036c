"""A truncate by path of a file with no open state changes the warm file directly; an open
that comes meanwhile must not be answered from the attributes the truncate is changing
(it would read the file as truncated under the version it was opened for, ESTALE once it
kept the kernel's pages), and a stat read across the change is not remembered."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from .conftest import ROOT, SetAttr, core_test, open_core


@core_test
async def test_an_open_during_a_truncate_by_path_reads_the_truncated_file(
        tmp_path: Path) -> None:
    body = bytes(range(256)) * 400
    async with open_core(tmp_path, attr_timeout=5) as core:
        core.warm_path(b"f").write_bytes(body)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.read_all(fh) == body  # (the kernel keeps these pages)
        await core.fs.release(fh)
        warm = core.fs.warm
        inner = warm.run
        truncating = trio.Event()

        async def slow(fn: Any, *args: Any) -> Any:
            if fn == warm.truncate:
                truncating.set()
                await trio.sleep(0.2)
            return await inner(fn, *args)

        warm.run = slow  # type: ignore[method-assign]
        got: list[bytes] = []

        async def reader() -> None:
            await truncating.wait()
            fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
            try:
                got.append(await core.read_all(fh))
            finally:
                await core.fs.release(fh)

        core.nursery.start_soon(reader)
        await core.fs.setattr(inode.ino, SetAttr(size=1000))
        await core.until(lambda: bool(got))
        assert got == [body[:1000]]
