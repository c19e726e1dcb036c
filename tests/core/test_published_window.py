"""A write-back file published by copy keeps its staging file while a handle holds it (a
reader, or a writer that reopened it), and its journal entry said "closed" until the next
batch commit: a crash in between had recovery publish the data again, over what another
node had put there since. Such a publish now logs the entry's change (``acklog``, a write
without a sync, as a write-back close does) before it returns; a first fix committed the index
for every publish by copy, an fdatasync per close on an NFS warm tier, and the last two tests
hold that off. (A publish by rename leaves no staging file to publish again.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tierfs.vfs.upkeep as upkeep
from tierfs.index import Index

from .conftest import core_test, open_core

V1 = b"1" * 50_000
V2 = b"2" * 70_000


def other_node_writes(path: Path, data: bytes) -> None:
    """Another node's close: a temp file renamed over the name on the shared warm tier."""
    tmp = path.with_name(".other-node-tmp")
    tmp.write_bytes(data)
    os.rename(tmp, path)


async def recovery_keeps_the_other_nodes_file(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=False) as again:
        report = await again.recover()
        assert again.warm_path(b"f").read_bytes() == V2, (
            f"recovery published the old, already-published data again over another "
            f"node's later file ({report})")


@core_test
async def test_a_published_write_back_file_is_not_republished_over_another_nodes_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upkeep, "FLUSH_INTERVAL", 3600.0)  # (the crash falls in the window)
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.create(b"f")
        await core.write_all(fh, V1)
        await core.close(fh)  # acknowledged (in the log)
        # Opened for writing again: the open publishes what the close acknowledged first.
        w2 = await core.open(b"f", os.O_WRONLY)
        assert core.warm_path(b"f").read_bytes() == V1
        # Another node writes the file after that publish, and closes it.
        other_node_writes(core.warm_path(b"f"), V2)
        core.crash()
        del w2
    await recovery_keeps_the_other_nodes_file(tmp_path)


@core_test
async def test_a_background_publish_while_a_reader_holds_the_file_is_not_repeated_over_newer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The plain write-back path: the last close hands the file to the background task, a
    # reader opens it meanwhile (a loader reading what was just saved), the task publishes
    # it by copy and, the reader holding the state, staging stays.
    monkeypatch.setattr(upkeep, "FLUSH_INTERVAL", 3600.0)
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        await core.recover()
        fh = await core.create(b"f")
        await core.write_all(fh, V1)
        await core.close(fh)
        reader = await core.open(b"f", os.O_RDONLY)
        await core.until(lambda: core.warm_path(b"f").read_bytes() == V1)
        await core.until(lambda: core.writeback_pending() == 0)
        other_node_writes(core.warm_path(b"f"), V2)
        core.crash()
        del reader
    await recovery_keeps_the_other_nodes_file(tmp_path)


FILES = 20
DATA = b"x" * 10_000


async def commits_for_closes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             durability: str) -> int:
    monkeypatch.setattr(upkeep, "FLUSH_INTERVAL", 3600.0)  # (no periodic commit)
    counts = {"commits": 0}
    real = Index.commit

    def counted(self: Index, changes: dict) -> None:  # type: ignore[type-arg]
        if changes:
            counts["commits"] += 1
        real(self, changes)

    async with open_core(tmp_path, durability=durability, by_rename=False) as core:
        await core.recover()
        await core.sync_journal()
        monkeypatch.setattr(Index, "commit", counted)
        for i in range(FILES):
            await core.write_file(b"f%d" % i, DATA)
        if durability == "writeback":
            assert await core.publish_all() == []
        n = counts["commits"]
        monkeypatch.setattr(Index, "commit", real)
        for i in range(FILES):
            assert core.warm_path(b"f%d" % i).read_bytes() == DATA
    return n


@core_test
async def test_sync_mode_closes_by_copy_do_not_commit_the_index_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = await commits_for_closes(tmp_path, monkeypatch, "sync")
    assert n <= 2, f"{n} index commits for {FILES} closes (publish by copy, sync mode)"


@core_test
async def test_write_back_publishes_by_copy_do_not_commit_the_index_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = await commits_for_closes(tmp_path, monkeypatch, "writeback")
    assert n <= 2, f"{n} index commits for {FILES} write-back files (publish by copy)"
