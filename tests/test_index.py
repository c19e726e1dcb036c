"""The LMDB index when the hot disk is full: a commit that finds no room asks for room (the
block cache evicts) and tries again, and otherwise fails with ENOSPC keeping every queued
change for the next try. A disk with a little room left makes LMDB's write come up short,
which it reports as EIO: that too is a full disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from conftest import tmpfs
from tierfs.index import Batch, Index

MIB = 1024 * 1024


def fill(path: Path, leave: int = 0) -> None:
    """Fill the file system holding ``path`` with one file at ``path``, but ``leave`` bytes."""
    chunk = b"\0" * MIB
    with open(path, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    if leave:
        os.truncate(path, os.stat(path).st_size - leave)


async def run_in_thread(fn, *args):  # type: ignore[no-untyped-def]
    return await trio.to_thread.run_sync(fn, *args)


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    with tmpfs(tmp_path / "disk", "8m") as disk:
        yield disk


@pytest.mark.parametrize("leave", [0, 64 * 1024], ids=["full", "nearly-full"])
def test_a_full_disk_makes_room_and_commits(small_disk: Path, leave: int) -> None:
    index = Index(small_disk / "index")
    batch = Batch(index)
    fill(small_disk / "filler", leave)
    asked = []

    async def make_room() -> None:
        asked.append(True)
        os.unlink(small_disk / "filler")

    batch.make_room = make_room
    values = {f"k{i}".encode(): os.urandom(2000) for i in range(2000)}  # about 4 MiB of pages

    async def main() -> None:
        for key, value in values.items():
            batch.put("inodes", key, value)
        await batch.sync(run_in_thread)

    trio.run(main)
    assert asked == [True]
    for key, value in values.items():
        assert index.get("inodes", key) == value
    index.close()


@pytest.mark.parametrize("leave", [0, 64 * 1024], ids=["full", "nearly-full"])
def test_without_room_the_changes_stay_queued(small_disk: Path, leave: int) -> None:
    index = Index(small_disk / "index")
    batch = Batch(index)
    fill(small_disk / "filler", leave)
    values = {f"k{i}".encode(): os.urandom(2000) for i in range(2000)}

    async def main() -> None:
        for key, value in values.items():
            batch.put("inodes", key, value)
        with pytest.raises(OSError) as full:
            await batch.flush(run_in_thread)
        assert full.value.errno == errno.ENOSPC
        assert batch.pending("inodes", b"k7") == (True, values[b"k7"])
        os.unlink(small_disk / "filler")
        await batch.sync(run_in_thread)

    trio.run(main)
    assert index.get("inodes", b"k1999") == values[b"k1999"]
    index.close()


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.encoded = 0

    def encode(self) -> bytes:
        self.encoded += 1
        return str(self.value).encode()


def test_an_object_is_committed_as_it_is_when_the_commit_starts(tmp_path: Path) -> None:
    index = Index(tmp_path / "index")
    batch = Batch(index)
    record = Counter()

    async def main() -> None:
        for value in range(5):
            record.value = value
            batch.put("journal", b"r", record)
        assert batch.pending("journal", b"r") == (True, b"4")
        await batch.sync(run_in_thread)
        record.value = 9  # changed, not put again: the committed value stays
        await batch.sync(run_in_thread)

    trio.run(main)
    assert index.get("journal", b"r") == b"4"
    assert record.encoded == 2  # once by pending, once by the commit: not once per put
    index.close()


def test_items_reads_one_database_whole_in_key_order(tmp_path: Path) -> None:
    index = Index(tmp_path / "index")
    try:
        index.commit({("pins", b"b"): b"2", ("pins", b"a"): b"1", ("blocks", b"x"): b"9"})
        assert index.items("pins") == [(b"a", b"1"), (b"b", b"2")]
        assert index.items("blocks") == [(b"x", b"9")]
        assert index.items("journal") == []
        index.commit({("pins", b"a"): None})
        assert index.items("pins") == [(b"b", b"2")]
    finally:
        index.close()
