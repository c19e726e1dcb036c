"""A publish's warm call made without the namespace lock (``WarmPublisher.at_path``) while a
rename of the file's directory is under way: the rename counts itself (``Core.renames``)
before its warm call and moves the inode table only after it returns, so a call that failed
on the old path in between saw the same path and the same count, and fsync(2) said ENOENT for
a file that was never unlinked. ``at_path`` now waits for the rename under way (a shared hold
of the namespace lock) before it looks. (On a network warm tier the rename's reply arrives
well after the rename took effect; here its reply is held until the fsync is done.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from .conftest import ROOT, core_test, open_core


@core_test
async def test_fsync_during_a_rename_of_the_directory_does_not_fail_enoent(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, by_rename=False) as core:  # (published by copy)
        await core.mkdirs(b"d")
        await core.write_file(b"d/f", b"y" * 1000)
        fh = await core.open(b"d/f", os.O_WRONLY)  # (not created by this open)
        await core.write_all(fh, b"x" * 1000)
        warm = core.fs.warm
        inner = warm.run
        renamed = trio.Event()
        go = trio.Event()

        async def run(fn: Any, *args: Any) -> Any:
            result = await inner(fn, *args)
            if getattr(fn, "__name__", "") == "_rename_blocking":
                renamed.set()  # took effect in the warm tier; its reply is on the way
                await go.wait()
            return result

        warm.run = run  # type: ignore[method-assign]
        outcome: list[BaseException | None] = []

        async def fsync() -> None:
            try:
                await core.fs.fsync(fh)
                outcome.append(None)
            except OSError as e:
                outcome.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.fs.rename, ROOT, b"d", ROOT, b"e", 0)
            await renamed.wait()
            nursery.start_soon(fsync)
            with trio.move_on_after(2):
                while not outcome:
                    await trio.sleep(0.01)
            go.set()
        while not outcome:
            await trio.sleep(0.01)
        warm.run = inner  # type: ignore[method-assign]
        assert outcome == [None], f"fsync failed during a rename: {outcome[0]!r}"
        await core.close(fh)
        assert await core.read_file(b"e/f") == b"x" * 1000
