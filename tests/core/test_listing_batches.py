"""A long listing read a batch at a time (``vfs.listing``): the first reply waits for one
batch of attributes, the rest are read as the kernel's calls reach them, and whatever happens
to the directory meanwhile, every name is handed out once, with its own file's attributes."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tierfs.vfs import listing

from .conftest import Core, core_test, open_core

BATCH = listing.READ_BATCH
NAMES = [f"f{i:04d}".encode() for i in range(4 * BATCH + 7)]


def fill(d: Path, names: list[bytes] = NAMES) -> None:
    d.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        (d / os.fsdecode(name)).write_bytes(b"x" * i)


async def read_all(core: Core, dh: int, start: int, chunk: int = 30
                   ) -> list[tuple[int, bytes, int]]:
    """(offset, name, size) of the rest of a listing, taken ``chunk`` entries a call from
    ``start``, as the kernel takes a page of entries and asks again from the last offset."""
    got = []
    while True:
        out = (await core.fs.readdir(dh, start))[:chunk]
        if not out:
            return got
        got += [(offset, entry.name, entry.st.st_size) for offset, entry in out]
        start = out[-1][0]


async def first_reply(core: Core) -> tuple[int, list[tuple[int, listing.DirEntry]]]:
    """A handle on the directory ``d`` of NAMES, and its first readdir's reply."""
    fill(core.warm / "d")
    d = await core.lookup_path(b"d")
    dh = await core.fs.opendir(d.ino)
    return dh, await core.fs.readdir(dh, 0)


@core_test
async def test_the_first_reply_waits_for_one_batch_and_the_rest_comes_whole(tmp_path: Path
                                                                           ) -> None:
    async with open_core(tmp_path) as core:
        fill(core.warm / "d")
        d = await core.lookup_path(b"d")
        read = []
        inner = listing.entries_at

        def counted(dfd: int, names: list[bytes], xattrs: bool = True) -> object:
            read.append(len(names))
            return inner(dfd, names, xattrs)

        listing.entries_at = counted  # type: ignore[assignment]
        try:
            dh = await core.fs.opendir(d.ino)
            first = await core.fs.readdir(dh, 0)
            assert read == [BATCH]  # the reply came before the other names' attributes
            assert len(await core.fs.readdir(dh, 10)) > 0  # (within the first batch)
            assert read == [BATCH]
            assert first and len(first) <= BATCH
            rest = await read_all(core, dh, first[-1][0])
            await core.fs.releasedir(dh)
            got = [(o, e.name, e.st.st_size) for o, e in first] + rest
            assert sorted(name for _, name, _ in got) == sorted(NAMES)
            assert all(size == NAMES.index(name) for _, name, size in got)
            assert [o for o, _, _ in got] == sorted({o for o, _, _ in got})  # offsets go forward
            assert sum(read) == len(NAMES)
        finally:
            listing.entries_at = inner


