"""What a write-back close acknowledged outlives a crash of tierfs, and recovery never
publishes writes no close acknowledged. Each close(2) of one of several descriptors sharing an
open file (after ``dup`` or ``fork``) is a FUSE flush, and acknowledges the content as it is
then; a write through a descriptor left open into that content takes it back (durably, before
the staged bytes change), one past its end leaves it for recovery to publish (a log written on
after a child's exit), and a truncate publishes it first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import PART, ROOT, Core, SetAttr, core_test, open_core

DATA = b"x" * 60_000


async def acknowledged(core: Core) -> int:
    """``f`` written with DATA and acknowledged by the close(2) of a dup (a FUSE flush), its
    handle still open; the mount publishes nothing on its own. The handle."""
    core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
    fh = await core.create(b"f")
    await core.write_all(fh, DATA)
    await core.fs.flush(fh)
    return fh


@pytest.mark.parametrize("committed", [False, True], ids=["before-commit", "after-commit"])
@pytest.mark.parametrize("change", ["write", "append", "truncate"])
@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_a_change_after_a_shared_descriptors_close_is_never_published_half_done(
        tmp_path: Path, committed: bool, change: str, by_rename: bool) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as core:
        fh = await acknowledged(core)
        # The descriptor still open changes the file and keeps it open.
        if change == "write":
            await core.fs.write(fh, 0, b"half")
        elif change == "append":
            await core.fs.write(fh, len(DATA), b"more, not closed")
        else:
            inode = await core.lookup_path(b"f")
            await core.fs.setattr(inode.ino, SetAttr(size=10))
        if committed:
            await core.sync_journal()  # the index caught up with the change
        core.crash()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as again:
        await again.recover()
        # A truncate published what the close acknowledged first; an append left it as it
        # was (recovery publishes that much); a write into it took it back, and the file is
        # as the create left it. Never the unclosed write.
        expected = b"" if change == "write" else DATA
        assert again.warm_path(b"f").read_bytes() == expected


@core_test
async def test_a_write_after_a_shared_descriptors_close_publishes_nothing_until_its_own(
        tmp_path: Path) -> None:
    # Publishing the acknowledged content before the write would cost every child's exit a
    # publish of the whole file for a shell's redirected log (exec >log), and fail the write
    # while the warm tier is away.
    async with open_core(tmp_path, durability="writeback") as core:
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        fh = await core.create(b"f")
        for n in range(5):
            await core.fs.write(fh, n * 4096, DATA[:4096])
            await core.fs.flush(fh)  # a child's exit closes its copy of the descriptor
        assert core.warm_path(b"f").read_bytes() == b""
        reader = await core.open(b"f")
        assert await core.read_all(reader) == DATA[:4096] * 5
        await core.close(reader)
        await core.close(fh)
        assert await core.publish_all() == []
        assert core.warm_path(b"f").read_bytes() == DATA[:4096] * 5


MTIME = 1_000_000_000 * 10**9


@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_times_set_after_a_writeback_close_outlive_a_crash(tmp_path: Path,
                                                                 by_rename: bool) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as core:
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", DATA)  # acknowledged, waiting for its publish
        inode = await core.lookup_path(b"f")
        await core.fs.setattr(inode.ino, SetAttr(atime_ns=MTIME, mtime_ns=MTIME))  # cp -p
        core.crash()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as again:
        await again.recover()
        assert again.warm_path(b"f").read_bytes() == DATA
        assert os.stat(again.warm_path(b"f")).st_mtime_ns == MTIME, "the times were lost"


@pytest.mark.parametrize("durability", ["writeback", "sync"])
@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_a_truncate_by_path_of_a_file_with_open_state_outlives_a_crash(
        tmp_path: Path, by_rename: bool, durability: str) -> None:
    async with open_core(tmp_path, durability=durability, by_rename=by_rename) as core:
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        reader = None
        if durability == "writeback":
            await core.write_file(b"f", DATA)  # waiting for its publish: the state stays
        else:
            await core.write_file(b"f", DATA)
            reader = await core.open(b"f")  # a reader keeps the state: no publish at the cut
        inode = await core.lookup_path(b"f")
        await core.fs.setattr(inode.ino, SetAttr(size=10))  # truncate(2) returned
        if reader is not None:
            # Sync mode publishes it at the reader's release; until then the journal says
            # it may be published, from its next commit on.
            await core.sync_journal()
        core.crash()
    async with open_core(tmp_path, durability=durability, by_rename=by_rename) as again:
        await again.recover()
        assert again.warm_path(b"f").read_bytes() == DATA[:10], "the truncate was lost"


@core_test
async def test_a_rename_after_a_publish_by_copy_commits_what_the_log_still_says(
        tmp_path: Path) -> None:
    # The log (or the index) holds f closed; an open for writing published it by copy, and
    # only memory says it is home. Renamed away, and another file renamed to f: recovery must
    # not put the old staged bytes back under f.
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", DATA)
        fh = await core.open(b"f", os.O_WRONLY)
        assert core.warm_path(b"f").read_bytes() == DATA
        await core.fs.rename(ROOT, b"f", ROOT, b"g", 0)
        core.warm_path(b"c").write_bytes(b"another file")
        await core.fs.lookup(ROOT, b"c")
        await core.fs.rename(ROOT, b"c", ROOT, b"f", 0)
        core.crash()
    async with open_core(tmp_path, durability="writeback", by_rename=False) as again:
        await again.recover()
        assert again.warm_path(b"g").read_bytes() == DATA
        assert again.warm_path(b"f").read_bytes() == b"another file"


@core_test
async def test_a_rewrite_after_appends_takes_back_what_a_close_acknowledged(tmp_path: Path
                                                                           ) -> None:
    # Acknowledged, appended to (kept for recovery), then a write into the acknowledged
    # bytes: they are no longer what the close acknowledged, and nothing of it is published.
    async with open_core(tmp_path, durability="writeback") as core:
        fh = await acknowledged(core)
        await core.fs.write(fh, len(DATA), b"more")
        await core.sync_journal()  # the index holds the acknowledged prefix
        await core.fs.write(fh, 0, b"half")
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        await again.recover()
        assert again.warm_path(b"f").read_bytes() == b""


@core_test
async def test_an_appended_file_after_a_restart_of_the_system_is_set_aside(tmp_path: Path
                                                                          ) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        fh = await acknowledged(core)
        await core.fs.write(fh, len(DATA), b"more")
        await core.sync_journal()
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        report = await again.recover(rebooted=True)
        assert report.set_aside == 1 and report.published == 0
        assert again.warm_path(b"f").read_bytes() == b""


@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_an_fsync_after_appends_outlives_a_crash(tmp_path: Path, by_rename: bool
                                                      ) -> None:
    # Acknowledged, appended to (the index holds the prefix), then fsynced: published whole.
    # A publish by copy keeps the staging file, and recovery must not put the prefix back.
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as core:
        fh = await acknowledged(core)
        await core.fs.write(fh, len(DATA), b"more")
        await core.fs.fsync(fh)
        core.crash()
    async with open_core(tmp_path, durability="writeback", by_rename=by_rename) as again:
        await again.recover()
        assert again.warm_path(b"f").read_bytes() == DATA + b"more"


def test_an_acknowledged_prefix_of_a_file_streaming_to_the_bucket_outlives_a_crash_of_tierfs(
        ) -> None:
    # Kept for a file streaming too (its object may hold bytes appended after the prefix, up
    # to the end of a part already stored, as after an fsync: tests/core/
    # test_acked_prefix_streaming.py); after a restart of the system only what an fsync
    # flushed, as for any write-back data.
    from tierfs.write.entries import Entry, Upload
    from tierfs.write.recovery import publishable

    plain = Entry(path=b"f", size=10, acked=10)
    streaming = Entry(path=b"f", size=10, acked=10,
                      upload=Upload(key="f", since=0.0, first_part=5 << 20, upload_id="u"))
    assert publishable(plain, rebooted=False) == 10
    assert publishable(streaming, rebooted=False) == 10
    assert publishable(streaming, rebooted=True) is None
    streaming.synced = 20  # an fsync after the close: the later promise
    assert publishable(streaming, rebooted=False) == 20


@pytest.mark.parametrize("change,durability", [("write", "writeback"), ("truncate", "writeback"),
                                               ("write", "sync")])
@core_test
async def test_what_recovery_could_not_publish_is_published_before_a_change(
        tmp_path: Path, change: str, durability: str) -> None:
    """A file streaming to the bucket, fsynced, then tierfs crashed; recovery could not
    complete its upload, so write-back holds it. A new writer or truncate publishes it first,
    as after a close. It used to go straight in: a write into a part already sent (taken as
    gone from staging) dropped the upload, and the fsynced content was lost."""
    data = bytes(range(256)) * ((PART + 100_000) // 256)
    async with open_core(tmp_path, large_file_threshold="64KiB", durability=durability) as core:
        fh = await core.create(b"big", flags=os.O_RDWR)
        await core.write_all(fh, data)
        await core.fs.fsync(fh)
        core.crash()
    core.store.fail_always("complete_multipart")
    async with open_core(tmp_path, core.store, large_file_threshold="64KiB",
                         durability=durability) as again:
        assert (await again.recover()).failed == 1
        again.store.heal()
        if change == "write":
            fh = await again.open(b"big", os.O_RDWR)
            await again.fs.write(fh, 0, b"X")
            await again.close(fh)
            want = b"X" + data[1:]
        else:
            inode = await again.lookup_path(b"big")
            await again.fs.setattr(inode.ino, SetAttr(size=100))
            want = data[:100]
        await again.publish_all()
        assert await again.read_file(b"big") == want
