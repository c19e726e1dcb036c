"""Staged data recovery kept at a path for a later mount (it could not publish it, and
``Recovery.run`` keeps the entry) is older than what then goes home through another name of
the same file (a hard link): a publish or a truncate by that name supersedes it, by the file's
identity as the warm tier gives it then (``Publisher.supersede_links``), as one by its own
path does (``Journal.superseded``). Superseded by path only, the next mount published the
older data over the newer. An entry at a path naming another file keeps its data, and so does
one at another name of a linked stub (published by a rename, at one name only); the supersede
is committed before the data goes home even when the entry is renamed meanwhile. Which data is
newer: tests/core/test_recovery_hardlinks_order.py."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tierfs.write import publish as publish_module
from tierfs.write.warm import WarmPublisher

from .conftest import ROOT, Core, SetAttr, core_test, open_core
from .kept import recover_unresolved
from .test_recovery_linked_entries import crash_with_two_entries

OLD = b"0" * 10_000
A = b"A" * 40_000
B = b"B" * 30_000


@asynccontextmanager
async def kept_at_p(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Core]:
    """``p`` and ``q`` (OLD, home) linked as ``p2`` and ``q2``, A acknowledged at ``p``
    before a crash, and a mount whose recovery could not reach the warm tier and kept A for
    the next."""
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"p", OLD)
        await core.write_file(b"q", OLD)
        for name, target in ((b"p2", b"p"), (b"q2", b"q")):
            inode = await core.lookup_path(target)
            await core.fs.link(inode.ino, ROOT, name)
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"p", A)  # acknowledged, not home
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        # A kept for the next mount, at p
        assert (await recover_unresolved(again, monkeypatch)).failed == 1
        yield again


@pytest.mark.parametrize("link", [b"p2", b"q2"], ids=["same-file", "other-file"])
@core_test
async def test_a_publish_through_a_hard_link_supersedes_kept_data_of_that_file_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: bytes) -> None:
    async with kept_at_p(tmp_path, monkeypatch) as again:
        fh = await again.open(link, os.O_WRONLY | os.O_TRUNC)  # newer content, via link
        await again.write_all(fh, B)
        await again.close(fh)
        assert await again.publish_all() == []
        assert again.warm_path(link).read_bytes() == B
    async with open_core(tmp_path, durability="writeback") as third:  # a clean unmount
        await third.recover()
        if link == b"p2":
            assert third.warm_path(b"p").read_bytes() == B, "older kept data published over B"
        else:  # (another file's publish: A is still the newest of p)
            assert third.warm_path(b"p").read_bytes() == A
            assert third.warm_path(b"q").read_bytes() == B


@core_test
async def test_a_truncate_through_a_hard_link_supersedes_kept_data_of_that_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with kept_at_p(tmp_path, monkeypatch) as again:
        p2 = await again.lookup_path(b"p2")
        await again.fs.setattr(p2.ino, SetAttr(size=10))  # not open: truncated on the tier
        assert again.warm_path(b"p").read_bytes() == OLD[:10]
    async with open_core(tmp_path, durability="writeback") as third:
        await third.recover()
        assert third.warm_path(b"p2").read_bytes() == OLD[:10], "older kept data came back"


@core_test
async def test_a_removed_name_of_a_linked_file_is_published_as_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with kept_at_p(tmp_path, monkeypatch) as again:
        fh = await again.open(b"q", os.O_WRONLY)
        await again.write_all(fh, b"new")
        os.unlink(again.warm_path(b"q"))  # another node removes q meanwhile
        await again.close(fh)
        assert await again.publish_all() == []  # (the look at q's other names found none)


@core_test
async def test_a_rename_of_the_kept_path_meanwhile_is_superseded_before_the_data_goes_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with kept_at_p(tmp_path, monkeypatch) as again:
        inner = again.fs.warm.run
        renamed: list[bool] = []

        async def rename_while_looking(fn: object, *args: object) -> object:
            if fn is publish_module._same_file and not renamed:
                renamed.append(True)
                await again.fs.rename(ROOT, b"p", ROOT, b"r", 0)  # while the thread looks
            return await inner(fn, *args)  # type: ignore[operator]

        again.fs.warm.run = rename_while_looking  # type: ignore[method-assign]
        real = WarmPublisher.publish
        at_publish: list[object] = []

        async def publish(*args: object, **kwargs: object) -> object:
            at_publish.append({e.path for e in again.stored_journal().values()
                               if e.closed or e.acked})
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(WarmPublisher, "publish", publish)
        fh = await again.open(b"p2", os.O_WRONLY | os.O_TRUNC)
        await again.write_all(fh, B)
        await again.close(fh)
        assert await again.publish_all() == []
        assert renamed and at_publish
        # A crash as B goes home must find A at r superseded already.
        assert b"r" not in at_publish[0], at_publish
    async with open_core(tmp_path, durability="writeback") as third:
        await third.recover()
        assert third.warm_path(b"r").read_bytes() == B


STUB_OPTS = dict(durability="writeback", large_file_threshold="64KiB")
COLD = bytes(range(256)) * 400  # 102,400 bytes: cold, a stub


@core_test
async def test_a_publish_through_a_linked_stub_keeps_the_other_names_kept_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, **STUB_OPTS) as core:
        await core.recover()
        await core.write_file(b"p", COLD)
        assert await core.publish_all() == []
        assert core.stub(b"p") is not None
        os.link(core.warm_path(b"p"), core.warm_path(b"p2"), follow_symlinks=False)  # elsewhere
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"p", A)  # acknowledged, not home
        core.crash()
    async with open_core(tmp_path, **STUB_OPTS) as again:
        # A kept for the next mount, at p
        assert (await recover_unresolved(again, monkeypatch)).failed == 1
        await again.write_file(b"p2", B)  # p2 alone gets B (a rename over p2)
        assert await again.publish_all() == []
    async with open_core(tmp_path, **STUB_OPTS) as third:
        await third.recover()
        assert await third.read_file(b"p2") == B
        assert await third.read_file(b"p") == A, "A, kept at p, was lost"


@core_test
async def test_a_truncate_commits_its_paths_supersede_though_the_look_at_the_links_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await crash_with_two_entries(tmp_path, monkeypatch, True)  # A at p, B at p2: one file
    async with open_core(tmp_path, durability="writeback") as again:
        assert (await recover_unresolved(again, monkeypatch)).failed == 2  # both left
        inner = again.fs.warm.run

        async def failing_look(fn: object, *args: object) -> object:
            if fn is publish_module._same_file:
                raise OSError(errno.EIO, "the tier hiccups")
            return await inner(fn, *args)  # type: ignore[operator]

        again.fs.warm.run = failing_look  # type: ignore[method-assign]
        p2 = await again.lookup_path(b"p2")
        with pytest.raises(OSError):
            await again.fs.setattr(p2.ino, SetAttr(size=10))  # truncated on the tier, then EIO
        again.fs.warm.run = inner  # type: ignore[method-assign]
        # A crash now must not find B closed at p2 (older than the truncate) in the index.
        stale = [e for e in again.stored_journal().values() if e.path == b"p2" and e.closed]
        assert not stale, stale
        again.crash()
