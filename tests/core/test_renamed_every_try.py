"""fsync of a file whose directory another process renames away and back (``mv d e; mv e d``)
in a loop, so fast that every warm call the publish makes by path without the namespace lock
(``WarmPublisher.at_path``) finds the path gone. ``at_path`` tried four times and then failed
the fsync with EAGAIN, for a file under its name the whole time (seen in CI, once in some
thousand fsyncs, by tests/test_rename_back.py). Here the renamer moves the directory around
each such call, as long as it can take the namespace lock within 0.3 s: the last try (after
eight) now holds the lock shared, so that renames wait for it.

Publishing by copy failed so before the fix (82806df). Publishing by rename takes a file
missing at its path as gone; here it checks that the published file keeps its owner, mode
and extended attributes (its rename takes them again after any rename meanwhile:
``Reapply``). The path vanishing between two calls of one try, as in CI, is the second
test's."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import ROOT, Core, SetAttr, core_test, open_core

#: The warm calls a publish makes by path, outside the namespace lock.
BY_PATH = {"settle_staged", "publish_copy"}


async def owned_file(core: Core) -> int:
    """``d/f`` made and open for writing, with an owner, a mode and an extended attribute
    that its publish must keep (``attributes_kept``)."""
    await core.mkdirs(b"d")
    fh = await core.create(b"d/f", flags=os.O_RDWR)
    ino = (await core.lookup_path(b"d/f")).ino
    await core.fs.setattr(ino, SetAttr(uid=4321, gid=4321, mode=0o640))
    await core.fs.setxattr(ino, b"user.origin", b"node-a")
    return fh


def attributes_kept(core: Core) -> None:
    published = core.warm_path(b"d/f")
    st = published.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (4321, 4321, 0o640)
    assert os.getxattr(published, b"user.origin") == b"node-a"


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_fsync_while_every_try_finds_the_directory_renamed_away(
        tmp_path: Path, by_rename: bool) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        fh = await owned_file(core)
        warm = core.fs.warm
        inner = warm.run
        moved_around: list[str] = []

        async def run(fn: Any, *args: Any) -> Any:
            if getattr(fn, "__name__", "") not in BY_PATH:
                return await inner(fn, *args)
            with trio.move_on_after(0.3) as waited:
                await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)
            if waited.cancelled_caught:  # renames are held off: the call runs in peace
                return await inner(fn, *args)
            try:
                return await inner(fn, *args)
            finally:
                await core.fs.rename(ROOT, b"e", ROOT, b"d", 0)
                moved_around.append(fn.__name__)

        warm.run = run  # type: ignore[method-assign]
        try:
            for i in range(3):
                await core.write_all(fh, bytes([65 + i]) * 1000, offset=i * 1000)
                await core.fs.fsync(fh)
        finally:
            warm.run = inner  # type: ignore[method-assign]
        assert moved_around, "the renamer never ran: nothing was tried"
        attributes_kept(core)
        await core.close(fh)
        assert await core.read_file(b"d/f") == b"A" * 1000 + b"B" * 1000 + b"C" * 1000


@core_test
async def test_a_rename_while_the_attributes_are_copied_costs_no_second_try(
        tmp_path: Path) -> None:
    """Publishing by rename reads the attributes of the file it replaces by path: its owner
    and mode (``lstat``), then its extended attributes (an ``O_PATH`` open). A rename of its
    directory between the two failed the try, which ran again from the start (the staging
    file's fsync with it), and four such failures failed the fsync with EAGAIN: the CI
    failure of tests/test_rename_back.py. The path gone by then is now taken as gone: the
    rename step takes every attribute again after any rename (``Reapply``)."""
    async with open_core(tmp_path, by_rename=True) as core:
        fh = await owned_file(core)
        await core.write_all(fh, b"A" * 1000)
        warm = core.fs.warm
        real_path_fd = warm._path_fd
        token = trio.lowlevel.current_trio_token()
        inner = warm.run
        tries: list[str] = []

        async def away(src: bytes, dst: bytes) -> bool:
            with trio.move_on_after(0.3):  # (not while the lock is held: the call goes on)
                await core.fs.rename(ROOT, src, ROOT, dst, 0)
                return True
            return False

        @contextlib.contextmanager
        def path_fd(rel: bytes) -> Iterator[Any]:
            moved = rel == b"d/f" and trio.from_thread.run(away, b"d", b"e", trio_token=token)
            with contextlib.ExitStack() as stack:
                try:
                    held = stack.enter_context(real_path_fd(rel))  # (the path is gone)
                finally:
                    if moved:
                        trio.from_thread.run(away, b"e", b"d", trio_token=token)
                yield held

        async def run(fn: Any, *args: Any) -> Any:
            if getattr(fn, "__name__", "") == "settle_staged":
                tries.append(fn.__name__)
            return await inner(fn, *args)

        warm._path_fd = path_fd  # type: ignore[method-assign]
        warm.run = run  # type: ignore[method-assign]
        try:
            await core.fs.fsync(fh)
        finally:
            warm.run = inner  # type: ignore[method-assign]
            warm._path_fd = real_path_fd  # type: ignore[method-assign]
        assert tries == ["settle_staged"]
        attributes_kept(core)
        await core.close(fh)
        assert await core.read_file(b"d/f") == b"A" * 1000
