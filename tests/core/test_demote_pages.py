"""``tierfs demote DIR`` of a directory holding more files than one walk hands back
(``warmscan.KEEP``, 1000) goes through it a page at a time, each walk starting past the last
file of the page before. It took the KEEP least recently used files and said how many were
left, to be run again; but files it refused (here: with extended attributes, which a stub
cannot keep) keep their times, were the oldest again at the next run, and the files behind
them were never reached.

(KEEP is made 3 here so the test makes a few files instead of a thousand.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tierfs.control import moves
from tierfs.control.commands import make_handlers

from .conftest import Core, core_test, open_core


async def demote_in_pages_of_three(c: Core, path: str) -> dict[str, Any]:
    """``tierfs demote PATH`` as the control socket serves it, walking three files a time."""
    handlers = make_handlers(c.fs, "/mnt")

    async def send(message: object) -> None:
        pass

    mp = pytest.MonkeyPatch()
    mp.setattr(moves, "KEEP", 3)
    try:
        return await handlers["demote"]({"paths": [path]}, send)  # type: ignore[no-any-return]
    finally:
        mp.undo()


@core_test
async def test_demote_of_a_large_directory_reaches_every_file_when_run_again(
        tmp_path: Path) -> None:
    d = tmp_path / "warm" / "d"
    d.mkdir(parents=True)
    for i in range(3):  # old files a demotion refuses (extended attributes)
        p = d / f"tagged{i}"
        p.write_bytes(b"t" * 5000)
        try:
            os.setxattr(p, "user.tag", b"x")
        except OSError as e:
            pytest.skip(f"no user xattrs here: {e}")
        t = 10**18 + i * 10**9
        os.utime(p, ns=(t, t))
    (d / "plain").write_bytes(b"p" * 5000)  # a newer plain file
    async with open_core(tmp_path) as c:
        result = await demote_in_pages_of_three(c, "d")
        assert c.stub(b"d/plain") is not None, (
            f"the plain file was never demoted; tried={[f['path'] for f in result['files']]}")
        assert sorted(f["path"] for f in result["files"]) == [
            "d/plain", "d/tagged0", "d/tagged1", "d/tagged2"]


@core_test
async def test_pages_of_files_with_the_same_times_reach_each_file_once(tmp_path: Path) -> None:
    """Files unpacked with their times kept (tar, cp -p) all have the same ones: a page ends
    within them, and the next starts after the last one it held, by path."""
    d = tmp_path / "warm" / "d"
    d.mkdir(parents=True)
    t = 10**18
    for i in range(8):
        p = d / f"f{i}"
        p.write_bytes(bytes([i]) * 5000)
        os.utime(p, ns=(t, t))
    async with open_core(tmp_path) as c:
        result = await demote_in_pages_of_three(c, "d")
        assert sorted(f["path"] for f in result["files"]) == [f"d/f{i}" for i in range(8)]
        assert all(f["done"] for f in result["files"])
        for i in range(8):
            assert await c.read_file(f"d/f{i}".encode()) == bytes([i]) * 5000
