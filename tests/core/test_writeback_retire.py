"""The write-back task of a closed file stops when the file's name is gone, and retires its
open state. Another caller may be publishing the file then (an open for writing, or
``tierfs flush``): the task retired the state under that publish (``OpenFile.to(RETIRED)``
from PUBLISHING raised ``IllegalTransition`` in a background task, and the whole core went
down: the mount died). It now retires only once that publish is over, under the file's
lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from .conftest import ROOT, core_test, open_core

DATA = b"x" * 60_000


@core_test
async def test_unlink_during_an_open_for_writings_publish_does_not_retire_under_it(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        wb = core.fs.writeback
        wb.quiet, wb.max_wait = 60.0, 0.5  # the task wakes by its own deadline only
        await core.write_file(b"f", DATA)
        inode = await core.lookup_path(b"f")
        assert wb.holds(inode)

        warm = core.fs.publisher.warm
        real = warm.publish
        entered, release = trio.Event(), trio.Event()

        async def slow(*args: Any, **kwargs: Any) -> Any:  # a slow warm tier (NFS)
            entered.set()
            await release.wait()
            return await real(*args, **kwargs)

        warm.publish = slow  # type: ignore[method-assign]
        opened: list[int] = []

        async def writer() -> None:
            fh, _, _ = await core.fs.open(inode.ino, os.O_WRONLY)
            opened.append(fh)

        async with trio.open_nursery() as n:
            n.start_soon(writer)
            await entered.wait()  # the open's publish is under way
            await core.fs.unlink(ROOT, b"f")
            await trio.sleep(1.0)  # past the write-back task's deadline
            release.set()
        warm.publish = real  # type: ignore[method-assign]
        assert opened
        await core.fs.write(opened[0], 0, b"new")
        await core.close(opened[0])


@core_test
async def test_unlink_during_a_flushs_publish_does_not_retire_under_it(tmp_path: Path) -> None:
    """The same through ``tierfs flush``: the write-back task sleeps after a failed try
    (``trio.sleep(delay)``, which ``_hurry`` does not wake), flush publishes the file itself,
    the name goes meanwhile, and the task wakes to retire the state under flush's publish."""
    async with open_core(tmp_path, durability="writeback") as core:
        wb = core.fs.writeback
        wb.quiet, wb.max_wait = 0.05, 0.05
        warm = core.fs.publisher.warm
        real = warm.publish
        mode = ["fail"]
        entered, release = trio.Event(), trio.Event()

        async def tier(*args: Any, **kwargs: Any) -> Any:
            if mode[0] == "fail":  # the warm tier away for the first try
                mode[0] = "slow"
                raise OSError(5, "warm tier away")
            entered.set()
            await release.wait()
            return await real(*args, **kwargs)

        warm.publish = tier  # type: ignore[method-assign]
        await core.write_file(b"f", DATA)
        await core.until(lambda: mode[0] == "slow")  # the task failed once: sleeps 1 s
        flushed: list[Any] = []

        async def flush() -> None:
            flushed.append(await core.publish_all())

        async with trio.open_nursery() as n:
            n.start_soon(flush)
            await entered.wait()  # flush's publish is under way
            await core.fs.unlink(ROOT, b"f")
            await trio.sleep(1.5)  # the task's sleep ends
            release.set()
        warm.publish = real  # type: ignore[method-assign]
        assert flushed == [[]]


@core_test
async def test_unmount_retires_a_file_published_by_publish_all(tmp_path: Path) -> None:
    """At unmount the nursery is cancelled right after its publishing: a task sleeping after
    a failed try wakes cancelled, and its retire must still run (it waited for the file's
    lock, a checkpoint, and left the staging file of data that is home on the hot tier)."""
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        wb = core.fs.writeback
        wb.quiet = wb.max_wait = 0.05
        warm = core.fs.publisher.warm
        real = warm.publish
        tries = [0]

        async def once_away(*args: Any, **kwargs: Any) -> Any:
            tries[0] += 1
            if tries[0] == 1:
                raise OSError(5, "warm tier away")
            return await real(*args, **kwargs)

        warm.publish = once_away  # type: ignore[method-assign]
        await core.write_file(b"f", DATA)
        await core.until(lambda: tries[0] == 1)  # failed once: the task sleeps 1 s
        inode = await core.lookup_path(b"f")
        data = inode.data
        # a clean unmount follows: shutdown publishes it, then the nursery is cancelled
    assert core.warm_path(b"f").read_bytes() == DATA
    assert core.staged() == [], "staging of data that is home left on the hot tier"
    assert data.staging_fd is None and data.warm_fd is None, "descriptors left open"
    assert inode.data is None, "the open state was never retired"
