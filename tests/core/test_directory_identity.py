"""A directory found under a new name with the (device, inode number) of a directory this mount
knows: renamed by another node, or a new directory that got a removed one's freed number
(ext4, xfs and tmpfs give it to the next new file at once). Only the first may take the known
directory's place: the files open below the known one are published into the found one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from .conftest import ROOT, Core, core_test, open_core


def reuse_number(warm: Path, gone: int, name: str) -> None:
    """Another node makes directories until ``warm/name`` is one that got number ``gone``."""
    for i in range(200):
        os.mkdir(warm / name)
        if (warm / name).stat().st_ino == gone:
            return
        os.rename(warm / name, warm / f"other{i}")
    pytest.skip("the file system did not reuse the inode number")


async def writing_under_d(c: Core) -> tuple[int, int]:
    """A directory ``D`` and a file ``D/f`` open on this node with data not yet published:
    ``D``'s inode number and the handle."""
    d_ino = await c.mkdirs(b"D")
    fh = await c.create(b"D/f")
    await c.write_all(fh, b"written on this node under D")
    return d_ino, fh


@contextlib.contextmanager
def publish_held(c: Core) -> Iterator[tuple[trio.Event, trio.Event]]:
    """Hold a publish in its first warm step (``settle_staged`` or ``publish_copy``): the
    first event is set when it is held, and it goes on once the second is set."""
    held, go_on = trio.Event(), trio.Event()
    warm_tier = c.fs.core.warm
    inner = warm_tier.run

    async def run(fn: Any, *args: Any) -> Any:
        out = await inner(fn, *args)
        if getattr(fn, "__name__", "") in ("settle_staged", "publish_copy"):
            held.set()
            await go_on.wait()
        return out

    warm_tier.run = run  # type: ignore[method-assign]
    try:
        yield held, go_on
    finally:
        warm_tier.run = inner  # type: ignore[method-assign]


async def close_into(c: Core, fh: int, closed: list[OSError | None]) -> None:
    """Close ``fh``, noting how it went."""
    try:
        await c.close(fh)
        closed.append(None)
    except OSError as e:
        closed.append(e)


