"""A prefix a write-back close acknowledged (the close of one of several descriptors sharing a
file) outlives a crash of tierfs when the descriptor left open then appends past the
large-file threshold, so that the file streams to the bucket before anyone closes it. Recovery
publishes a streaming file only up to a size the journal holds as flushed (an fsync's), and the
acknowledged prefix is published only for a file with no upload: the start of the stream must
carry the promise over (``Journal.streaming``), or the acknowledged bytes are lost. And as for
a file not streaming, a write into the prefix takes it back: a crash, or a power loss, then
never publishes it with that write in it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import core_test, open_core
from .kept import durable_commits, lose_power

OPTS = dict(durability="writeback", large_file_threshold="64KiB")
DATA = b"a" * 30_000
MORE = bytes(range(256)) * 800  # 204,800 bytes: past the threshold


@pytest.mark.parametrize("rebooted", [False, True], ids=["crash", "power-loss"])
@core_test
async def test_an_acknowledged_prefix_outlives_a_crash_once_the_file_streams(
        tmp_path: Path, rebooted: bool) -> None:
    async with open_core(tmp_path, **OPTS) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.create(b"log")
        await core.write_all(fh, DATA)
        await core.fs.flush(fh)  # a child's exit closed its copy: DATA acknowledged
        await core.write_all(fh, MORE, offset=len(DATA))  # appended, never closed
        data = core.fs.files.handles[fh].data
        assert data.upload is not None, "the file did not stream"
        core.crash()
    async with open_core(tmp_path, **OPTS) as again:
        await again.recover(rebooted=rebooted)
        got = await again.read_file(b"log")
        # (After a power loss only flushed bytes are promised; the stream's start flushed
        # them. Either way, never bytes that were not written there.)
        assert len(got) >= len(DATA), f"the acknowledged prefix was lost ({len(got)} bytes)"
        assert got == (DATA + MORE)[:len(got)]


@pytest.mark.parametrize("rebooted", [False, True], ids=["crash", "power-loss"])
@core_test
async def test_a_write_into_the_acknowledged_prefix_takes_it_back_once_streaming(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rebooted: bool) -> None:
    keep = tmp_path / "durable.mdb"
    async with open_core(tmp_path, **OPTS) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.fs.journal.sync(durable=True)
        shutil.copyfile(core.hot / "index" / "data.mdb", keep)
        durable_commits(monkeypatch, core.hot / "index", keep)
        fh = await core.create(b"log")
        await core.write_all(fh, DATA)
        await core.fs.flush(fh)  # a close of a dup: DATA acknowledged
        await core.write_all(fh, MORE, offset=len(DATA))  # streams
        assert core.fs.files.handles[fh].data.upload is not None
        await core.write_all(fh, b"X" * 100, offset=0)  # a write into it: takes it back
        core.crash()
    if rebooted:
        lose_power(tmp_path, keep)  # the index as its last durable commit left it
    async with open_core(tmp_path, **OPTS) as again:
        report = await again.recover(rebooted=rebooted)
        got = await again.read_file(b"log")
        assert not got.startswith(b"X"), (
            f"published with a write no close or fsync acknowledged: {report}, "
            f"{len(got)} bytes")
