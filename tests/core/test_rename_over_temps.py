"""A directory that lists empty but holds tierfs temp files (a publish interrupted by a crash;
or, while it copies, the temp file of a publish whose file moved out of the directory before
the directory was renamed) can be replaced by a rename through the mount, as it can be removed
(``rmdir`` purges them): the rename failed with ENOTEMPTY."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import trio

from .conftest import ROOT, core_test, open_core


@core_test
async def test_a_directory_holding_only_a_temp_file_is_replaced_by_a_rename(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.mkdirs(b"d")
        x = await core.mkdirs(b"x")
        await core.write_file(b"x/kept", b"k")
        left = core.warm_path(b"d") / os.fsdecode(core.fs.core.warm.temp_name())
        left.write_bytes(b"a publish interrupted")
        await core.fs.rename(ROOT, b"x", ROOT, b"d", 0)  # mv -T x d
        assert core.warm_temps() == []
        assert await core.read_file(b"d/kept") == b"k"
        assert x == (await core.lookup_path(b"d")).ino


AHEAD = {"by_rename": False, "publish_ahead": "64KiB"}
DATA = os.urandom(800_000)


@core_test
async def test_a_directory_left_a_head_start_temp_file_by_a_move_is_replaced_by_a_rename(
        tmp_path: Path) -> None:
    """Sync mode, publishing by copy, copy-ahead on: the file being written moves out of
    ``d``, then ``d`` is renamed ``d2``; the head-start temp file went with ``d2``. It was left
    there, a whole copy, until a rename over ``d2``, its ``rmdir`` or the next mount; the
    close now finds it through its directory's descriptor (test_mirror_moved_dir.py), and
    ``d2`` must be replaceable either way."""
    async with open_core(tmp_path, **AHEAD) as core:
        d = await core.mkdirs(b"d")
        e = await core.mkdirs(b"e")
        fh = await core.create(b"d/a")
        for offset in range(0, 400_000, 50_000):
            await core.fs.write(fh, offset, DATA[offset:offset + 50_000])
            await trio.sleep(0.01)  # let the copy ahead run
        assert core.warm_temps() != []  # the head-start temp file, in d
        await core.fs.rename(d, b"a", e, b"a", 0)  # mv d/a e/a
        await core.fs.rename(ROOT, b"d", ROOT, b"d2", 0)  # mv d d2
        await core.write_all(fh, DATA[400_000:], offset=400_000)
        await core.close(fh)
        assert core.warm_path(b"e/a").read_bytes() == DATA  # (the content is right)
        d2 = await core.lookup_path(b"d2")
        dh = await core.fs.opendir(d2.ino)
        assert await core.fs.readdir(dh, 0) == []  # d2 lists empty...
        await core.fs.releasedir(dh)
        await core.mkdirs(b"x")
        await core.fs.rename(ROOT, b"x", ROOT, b"d2", 0)  # ...so mv -T x d2 must work
        assert core.warm_temps() == []


@core_test
async def test_rename_over_a_directory_does_not_fail_a_publish_under_way(
        tmp_path: Path) -> None:
    """The rename purges the temp file of a publish by copy under way (its file moved out of
    the directory while it was copied): the publish copies again, and the close succeeds (it
    failed with ENOENT, though nothing was wrong with the file)."""
    async with open_core(tmp_path, by_rename=False) as core:
        d = await core.mkdirs(b"d")
        e = await core.mkdirs(b"e")
        fh = await core.create(b"d/a")
        await core.write_all(fh, DATA[:100_000])
        warm = core.fs.core.warm
        real = warm.publish_copy
        copied, release = threading.Event(), threading.Event()

        def slow(*args: Any, **kwargs: Any) -> Any:  # a slow copy (NFS), temp file made
            out = real(*args, **kwargs)
            copied.set()
            release.wait(10)
            return out

        warm.publish_copy = slow
        closed: list[BaseException | None] = []

        async def close() -> None:
            try:
                await core.close(fh)
            except OSError as ex:
                closed.append(ex)
            else:
                closed.append(None)

        async with trio.open_nursery() as n:
            n.start_soon(close)
            await core.until(copied.is_set)
            assert core.warm_temps() != []  # the publish's temp file, in d
            await core.fs.rename(d, b"a", e, b"a", 0)  # mv d/a e/a
            await core.mkdirs(b"x")
            await core.fs.rename(ROOT, b"x", ROOT, b"d", 0)  # mv -T x d: the temp goes
            release.set()
        warm.publish_copy = real
        assert core.warm_path(b"e/a").read_bytes() == DATA[:100_000]  # (home all the same: no loss)
        assert closed == [None], f"the close failed: {closed}"