@core_test
async def test_a_new_directory_with_a_removed_ones_number_is_not_that_directory(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        _, fh = await writing_under_d(c)
        d_ino = (warm / "D").stat().st_ino
        # another node: mv D/f kept; rmdir D; mkdir E (a new directory: it gets D's number)
        os.rename(warm / "D" / "f", warm / "kept")
        os.rmdir(warm / "D")
        reuse_number(warm, d_ino, "E")
        await c.fs.lookup(ROOT, b"E")  # ls on this node
        try:
            await c.close(fh)
        except OSError:
            pass  # (failing is fine: its directory is gone)
        assert sorted(os.listdir(warm / "E")) == [], \
            "a file of the removed directory D was published into the new directory E"


@core_test
async def test_a_directory_renamed_by_another_node_takes_its_open_files_along(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        d_ino, fh = await writing_under_d(c)
        os.rename(warm / "D", warm / "E")  # another node: mv D E
        e, _ = await c.fs.lookup(ROOT, b"E")
        assert e.ino == d_ino, "the renamed directory was not taken for the known one"
        await c.close(fh)
        assert (warm / "E" / "f").read_bytes() == b"written on this node under D"


@core_test
async def test_a_directory_made_through_the_mount_with_a_removed_ones_number_is_new(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        _, fh = await writing_under_d(c)
        d_ino = (warm / "D").stat().st_ino
        os.rename(warm / "D" / "f", warm / "kept")  # another node: mv D/f kept; rmdir D
        os.rmdir(warm / "D")
        for i in range(200):  # this node makes directories; one gets D's number
            await c.mkdirs(b"E%d" % i)
            if (warm / f"E{i}").stat().st_ino == d_ino:
                break
        else:
            pytest.skip("the file system did not reuse the inode number")
        try:
            await c.close(fh)
        except OSError:
            pass
        assert os.listdir(warm / f"E{i}") == [], \
            "a file of the removed directory D was published into a directory made here"


async def list_root(c: Core, name: bytes) -> int:
    """A listing of the mount's root as readdirplus hands it to the kernel; the inode number
    the entry ``name`` gets."""
    dh = await c.fs.opendir(ROOT)
    try:
        for _, entry in await c.fs.readdir(dh, 0):
            inode, _ = c.fs.dir_entry(dh, entry)
            c.fs.count_lookup(inode, True)
            if entry.name == name:
                return inode.ino
    finally:
        await c.fs.releasedir(dh)
    raise AssertionError(f"{name!r} not listed")


@core_test
async def test_a_listing_takes_a_directory_renamed_by_another_node_for_the_known_one(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        d_ino, fh = await writing_under_d(c)
        os.rename(warm / "D", warm / "E")  # another node: mv D E
        assert await list_root(c, b"E") == d_ino
        await c.close(fh)
        assert (warm / "E" / "f").read_bytes() == b"written on this node under D"


@core_test
async def test_a_listing_takes_a_new_directory_with_a_removed_ones_number_for_a_new_one(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        d_ino, fh = await writing_under_d(c)
        number = (warm / "D").stat().st_ino
        os.rename(warm / "D" / "f", warm / "kept")
        os.rmdir(warm / "D")
        reuse_number(warm, number, "E")
        assert await list_root(c, b"E") != d_ino
        try:
            await c.close(fh)
        except OSError:
            pass
        assert os.listdir(warm / "E") == []


@core_test
async def test_a_renamed_directory_whose_first_names_went_still_carries_its_open_file(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        d_ino = await c.mkdirs(b"D")
        for n in range(4):  # listed / looked up on this node (the kernel keeps them)
            await c.write_file(b"D/old%d" % n, b"old")
        fh = await c.create(b"D/f")
        await c.write_all(fh, b"written on this node under D")
        # another node: rewrites D/old* (tierfs publishes by rename: new inode numbers)
        for n in range(4):
            p = warm / "D" / f"old{n}"
            (warm / "D" / f"tmp{n}").write_bytes(b"new")
            os.rename(warm / "D" / f"tmp{n}", p)
        os.rename(warm / "D", warm / "E")  # ... then mv D E
        e, _ = await c.fs.lookup(ROOT, b"E")
        assert e.ino == d_ino, "the directory renamed by another node was taken for a new one"
        await c.close(fh)
        assert (warm / "E" / "f").read_bytes() == b"written on this node under D"


@core_test
async def test_a_rename_through_the_mount_during_a_listing_check_is_not_missed(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        await c.mkdirs(b"D")
        fh_d = await c.create(b"D/f")  # D holds a name: a move of D is checked
        await c.write_all(fh_d, b"under D")
        await c.write_file(b"b", b"old b")
        await c.lookup_path(b"b")
        fh = await c.create(b"a")
        await c.write_all(fh, b"written to a, renamed over b")
        a_ino = (await c.lookup_path(b"a")).ino
        os.rename(warm / "D", warm / "E")  # another node: mv D E

        # hold the listing's read of the root (made under the lock, shared) until the rename
        # below is waiting for the lock
        read, go_on = trio.Event(), trio.Event()
        warm_tier = c.fs.core.warm
        inner = warm_tier.run

        async def run(fn: Any, *args: Any) -> Any:
            out = await inner(fn, *args)
            if getattr(fn, "__name__", "") == "_first_blocking":
                read.set()
                await go_on.wait()
            return out

        warm_tier.run = run  # type: ignore[method-assign]
        dh = await c.fs.opendir(ROOT)
        handed: list[bytes] = []

        async def listing() -> None:
            for _, entry in await c.fs.readdir(dh, 0):  # as the FUSE layer hands them over
                inode, _ = c.fs.dir_entry(dh, entry)
                c.fs.count_lookup(inode, True)
                handed.append(entry.name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listing)
            await read.wait()
            nursery.start_soon(c.fs.rename, ROOT, b"a", ROOT, b"b", 0)  # mv a b (here)
            await trio.testing.wait_all_tasks_blocked()
            go_on.set()
        warm_tier.run = inner  # type: ignore[method-assign]
        await c.fs.releasedir(dh)
        b = c.fs.core.inodes.child(ROOT, b"b")
        b_ino = None if b is None else b.ino
        await c.close(fh)
        assert (warm / "b").read_bytes() == b"written to a, renamed over b", \
            f"written data lost: the listing ({handed}) moved b off the file (ino {b_ino} " \
            f"for b, was {a_ino})"
        await c.close(fh_d)


@core_test
async def test_a_directory_renamed_while_its_file_is_published_is_still_that_directory(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        d_ino, fh = await writing_under_d(c)

        closed: list[OSError | None] = []
        with publish_held(c) as (settling, go_on):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_into, c, fh, closed)
                await settling.wait()
                os.rename(warm / "D", warm / "E")  # another node: mv D E
                e, _ = await c.fs.lookup(ROOT, b"E")  # ls on this node
                e_ino = e.ino
                go_on.set()
        assert e_ino == d_ino, "the directory renamed by another node was taken for a new one"
        assert closed == [None]
        assert (warm / "E" / "f").read_bytes() == b"written on this node under D"


@core_test
async def test_a_new_directory_holding_a_same_named_file_is_not_taken_for_the_removed_one(
        tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        d_ino, fh = await writing_under_d(c)
        number = (warm / "D").stat().st_ino

        closed: list[OSError | None] = []  # (failing is fine: its directory is gone)
        with publish_held(c) as (publishing, go_on):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_into, c, fh, closed)
                await publishing.wait()
                # another node: mv D/* elsewhere; rmdir D; mkdir E (gets D's number);
                # echo theirs > E/f
                for i, name in enumerate(os.listdir(warm / "D")):
                    os.rename(warm / "D" / name, warm / f"kept{i}")
                os.rmdir(warm / "D")
                reuse_number(warm, number, "E")
                (warm / "E" / "f").write_bytes(b"the other node's own E/f")
                e, _ = await c.fs.lookup(ROOT, b"E")  # ls on this node
                e_ino = e.ino
                go_on.set()
        assert (warm / "E" / "f").read_bytes() == b"the other node's own E/f", \
            "D's file was published over a file of the new directory E"
        assert e_ino != d_ino, "a new directory was taken for the removed D"


@core_test
async def test_an_open_file_entered_first_is_still_a_witness(tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    async with open_core(tmp_path) as c:
        d_ino, fh = await writing_under_d(c)
        for i in range(64):
            (warm / "D" / f"g{i}").write_bytes(b"x")
            await c.fs.lookup(d_ino, f"g{i}".encode())
        # another node: mv D E; rm E/g*
        os.rename(warm / "D", warm / "E")
        for i in range(64):
            os.unlink(warm / "E" / f"g{i}")
        e, _ = await c.fs.lookup(ROOT, b"E")
        assert e.ino == d_ino, \
            "the directory renamed by another node, holding the open file, was taken for a new one"
        await c.close(fh)
        assert (warm / "E" / "f").read_bytes() == b"written on this node under D"
