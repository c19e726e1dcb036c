"""A create reads its directory's attributes (a set-group-ID directory gives the new file its
group) once per run of creates there, not twice per create: on a network warm tier each read
is a round trip. What a create read after itself serves the next create in that directory,
until any other change through the mount."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .conftest import Core, SetAttr, core_test, open_core


def count_parent_reads(core: Core, parent: bytes) -> list[int]:
    """From now on, count the warm tier's lstat calls of ``parent`` (in ``[0]``)."""
    counts = [0]
    warm = core.fs.warm
    inner = warm.lstat

    def counted(rel: bytes) -> os.stat_result:
        if rel == parent:
            counts[0] += 1
        return inner(rel)

    warm.lstat = counted  # type: ignore[method-assign]
    return counts


@core_test
async def test_creates_in_one_directory_read_it_once_each(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"d")
        await core.close(await core.create(b"d/first"))
        reads = count_parent_reads(core, b"d")
        for i in range(5):  # (as the kernel sends them: the directory known, not looked up)
            fh, _, _, _ = await core.fs.create(d, b"f%d" % i, 0o644, os.O_WRONLY, os.getuid(),
                                               os.getgid())
            await core.close(fh)
        # One read after each create (what the kernel's getattr of the directory gets, and
        # the next create's), none before: two each before this was kept.
        assert reads[0] == 5


@core_test
async def test_a_directory_made_set_group_id_between_creates_passes_its_group_on(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"team")
        await core.close(await core.create(b"team/before"))
        await core.fs.setattr(d, SetAttr(gid=777, mode=0o2775))
        await core.close(await core.create(b"team/after"))
        assert os.stat(core.warm / "team" / "after").st_gid == 777
        assert os.stat(core.warm / "team" / "before").st_gid == os.getgid()
        assert os.stat(core.warm / "team").st_mode & stat.S_ISGID


@core_test
async def test_creates_in_two_directories_in_turn_read_each_once_each(tmp_path: Path) -> None:
    """A create changes no directory's group or mode: one in another directory between two
    in this one leaves what the first read of this one for the second (as a writer of
    shards into one folder per class does)."""
    async with open_core(tmp_path) as core:
        a = await core.mkdirs(b"a")
        b = await core.mkdirs(b"b")
        await core.close(await core.create(b"a/first"))
        await core.close(await core.create(b"b/first"))
        reads = count_parent_reads(core, b"b")
        for i in range(3):
            for parent in (a, b):
                fh, _, _, _ = await core.fs.create(parent, b"f%d" % i, 0o644, os.O_WRONLY,
                                                   os.getuid(), os.getgid())
                await core.close(fh)
        assert reads[0] == 3  # after each of its creates, none before
