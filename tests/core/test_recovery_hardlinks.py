"""Staged data recovery kept at a path for a later mount (it could not publish it, and
``Recovery.run`` keeps the entry) is older than what then goes home through another name of
the same file (a hard link): a publish or a truncate by that name supersedes it, by the file's
identity as the warm tier gives it then (``Publisher.supersede_links``), as one by its own
path does (``Journal.superseded``). Superseded by path only, the next mount published the
older data over the newer. An entry at a path naming another file keeps its data."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tierfs.write.recovery import Recovery

from .conftest import ROOT, Core, SetAttr, core_test, open_core

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
        real = Recovery._resolve

        async def away(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EIO, "warm tier away")

        monkeypatch.setattr(Recovery, "_resolve", away)
        assert (await again.recover()).failed == 1  # A kept for the next mount, at p
        monkeypatch.setattr(Recovery, "_resolve", real)
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