@core_test
async def test_names_removed_before_their_batch_is_read_are_left_out(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        dh, first = await first_reply(core)
        # Behind the mount's back (another node), before a readdir reaches their batch.
        listed = {e.name for _, e in first}
        gone = [name for name in NAMES if name not in listed][BATCH:BATCH + 10]
        for name in gone:
            (core.warm / "d" / os.fsdecode(name)).unlink()
        rest = await read_all(core, dh, first[-1][0])
        await core.fs.releasedir(dh)
        names = [e.name for _, e in first] + [name for _, name, _ in rest]
        assert sorted(names) == sorted(set(NAMES) - set(gone))
        assert all(size == NAMES.index(name) for _, name, size in rest)


@core_test
async def test_a_directory_removed_while_it_is_listed_ends_the_listing(tmp_path: Path
                                                                      ) -> None:
    async with open_core(tmp_path) as core:
        dh, first = await first_reply(core)
        shutil.rmtree(core.warm / "d")  # (another node)
        rest = await read_all(core, dh, first[-1][0])
        await core.fs.releasedir(dh)
        assert rest == []


@pytest.mark.parametrize("looked_up", [False, True], ids=["as-is", "looked-up-anew"])
@core_test
async def test_a_directory_renamed_elsewhere_while_it_is_listed_is_listed_whole(
        tmp_path: Path, looked_up: bool) -> None:
    """Another node renames the directory and makes a new one under its old name; looked up
    anew through the mount, the listed one has no path any more: the rest is still read (its
    descriptor)."""
    async with open_core(tmp_path) as core:
        dh, first = await first_reply(core)
        os.rename(core.warm / "d", core.warm / "moved")  # (another node)
        (core.warm / "d").mkdir()  # and a new directory under the old name
        (core.warm / "d" / "other").write_bytes(b"")
        if looked_up:
            await core.lookup_path(b"d")
        rest = await read_all(core, dh, first[-1][0])
        await core.fs.releasedir(dh)
        names = [e.name for _, e in first] + [name for _, name, _ in rest]
        assert sorted(names) == sorted(NAMES)


@core_test
async def test_a_listing_read_again_from_the_start_midway_is_a_new_snapshot(tmp_path: Path
                                                                         ) -> None:
    async with open_core(tmp_path) as core:
        dh, first = await first_reply(core)
        await core.fs.readdir(dh, first[-1][0] + BATCH)  # partway: a few batches read
        (core.warm / "d" / "late").write_bytes(b"late")
        again = await read_all(core, dh, 0)
        await core.fs.releasedir(dh)
        assert sorted(name for _, name, _ in again) == sorted([*NAMES, b"late"])


@core_test
async def test_listings_past_the_held_ones_read_their_directory_by_path(tmp_path: Path
                                                                         ) -> None:
    held = listing.MOST_HELD
    listing.MOST_HELD = 1
    try:
        async with open_core(tmp_path) as core:
            fill(core.warm / "d")
            fill(core.warm / "e", NAMES[::-1])
            handles = []
            for name in (b"d", b"e"):
                dh = await core.fs.opendir((await core.lookup_path(name)).ino)
                handles.append((dh, await core.fs.readdir(dh, 0)))
            assert core.fs.listing.held == 1  # the second reads by path
            for (dh, first), names in zip(handles, (NAMES, NAMES[::-1])):
                rest = await read_all(core, dh, first[-1][0])
                await core.fs.releasedir(dh)
                got = [(e.name, e.st.st_size) for _, e in first] + [(n, s) for _, n, s in rest]
                assert sorted(got) == sorted((n, i) for i, n in enumerate(names))
            assert core.fs.listing.held == 0
    finally:
        listing.MOST_HELD = held


@pytest.mark.parametrize("batches", [1, 2])
@core_test
async def test_an_entry_that_keeps_changing_type_is_left_out_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    """One entry of a shared tree that keeps changing between a symlink and a file (its
    readlink finds a file each time its lstat found a symlink) is not listed; the rest of
    the directory is. It used to fail the whole listing."""
    names = NAMES[:batches * BATCH - 1]
    async with open_core(tmp_path) as core:
        fill(core.warm / "d", names)
        os.symlink("anything", core.warm / "d" / "zz-bad")
        d = await core.lookup_path(b"d")
        readlink = os.readlink

        def flipping(path: object, *args: object, **kwargs: object) -> object:
            if path == b"zz-bad":
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return readlink(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "readlink", flipping)
        dh = await core.fs.opendir(d.ino)
        got = await read_all(core, dh, 0)
        await core.fs.releasedir(dh)
        assert sorted(name for _, name, _ in got) == sorted(names)


@core_test
async def test_a_server_failing_part_way_through_a_listing_fails_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error that may be the server's (EIO: a soft mount timing out) fails the listing
    rather than cutting it short without a word (``ls``, ``cp -r``, ``rsync`` would leave
    files out): also when it comes after some entries were read."""
    async with open_core(tmp_path) as core:
        fill(core.warm / "d", NAMES[:10])
        d = await core.lookup_path(b"d")
        stat, answered = os.stat, []

        def failing(path: object, *args: object, **kwargs: object) -> object:
            if kwargs.get("dir_fd") is not None:
                if answered:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                answered.append(path)
            return stat(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "stat", failing)
        dh = await core.fs.opendir(d.ino)
        with pytest.raises(OSError) as raised:
            await core.fs.readdir(dh, 0)
        monkeypatch.undo()
        await core.fs.releasedir(dh)
        assert raised.value.errno == errno.EIO and answered
