"""The warm quota reads a tree anyone may write to: it counts the space files take (allocated
blocks, a hard-linked file once), and is offered only files it may demote that take most of
their size. It used to add up apparent sizes and every name of a file, so another user's
sparse file, or one file linked under many names, made it demote the mount owner's files; a
sparse file was uploaded whole, its holes as zeros, to free nothing; and on a mount not run as
root, another user's old files filled every place of the walk's bounded answer, were refused
one by one, and the owner's files were never reached. A file allocated well under its size is
looked at for holes: on a compressing file system it has none, and is demoted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tierfs.write import warmscan

from .conftest import MIB, core_test, open_core
from .test_demote import DATA
from .test_demote import put_warm as demote_put_warm

OTHER = 4242
QUOTA = {"demote_min_size": "1MiB", "demote_interval": 86400}


def put_warm(root: Path, name: str, data: bytes, age: int = 0, uid: int | None = None) -> Path:
    """``test_demote.put_warm``, owned by ``uid`` if given."""
    path = demote_put_warm(root, name, data, age)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def sparse(root: Path, name: str, size: int, age: int = 0, uid: int | None = None) -> Path:
    path = put_warm(root, name, b"", uid=uid)
    os.truncate(path, size)
    if age:
        t = path.stat().st_mtime_ns - age * 10**9
        os.utime(path, ns=(t, t))
    return path


@core_test
async def test_usage_is_the_space_files_take(tmp_path: Path) -> None:
    path = sparse(tmp_path, "sparse.img", 1 << 40)
    with open(path, "r+b") as f:
        f.seek(1 << 30)
        f.write(b"x" * 4096)
    put_warm(tmp_path, "h/f0", b"h" * MIB)
    for i in range(1, 10):
        os.link(tmp_path / "warm" / "h" / "f0", tmp_path / "warm" / "h" / f"f{i}")
    async with open_core(tmp_path) as c:
        seen = await c.fs.warm.run(warmscan.walk, c.fs.warm, 1 << 50)
        taken = path.stat().st_blocks * 512 + (tmp_path / "warm/h/f0").stat().st_blocks * 512
        assert seen.bytes == taken and seen.files == 2


@pytest.mark.parametrize("other", ["sparse", "linked"])
@core_test
async def test_another_users_files_do_not_push_the_owners_out(tmp_path: Path, other: str
                                                              ) -> None:
    mine = put_warm(tmp_path, "mine.bin", DATA, age=5000)
    if other == "sparse":
        sparse(tmp_path, "theirs.img", 1 << 40, uid=OTHER)
    else:
        first = put_warm(tmp_path, "h/f0", b"h" * (6 * MIB), uid=OTHER)
        for i in range(1, 30):
            os.link(first, tmp_path / "warm" / "h" / f"f{i}")
    async with open_core(tmp_path, warm_quota="64MiB", **QUOTA) as c:
        assert await c.fs.demoter.enforce_quota() == 0
        assert c.stub(b"mine.bin") is None and mine.read_bytes() == DATA


@core_test
async def test_a_sparse_file_is_not_uploaded_to_free_nothing(tmp_path: Path) -> None:
    sparse(tmp_path, "sparse.img", 40 * MIB, age=100_000)  # the oldest, taking nothing
    put_warm(tmp_path, "mine.bin", DATA, age=10)
    async with open_core(tmp_path, warm_quota="8MiB", **QUOTA) as c:
        freed = await c.fs.demoter.enforce_quota()
        assert c.stub(b"mine.bin") is not None and c.stub(b"sparse.img") is None
        assert freed >= len(DATA)  # (counted as the space it took)
        assert c.objects() == {c.cold(b"mine.bin").key: DATA}


@core_test
async def test_files_a_mount_may_not_demote_take_no_place_in_the_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warmscan, "KEEP", 3)  # (not 1000)
    put_warm(tmp_path, "mine.bin", DATA, age=10)
    for i in range(3):
        put_warm(tmp_path, f"h{i}.bin", b"h" * (2 * MIB), age=100_000 + i, uid=OTHER)
    async with open_core(tmp_path, warm_quota="8MiB", **QUOTA) as c:
        c.fs.core.as_root = False  # (a mount run by its user: the other's files are not its)
        await c.fs.demoter.enforce_quota()
        assert c.stub(b"mine.bin") is not None


class _Compressed:
    """A directory entry of a file system that compresses 3x: the space a file takes is a
    third of its size, as ``st_blocks`` says on ZFS or btrfs with compression."""

    def __init__(self, entry: Any) -> None:
        self._entry, self.name = entry, entry.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._entry, name)

    def stat(self, follow_symlinks: bool = True) -> Any:
        st = self._entry.stat(follow_symlinks=follow_symlinks)
        fields = list(st)
        blocks = st.st_size // 3 // 512
        return type("St", (), {**{f: getattr(st, f) for f in dir(st) if f.startswith("st_")},
                               "st_blocks": blocks, "__iter__": lambda _: iter(fields)})()


@core_test
async def test_files_of_a_compressing_file_system_are_demoted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        put_warm(tmp_path, f"log{i}.csv", DATA, age=1000 + i)
    scandir = os.scandir

    class Scan:
        def __init__(self, fd: int) -> None:
            self._it = scandir(fd)

        def __enter__(self) -> Any:
            return (_Compressed(e) for e in self._it.__enter__())

        def __exit__(self, *exc: Any) -> Any:
            return self._it.__exit__(*exc)

    async with open_core(tmp_path, warm_quota="2MiB", **QUOTA) as c:
        monkeypatch.setattr(os, "scandir", Scan)
        freed = await c.fs.demoter.enforce_quota()
        monkeypatch.undo()
        assert freed > 0 and c.stub(b"log3.csv") is not None  # (the oldest first)
