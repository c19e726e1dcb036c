"""When removing a name deletes a cold file's object: only when the name removed through this
mount held that very stub, and alone. A stub hard-linked on the warm tree (``ln``, ``cp -al``,
``rsync --link-dest``) or moved to another name by another node keeps its object."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, ROOT, Core, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)


async def demoted(tmp_path: Path, c: Core, name: bytes = b"big.bin") -> None:
    assert (await c.fs.demoter.demote(name)).done
    assert c.stub(name) is not None


def write_warm(tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "warm" / name).write_bytes(data)


@core_test
async def test_unlinking_one_name_of_a_hard_linked_stub_keeps_the_object(
        tmp_path: Path) -> None:
    write_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        await demoted(tmp_path, c)
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        await c.lookup_path(b"big.bin")
        await c.fs.unlink(ROOT, b"big.bin")
        assert c.stub(b"other.bin") is not None
        assert await c.read_file(b"other.bin") == DATA


@core_test
async def test_renaming_over_one_name_of_a_hard_linked_stub_keeps_the_object(
        tmp_path: Path) -> None:
    write_warm(tmp_path, "big.bin", DATA)
    write_warm(tmp_path, "small", b"small")
    async with open_core(tmp_path) as c:
        await demoted(tmp_path, c)
        os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)
        await c.lookup_path(b"big.bin")
        await c.lookup_path(b"small")
        await c.fs.rename(ROOT, b"small", ROOT, b"big.bin", 0)
        assert await c.read_file(b"other.bin") == DATA


def moved_by_another_node(c: Core) -> None:
    """``mv a b; echo new > a`` on another node, after this one looked ``a`` up."""
    os.rename(c.warm_path(b"a"), c.warm_path(b"b"))
    c.warm_path(b"a").write_bytes(b"new file of the other node")


@core_test
async def test_unlink_of_a_name_whose_stub_moved_away_keeps_the_object(tmp_path: Path) -> None:
    write_warm(tmp_path, "a", DATA)
    async with open_core(tmp_path) as c:
        await demoted(tmp_path, c, b"a")
        await c.lookup_path(b"a")  # (the kernel sends the unlink on this entry)
        moved_by_another_node(c)
        await c.fs.unlink(ROOT, b"a")
        assert not c.warm_path(b"a").exists()
        assert await c.read_file(b"b") == DATA


@core_test
async def test_rename_over_a_name_whose_stub_moved_away_keeps_the_object(
        tmp_path: Path) -> None:
    write_warm(tmp_path, "a", DATA)
    write_warm(tmp_path, "x", b"x")
    async with open_core(tmp_path) as c:
        await demoted(tmp_path, c, b"a")
        await c.lookup_path(b"a")
        moved_by_another_node(c)
        await c.lookup_path(b"x")
        await c.fs.rename(ROOT, b"x", ROOT, b"a", 0)
        assert await c.read_file(b"b") == DATA


@core_test
async def test_an_open_cold_file_whose_name_another_node_reused_keeps_its_object(
        tmp_path: Path) -> None:
    """This node's lookup finds another file at the name of an open cold file: the open file
    lost that name, but not through this mount, and its last close deletes nothing."""
    write_warm(tmp_path, "a", DATA)
    async with open_core(tmp_path) as c:
        await demoted(tmp_path, c, b"a")
        fh = await c.open(b"a")
        moved_by_another_node(c)
        assert (await c.lookup_path(b"a")).stub is None  # (the other node's new file)
        await c.fs.release(fh)
        assert await c.read_file(b"b") == DATA


@core_test
async def test_an_open_cold_file_unlinked_here_loses_its_object_at_its_last_close(
        tmp_path: Path) -> None:
    write_warm(tmp_path, "a", DATA)
    async with open_core(tmp_path) as c:
        await demoted(tmp_path, c, b"a")
        key = c.cold(b"a").key
        fh = await c.open(b"a")
        await c.fs.unlink(ROOT, b"a")
        assert key in c.objects()
        assert await c.read_all(fh) == DATA
        await c.fs.release(fh)
        assert key not in c.objects()
