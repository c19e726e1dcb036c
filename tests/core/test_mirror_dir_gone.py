"""The head-start copy holds its directory by a descriptor: what happens when that directory
is removed (here, or by another NFS client: ESTALE), when finishing the temp file fails late,
and when the publish waiting for the copy is cancelled. Each time the file is published whole
and no temp file or descriptor is left."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.transfer import mirror as mirror_module

from .conftest import core_test, open_core
from .test_mirror_moved_dir import AHEAD, DATA, held_under, write_moved_away


def _remove_d2_as_another_node(core: Any) -> None:
    """Another node's rmdir of ``d2``, which holds only tierfs temp files (purged first, as
    ``WarmTier.clear_temps`` does)."""
    shutil.rmtree(core.warm_path(b"d2"))


@core_test
async def test_held_directory_removed_before_the_rename_falls_back_to_a_copy_locally(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: on a local warm tier, a rename out of a removed directory says ENOENT, and
    the publish copies the whole file instead."""
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await write_moved_away(core)
        warm_cls = type(core.fs.warm)
        real = warm_cls.replace

        def replace(self: Any, tmp: bytes, rel: bytes, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("tmp_dir") is not None:
                _remove_d2_as_another_node(core)
            return real(self, tmp, rel, *args, **kwargs)

        monkeypatch.setattr(warm_cls, "replace", replace)
        await core.close(fh)
        assert core.warm_path(b"e/a").read_bytes() == DATA
        assert held_under(core.warm) == []


@core_test
async def test_held_directory_removed_on_an_nfs_server_falls_back_to_a_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on NFS: a call through the handle of a directory another client removed
    fails with ESTALE, not ENOENT (a path is looked up again by the kernel, a held descriptor
    is not). The publish must copy the file as it does for ENOENT, not fail the close."""
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await write_moved_away(core)
        warm_cls = type(core.fs.warm)
        real = warm_cls.replace

        def replace(self: Any, tmp: bytes, rel: bytes, *args: Any, **kwargs: Any) -> Any:
            tmp_dir = kwargs.get("tmp_dir")
            if tmp_dir is not None:
                _remove_d2_as_another_node(core)
                if os.fstat(tmp_dir).st_nlink == 0:  # (what an NFS client answers then)
                    raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            return real(self, tmp, rel, *args, **kwargs)

        monkeypatch.setattr(warm_cls, "replace", replace)
        await core.close(fh)
        assert core.warm_path(b"e/a").read_bytes() == DATA
        assert held_under(core.warm) == []


@core_test
async def test_a_finished_head_start_is_removed_when_finishing_fails_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``finish_temp`` settles and fsyncs the temp file, then fstat and close it; an error
    from either (a network file system reports write errors at close) leaves the finished
    temp file, a whole copy of the file, on the shared tier: ``Mirror.finish`` only closes
    the directory, and the publish copied the file again beside it."""
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await write_moved_away(core)
        warm_cls = type(core.fs.warm)
        real = warm_cls.finish_temp

        def finish_temp(self: Any, *args: Any, **kwargs: Any) -> Any:
            st = real(self, *args, **kwargs)
            if kwargs.get("tmp_dir") is not None:
                raise OSError(errno.EIO, "close said EIO (the descriptor is closed all the same)")
            return st

        monkeypatch.setattr(warm_cls, "finish_temp", finish_temp)
        await core.close(fh)
        assert core.warm_path(b"e/a").read_bytes() == DATA
        assert core.warm_temps() == [], "the finished head start was left behind"
        assert held_under(core.warm) == []


@core_test
async def test_a_publish_cancelled_while_the_copy_runs_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy task drops the mirror at its step's end (``_drop_when_idle``)."""
    async with open_core(tmp_path, **AHEAD) as core:
        real = mirror_module._copy_step

        def slow_step(*args: Any) -> None:
            time.sleep(0.3)
            real(*args)

        monkeypatch.setattr(mirror_module, "_copy_step", slow_step)
        fh = await core.create(b"f")
        for offset in range(0, 400_000, 100_000):
            await core.fs.write(fh, offset, DATA[offset:offset + 100_000])
        with trio.move_on_after(0.05):
            await core.fs.flush(fh)  # the publish waits for the step under way: cancelled
        await trio.sleep(1.0)
        assert core.warm_temps() == []
        assert held_under(core.warm) == []
        monkeypatch.setattr(mirror_module, "_copy_step", real)
        await core.write_all(fh, DATA[400_000:], offset=400_000)
        await core.close(fh)
        assert core.warm_path(b"f").read_bytes() == DATA
        assert core.warm_temps() == []
        assert held_under(core.warm) == []
