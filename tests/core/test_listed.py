"""Lookups answered from a recent listing of their directory (``vfs.listed``): after a few
lookups in one directory, the rest within ``attr_timeout`` make no warm call; a name the
listing lacks, a change through the mount, and the end of the attribute timeout each send the
lookup to the warm tier again, and the kernel keeps a listed answer only for what is left of
the timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from tierfs.vfs import listed

from .conftest import ROOT, Core, core_test, open_core

NAMES = [f"f{i:03d}".encode() for i in range(40)]


async def look_up_until_listed(core: Core) -> None:
    for name in NAMES[:listed.ASKED_BEFORE_LISTING + 1]:
        await core.fs.lookup(ROOT, name)


async def fill_and_list(core: Core) -> None:
    """The warm root filled with NAMES, and listed by lookups."""
    fill(core.warm)
    await look_up_until_listed(core)


def count_listings(core: Core) -> dict[str, int]:
    """From now on, count the listings made to answer lookups (in ``["listings"]``)."""
    counts = {"listings": 0}
    inner = core.fs.warm.list_attrs

    def counted(rel: bytes, most: int) -> object:
        counts["listings"] += 1
        return inner(rel, most)

    core.fs.warm.list_attrs = counted  # type: ignore[method-assign]
    return counts


def fill(core_warm: Path, names: list[bytes] = NAMES) -> None:
    for i, name in enumerate(names):
        (core_warm / os.fsdecode(name)).write_bytes(b"x" * i)


@core_test
async def test_lookups_in_a_busy_directory_are_answered_from_one_listing(tmp_path: Path
                                                                          ) -> None:
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)
        calls = core.count_warm_calls()
        sizes = [(await core.fs.lookup(ROOT, name))[1].size for name in NAMES]
        assert sizes == list(range(len(NAMES)))
        # a probe each until the directory is busy enough, then one listing for the rest
        assert calls["calls"] == listed.ASKED_BEFORE_LISTING + 1
        _, attrs = await core.fs.lookup(ROOT, NAMES[7])
        assert attrs.size == 7
        assert calls["calls"] == listed.ASKED_BEFORE_LISTING + 1
        counted = core.fs.counters.values
        assert counted["listings"] == 1
        assert counted["lookups_listed"] == len(NAMES) - listed.ASKED_BEFORE_LISTING + 1


@core_test
async def test_a_listed_answer_is_kept_by_the_kernel_only_for_what_is_left(tmp_path: Path
                                                                          ) -> None:
    async with open_core(tmp_path, attr_timeout=2.0) as core:
        fill(core.warm)
        for name in NAMES[:listed.ASKED_BEFORE_LISTING]:
            _, attrs = await core.fs.lookup(ROOT, name)
        started = time.monotonic()
        await core.fs.lookup(ROOT, NAMES[listed.ASKED_BEFORE_LISTING])  # (listed)
        await trio.sleep(0.5)
        _, attrs = await core.fs.lookup(ROOT, NAMES[-1])
        assert attrs.fresh_for is not None
        assert attrs.fresh_for <= 2.0 - (time.monotonic() - started) + 0.01
        assert attrs.fresh_for < 1.6


@core_test
async def test_a_name_the_listing_lacks_is_looked_up_on_the_warm_tier(tmp_path: Path) -> None:
    async with open_core(tmp_path, attr_timeout=30) as core:
        await fill_and_list(core)
        core.warm_path(b"new").write_bytes(b"made by another node")
        _, attrs = await core.fs.lookup(ROOT, b"new")
        assert attrs.size == len(b"made by another node")


@core_test
async def test_another_nodes_change_is_seen_once_the_attribute_timeout_passed(tmp_path: Path
                                                                              ) -> None:
    async with open_core(tmp_path, attr_timeout=0.3) as core:
        await fill_and_list(core)
        core.warm_path(NAMES[-1]).write_bytes(b"rewritten elsewhere")
        await trio.sleep(0.4)
        _, attrs = await core.fs.lookup(ROOT, NAMES[-1])
        assert attrs.size == len(b"rewritten elsewhere")


@pytest.mark.parametrize("change", ["chmod", "write", "unlink", "create", "truncate"])
def test_a_change_through_the_mount_voids_the_listing(tmp_path: Path, change: str) -> None:
    @core_test
    async def run(tmp_path: Path) -> None:
        async with open_core(tmp_path, attr_timeout=30) as core:
            await fill_and_list(core)
            target = NAMES[-1]
            inode, _ = await core.fs.lookup(ROOT, target)
            if change == "chmod":
                from tierfs.core.attrs import SetAttr
                await core.fs.setattr(inode.ino, SetAttr(mode=0o600))
                expect_mode, expect_size = 0o600, len(NAMES) - 1
            elif change == "truncate":
                from tierfs.core.attrs import SetAttr
                await core.fs.setattr(inode.ino, SetAttr(size=3))
                expect_mode, expect_size = None, 3
            elif change == "write":
                fh = await core.open(target, os.O_WRONLY)
                await core.fs.write(fh, 0, b"y" * 100)
                await core.close(fh)
                expect_mode, expect_size = None, 100
            elif change == "unlink":
                await core.fs.unlink(ROOT, NAMES[0])
                expect_mode, expect_size = None, len(NAMES) - 1
            else:
                fh = await core.create(b"other")
                await core.close(fh)
                expect_mode, expect_size = None, len(NAMES) - 1
            # Another node's change the listing could still answer for, to tell the answers
            # apart: after our change, the lookup must read the warm tier.
            core.warm_path(NAMES[-2]).write_bytes(b"z" * 1000)
            calls = core.count_warm_calls()
            _, attrs = await core.fs.lookup(ROOT, NAMES[-2])
            assert attrs.size == 1000
            assert calls["calls"] >= 1
            _, attrs = await core.fs.lookup(ROOT, target)
            assert attrs.size == expect_size
            if expect_mode is not None:
                assert attrs.mode & 0o777 == expect_mode

    run(tmp_path)


@core_test
async def test_a_directory_too_large_is_not_listed(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listed, "MOST_ENTRIES", 10)
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)
        calls = core.count_warm_calls()
        for name in NAMES:
            await core.fs.lookup(ROOT, name)
        # one probe per name, and the one listing that found the directory too large
        assert calls["calls"] == len(NAMES) + 1
        core.warm_path(NAMES[-1]).write_bytes(b"rewritten elsewhere")
        _, attrs = await core.fs.lookup(ROOT, NAMES[-1])
        assert attrs.size == len(b"rewritten elsewhere")


@core_test
async def test_a_stub_in_a_listing_is_answered_as_its_cold_file(tmp_path: Path) -> None:
    async with open_core(tmp_path, attr_timeout=30, large_file_threshold="64KiB") as core:
        data = os.urandom(200 * 1024)
        await core.write_file(b"big", data)
        assert core.stub(b"big") is not None
        await fill_and_list(core)
        calls = core.count_warm_calls()
        inode, attrs = await core.fs.lookup(ROOT, b"big")
        assert calls["calls"] == 0
        assert attrs.size == len(data)
        assert await core.read_file(b"big") == data


@core_test
async def test_creates_do_not_list_their_directory(tmp_path: Path) -> None:
    """A create's lookup of its new name finds nothing: it does not make the directory
    busy, or every create would list the growing directory again."""
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)
        listings = count_listings(core)
        for i in range(50):
            name = f"new{i:03d}".encode()
            try:
                await core.fs.lookup(ROOT, name)
            except FileNotFoundError:
                pass
            fh = await core.create(name)
            await core.close(fh)
        assert listings["listings"] == 0


@core_test
async def test_a_directory_changed_between_lookups_is_listed_less_often(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rewrite through the mount voids the listing; a directory listed before waits
    for lookups in proportion to its size before it is listed again."""
    monkeypatch.setattr(listed, "LISTED_PER_LOOKUP", 4)
    async with open_core(tmp_path, attr_timeout=30) as core:
        fill(core.warm)  # 40 names: listed again after 10 lookups, not 4
        listings = count_listings(core)
        await look_up_until_listed(core)
        assert listings["listings"] == 1
        for name in NAMES[5:25]:
            inode, _ = await core.fs.lookup(ROOT, name)
            fh, _, _ = await core.fs.open(inode.ino, os.O_WRONLY)
            await core.fs.write(fh, 0, b"w")
            await core.close(fh)
        assert listings["listings"] <= 1 + 20 // 10
