"""Lookups answered from a listing (``vfs.listed``) after changes through the mount that a
listing taken before them would still describe the old way: each must void the listing, so
that the lookup after it reads the warm tier again."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from tierfs.vfs import listed

from .conftest import ROOT, Core, SetAttr, core_test, open_core
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


def hold_warm_call(core: Core, method: str) -> tuple[threading.Event, threading.Event]:
    """The warm tier's ``method`` waits, in its worker, until the second event is set; the
    first is set when it is called."""
    called, release = threading.Event(), threading.Event()
    inner = getattr(core.fs.warm, method)

    def held(*args: object) -> object:
        called.set()
        release.wait(10)
        return inner(*args)

    setattr(core.fs.warm, method, held)
    return called, release


async def listed_while_held(core: Core, called: threading.Event,
                            release: threading.Event) -> None:
    """Once the held warm call is reached, the root is listed by lookups; then it goes on."""
    while not called.is_set():
        await trio.sleep(0.005)
    await look_up_until_listed(core)
    release.set()


@core_test
async def test_a_truncate_under_way_voids_a_listing_taken_meanwhile(tmp_path: Path) -> None:
    """A truncate of a file with no open state runs on the warm tier under the shared
    namespace lock: a listing may be taken beside it, after its count of changes."""
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)
        target = NAMES[-1]
        inode, _ = await core.fs.lookup(ROOT, target)
        called, release = hold_warm_call(core, "truncate")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.fs.setattr, inode.ino, SetAttr(size=3))
            await listed_while_held(core, called, release)
        assert core.warm_path(target).stat().st_size == 3
        _, attrs = await core.fs.lookup(ROOT, target)
        assert attrs.size == 3


@core_test
async def test_a_mkdir_under_way_voids_a_listing_taken_meanwhile(tmp_path: Path) -> None:
    """A new directory is made as tierfs, then given its mode (one worker call under the
    shared namespace lock): a listing taken in between holds the first mode."""
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)
        called, release = hold_warm_call(core, "chmod")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.fs.mkdir, ROOT, b"made", 0o755, os.getuid(), os.getgid())
            await listed_while_held(core, called, release)
        assert core.warm_path(b"made").stat().st_mode & 0o777 == 0o755
        _, attrs = await core.fs.lookup(ROOT, b"made")
        assert attrs.mode & 0o777 == 0o755


@core_test
async def test_a_link_that_waited_for_its_file_voids_a_listing_taken_meanwhile(
        tmp_path: Path) -> None:
    """A hard link to a file with open state waits for the file's lock (a publish holds it
    throughout); a listing taken meanwhile holds the link count from before."""
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)
        target = NAMES[-1]
        fh = await core.open(target)
        inode, _ = await core.fs.lookup(ROOT, target)
        assert inode.data is not None
        # (the file's lock held as a publish of the file would)
        async with trio.open_nursery() as nursery, inode.data.lock:
            nursery.start_soon(core.fs.link, inode.ino, ROOT, b"second")
            await trio.sleep(0.05)
            await look_up_until_listed(core)
        await core.fs.release(fh)
        assert inode.data is None
        assert core.warm_path(target).stat().st_nlink == 2
        _, attrs = await core.fs.lookup(ROOT, target)
        assert attrs.nlink == 2


@pytest.mark.parametrize("change", ["chmod", "setxattr", "removexattr"])
def test_a_change_queued_behind_a_listing_voids_it(tmp_path: Path, change: str) -> None:
    """A chmod (or an extended attribute's change: the ctime) counts its change, then waits
    for the namespace lock; a lookup queued for the lock before it (behind a rename or a
    publish holding it) lists the directory first."""
    @core_test
    async def run(tmp_path: Path) -> None:
        async with open_core(tmp_path, attr_timeout=30) as core:
            fill(core.warm)
            target = NAMES[-1]
            if change == "removexattr":
                os.setxattr(core.warm_path(target), "user.k", b"v")
            await trio.sleep(0.01)  # (a later ctime)
            inode, _ = await core.fs.lookup(ROOT, target)
            for name in NAMES[:listed.ASKED_BEFORE_LISTING - 1]:  # (the next lookup lists)
                await core.fs.lookup(ROOT, name)
            assert core.fs.counters.values["listings"] == 0
            act: Callable[[], Awaitable[object]]
            if change == "chmod":
                act = functools.partial(core.fs.setattr, inode.ino, SetAttr(mode=0o600))
            elif change == "setxattr":
                act = functools.partial(core.fs.setxattr, inode.ino, b"user.k", b"v")
            else:
                act = functools.partial(core.fs.removexattr, inode.ino, b"user.k")
            # (the namespace lock held as a rename or a publish would)
            async with trio.open_nursery() as nursery, core.fs.core.ns_lock:
                nursery.start_soon(core.fs.lookup, ROOT, NAMES[listed.ASKED_BEFORE_LISTING])
                await trio.sleep(0.05)
                nursery.start_soon(act)
                await trio.sleep(0.05)
            assert core.fs.counters.values["listings"] == 1
            st = core.warm_path(target).stat()
            _, attrs = await core.fs.lookup(ROOT, target)
            assert attrs.mode == st.st_mode
            assert attrs.ctime_ns == st.st_ctime_ns

    run(tmp_path)
