"""A part of a file streaming to the bucket whose upload failed (after the store's own
retries) stays staged, and the next ``fsync`` tries it again, as ``close`` does
(docs/semantics.md, "Large files")."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from .conftest import PART, core_test, open_core


def content(n: int, seed: int = 7) -> bytes:
    block = bytes((i * 11 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@pytest.mark.parametrize("durability", ["sync", "writeback"])
@core_test
async def test_the_next_fsync_tries_a_failed_part_again(tmp_path: Path, durability: str
                                                         ) -> None:
    data = content(PART + 1000)
    async with open_core(tmp_path, large_file_threshold="64KiB",
                         durability=durability) as core:
        core.store.fail_always("upload_part")
        fh = await core.create(b"f")
        try:
            await core.write_all(fh, data)
        except OSError as e:
            assert e.errno == errno.EIO  # (sync mode: a write may report the failed part)
        upload = (await core.lookup_path(b"f")).data.upload
        await core.until(lambda: not upload._running)
        with pytest.raises(OSError) as raised:
            await core.fs.fsync(fh)  # the bucket still fails
        assert raised.value.errno == errno.EIO
        core.store.heal()
        await core.fs.fsync(fh)  # tried again: stored now
        (entry,) = core.stored_journal().values()
        assert 1 in entry.upload.parts and entry.synced == len(data)
        await core.close(fh)
        await core.publish_all()
        assert core.objects()[core.cold(b"f").key] == data


@core_test
async def test_an_fsync_cancelled_while_it_tries_parts_again_keeps_the_rest_failed(
        tmp_path: Path) -> None:
    """An fsync cancelled (an interrupted call, an unmount) while it sends failed parts again:
    the parts it had not reached stay failed, and the next fsync sends them."""
    data = content(2 * PART + 1000)
    async with open_core(tmp_path, large_file_threshold="64KiB",
                         durability="writeback") as core:
        core.store.fail_always("upload_part")
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        upload = (await core.lookup_path(b"f")).data.upload
        await core.until(lambda: not upload._running and len(upload.failed) == 2)
        core.store.heal()
        hold = core.store.hold_after("upload_part", 1)

        async def reply_later() -> None:
            await trio.sleep(0.6)
            hold.release()

        core.nursery.start_soon(reply_later)
        with trio.move_on_after(0.3):
            await core.fs.fsync(fh)  # cancelled while its first part's reply is held
        await core.until(lambda: not upload._running)
        await core.fs.fsync(fh)
        (entry,) = core.stored_journal().values()
        assert sorted(entry.upload.parts) == [1, 2]
        await core.close(fh)
        await core.publish_all()
        assert core.objects()[core.cold(b"f").key] == data


@core_test
async def test_an_fsync_records_the_size_it_flushed_not_a_later_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that comes while an fsync's fdatasync runs may not be on the disk: the journal's
    fsynced size (what recovery after a power loss publishes) is the size before it."""
    import time

    first, more = content(PART + 1000), content(PART, 9)
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        time.sleep(0.3)
        real(fd)

    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        fh = await core.create(b"f")
        await core.write_all(fh, first)
        monkeypatch.setattr(os, "fdatasync", slow_fdatasync)

        written = trio.Event()

        async def write_meanwhile() -> None:
            await trio.sleep(0.1)
            await core.write_all(fh, more, offset=len(first))
            written.set()

        core.nursery.start_soon(write_meanwhile)
        await core.fs.fsync(fh)
        (entry,) = core.stored_journal().values()
        assert entry.synced == len(first)
        await written.wait()
        monkeypatch.undo()
        await core.close(fh)
