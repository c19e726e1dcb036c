"""A prefix a write-back close acknowledged (the close of one of several descriptors sharing a
file) outlives a crash of tierfs when the descriptor left open then appends past the
large-file threshold, so that the file streams to the bucket before anyone closes it, or when
the close comes while it streams. Recovery published a stream only up to an fsync's flushed
size, and an acknowledged prefix only for a file with no upload, so those bytes were lost; the
prefix is kept for a stream too (``entries.publishable``). As for a file not streaming, a write
into the prefix takes it back: a crash, or a power loss, then never publishes it with that
write in it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import SetAttr, core_test, open_core
from .kept import durable_commits, lose_power

OPTS = dict(durability="writeback", large_file_threshold="64KiB")
DATA = b"a" * 30_000
MORE = bytes(range(256)) * 800  # 204,800 bytes: past the threshold


@pytest.mark.parametrize("streaming", [False, True], ids=["close-then-stream",
                                                          "close-while-streaming"])
@pytest.mark.parametrize("rebooted", [False, True], ids=["crash", "power-loss"])
@core_test
async def test_an_acknowledged_prefix_outlives_a_crash_once_the_file_streams(
        tmp_path: Path, rebooted: bool, streaming: bool) -> None:
    first, then = (MORE, DATA) if streaming else (DATA, MORE)
    async with open_core(tmp_path, **OPTS) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.create(b"log")
        await core.write_all(fh, first)
        await core.fs.flush(fh)  # a child's exit closed its copy: ``first`` acknowledged
        await core.write_all(fh, then, offset=len(first))  # appended, never closed
        data = core.fs.files.handles[fh].data
        assert data.upload is not None, "the file did not stream"
        core.crash()
    async with open_core(tmp_path, **OPTS) as again:
        await again.recover(rebooted=rebooted)
        got = await again.read_file(b"log")
        # After a power loss only what an fsync flushed is promised, as for any write-back
        # data; either way, never bytes that were not written there.
        if not rebooted:
            assert len(got) >= len(first), f"the acknowledged prefix was lost ({len(got)} bytes)"
        assert got == (first + then)[:len(got)]


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


@pytest.mark.parametrize("prefix", [False, True], ids=["no-prefix", "acked-prefix"])
@core_test
async def test_an_fsync_at_the_prefixs_size_outlives_a_write_into_it(
        tmp_path: Path, prefix: bool) -> None:
    async with open_core(tmp_path, **OPTS) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.create(b"log")
        await core.write_all(fh, DATA)
        if prefix:
            await core.fs.flush(fh)  # a close of a dup: DATA acknowledged
        await core.write_all(fh, MORE, offset=len(DATA))  # streams
        handle = core.fs.files.handles[fh]
        assert handle.data.upload is not None
        await core.fs.setattr(handle.inode.ino, SetAttr(size=len(DATA)))  # back to the prefix
        await core.fs.fsync(fh)  # DATA promised
        await core.write_all(fh, b"X" * 100, offset=0)  # a write after the fsync
        core.crash()
    async with open_core(tmp_path, **OPTS) as again:
        report = await again.recover()
        got = await again.read_file(b"log")
        assert len(got) == len(DATA), f"fsynced data lost: {len(got)} bytes, {report}"
