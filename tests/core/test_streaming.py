"""Files past ``large_file_threshold`` stream to the bucket while they are written: parts cut
and uploaded (and punched out of staging when the hot tier is short of room), the stub
written at close, the object read back, a truncate back under the threshold, and what close
waits for in sync and write-back modes. Rewrites of uploaded parts: test_streaming_rewrites."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from .conftest import MIB, PART, ROOT, Core, SetAttr, core_test, open_core

SMALL = "64KiB"  # the threshold: anything past it streams


def content(n: int, seed: int = 1) -> bytes:
    block = bytes((i * 31 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


def entry_of(core: Core) -> Any:
    (entry,) = core.journal().values()
    return entry


@contextmanager
def short_hot(root: Path, size: str) -> Iterator[None]:
    """A hot tier short of room: a tmpfs of ``size`` where ``open_core`` puts the hot tier,
    whose free space is under a streaming upload's reserve (its window of parts), so that
    uploaded parts leave staging at once."""
    if os.geteuid() != 0:
        pytest.skip("a size-limited hot tier is a tmpfs, and mounting one needs root")
    hot = root / "hot"
    hot.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(hot)],
                   check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(hot)], check=False)


@asynccontextmanager
async def open_short(root: Path, size: str, **overrides: Any) -> AsyncIterator[Core]:
    """``open_core`` over a hot tier of ``size`` (``short_hot``)."""
    with short_hot(root, size):
        async with open_core(root, **overrides) as core:
            yield core


@core_test
async def test_growing_file_streams_parts_and_gets_a_stub(tmp_path: Path) -> None:
    data = content(2 * PART + 2 * MIB)
    # A hot tier under the reserve of 4 parts: each part is punched once uploaded.
    async with open_short(tmp_path, "16m", large_file_threshold=SMALL) as core:
        fh = await core.create(b"big", mode=0o640)
        await core.write_all(fh, data)
        entry = entry_of(core)
        # each part leaves staging (punched) just after the journal records it
        await core.until(lambda: len(entry.upload.parts) == 2
                         and core.staged_bytes() <= len(data) - 2 * PART + MIB)
        assert entry.upload.key == "big" and entry.upload.upload_id is not None
        assert [k for k, _ in core.uploads()] == ["big"]
        assert core.objects() == {}  # nothing readable in the bucket before close
        assert not core.warm_path(b"big").is_symlink()
        await core.close(fh)
        stub = core.stub(b"big")
        assert stub is not None and stub.key == "big" and stub.size == len(data)
        assert stub.mode == 0o640
        assert core.objects() == {"big": data}
        assert core.uploads() == [] and core.staged() == [] and core.journal() == {}
        assert core.store.calls["upload_part"] == 3  # two whole parts and the tail


@core_test
async def test_object_reads_back_byte_for_byte(tmp_path: Path) -> None:
    data = content(PART + 300_000, seed=9)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"big", data)
        await core.evict(b"big")  # read from the object, not the blocks kept at its write
        f = await core.lookup_path(b"big")
        assert (await core.fs.getattr(f.ino)).size == len(data)
        fh = await core.open(b"big")
        assert await core.read_all(fh, chunk=100_000) == data
        assert await core.fs.read(fh, len(data) - 10, 100) == data[-10:]
        assert await core.fs.read(fh, len(data), 100) == b""
        await core.fs.release(fh)
        assert core.counter("fetches_cold") > 0


@core_test
async def test_hot_tier_holds_a_bounded_window(tmp_path: Path) -> None:
    data = content(6 * PART)
    window = 3
    peak = 0
    # 30 MiB through a 24 MiB hot tier, whose free space falls under the reserve (3 parts).
    async with open_short(tmp_path, "24m", large_file_threshold=SMALL,
                          upload_window=window) as core:
        fh = await core.create(b"big")
        for offset in range(0, len(data), MIB):
            await core.fs.write(fh, offset, data[offset:offset + MIB])
            peak = max(peak, core.staged_bytes())
        await core.close(fh)
        assert core.objects()["big"] == data
    assert peak <= window * PART + MIB


@core_test
async def test_small_file_past_the_threshold_is_one_short_part(tmp_path: Path) -> None:
    data = content(200_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"x", data)
        assert core.cold(b"x").size == len(data)
        assert core.objects() == {"x": data}
        assert core.store.calls["upload_part"] == 1
        assert core.store.calls["complete_multipart"] == 1


@core_test
async def test_range_freed_for_room_is_unreadable_until_close(tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL) as core:
        fh = await core.create(b"big", flags=os.O_RDWR)
        await core.write_all(fh, data)
        upload = (await core.lookup_path(b"big")).data.upload
        await core.until(lambda: 1 in upload.gone)
        with pytest.raises(OSError) as e:
            await core.fs.read(fh, 0, 100)
        assert e.value.errno == errno.EIO
        assert await core.fs.read(fh, PART, 10) == data[PART:PART + 10]  # still staged
        await core.close(fh)
        assert await core.read_file(b"big") == data


@core_test
async def test_truncate_under_the_threshold_before_any_part_left(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, content(MIB))
        assert core.store.calls["create_multipart"] == 1
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=1000))
        await core.close(fh)
        p = core.warm_path(b"f")
        assert not p.is_symlink() and p.read_bytes() == content(MIB)[:1000]
        assert core.objects() == {} and core.uploads() == []


@core_test
async def test_truncate_of_a_cold_file_brings_it_back_warm(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data)
        assert core.stub(b"f") is not None
        f = await core.lookup_path(b"f")
        attrs = await core.fs.setattr(f.ino, SetAttr(size=5000))
        assert attrs.size == 5000
        p = core.warm_path(b"f")
        assert not p.is_symlink() and p.read_bytes() == data[:5000]
        assert core.objects() == {}  # the old object went with its last reference
        assert await core.read_file(b"f") == data[:5000]


@core_test
async def test_sync_close_returns_once_the_object_is_complete(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="sync") as core:
        core.store.delay("complete_multipart", 0.3)
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        await core.close(fh)
        assert core.objects() == {"f": data} and core.stub(b"f") is not None
        assert core.writeback_pending() == 0


@core_test
async def test_writeback_close_returns_before_the_upload_completes(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.delay("complete_multipart", 0.5)
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        await core.close(fh)
        assert core.stub(b"f") is None and "f" not in core.objects()
        (entry,) = core.stored_journal().values()  # made durable before close returned
        assert entry.closed and entry.path == b"f" and entry.size == len(data)
        assert core.writeback_pending() == 1
        await core.until(lambda: core.stub(b"f") is not None)
        await core.until(lambda: core.writeback_pending() == 0 and core.staged() == [])
        assert core.objects() == {"f": data}
        assert await core.read_file(b"f") == data


@core_test
async def test_writeback_small_file_is_published_in_the_background(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.write_file(b"f", b"later")
        await core.until(lambda: core.writeback_pending() == 0)
        assert core.warm_path(b"f").read_bytes() == b"later"
        assert core.journal() == {} and core.staged() == []


@core_test
async def test_writeback_retries_until_the_bucket_takes_it(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        assert core.stub(b"f") is None and core.writeback_pending() == 1
        core.store.heal()
        await core.until(lambda: core.stub(b"f") is not None)
        assert core.objects() == {"f": data}


@core_test
async def test_writeback_part_failure_does_not_stop_the_writer(tmp_path: Path) -> None:
    data = content(2 * PART + 1000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_nth("upload_part", 1)
        await core.write_file(b"f", data)  # no error: the part is tried again
        await core.until(lambda: core.stub(b"f") is not None)
        assert core.objects() == {"f": data}


@core_test
async def test_sync_failed_completion_is_reported_and_retried_at_release(tmp_path: Path
                                                                        ) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.fail_nth("complete_multipart", 1)
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        with pytest.raises(OSError) as e:
            await core.fs.flush(fh)
        assert e.value.errno == errno.EIO
        assert core.stub(b"f") is None and len(core.staged()) == 1
        await core.fs.release(fh)  # the last release tries again
        assert core.objects() == {"f": data} and core.cold(b"f").size == len(data)


@core_test
async def test_lost_completion_reply_is_recognised_by_its_token(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.lose_reply("complete_multipart")
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        with pytest.raises(OSError):
            await core.fs.flush(fh)
        await core.fs.release(fh)
        assert core.cold(b"f").size == len(data)
        assert await core.read_file(b"f") == data


@core_test
async def test_wrong_size_from_head_is_never_made_a_stub(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.lose_reply("complete_multipart")
        core.store.wrong_head_size(100)
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        with pytest.raises(OSError):
            await core.fs.flush(fh)
        await core.fs.release(fh)
        stub = core.stub(b"f")
        assert stub is None or stub.size == len(data)
        assert await core.read_file(b"f") in (b"", data)  # what it had, or all of the new


@core_test
async def test_a_completed_object_of_the_wrong_size_fails_the_close_and_keeps_the_data(
        tmp_path: Path) -> None:
    """The store reports 0 bytes for the object just completed (a proxy answering HEAD with
    Content-Length 0): the close gets EIO, the file is not made small, the object stays, and
    the staged data publishes once the store answers truly."""
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.wrong_head_size(-len(data))
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        with pytest.raises(OSError) as failed:
            await core.fs.flush(fh)
        assert failed.value.errno == errno.EIO
        assert core.objects() == {"f": data}  # not deleted as a "small" file's
        assert core.stub(b"f") is None and core.warm_path(b"f").read_bytes() == b""
        [entry] = core.journal().values()
        assert entry.closed  # kept for another try
        core.store.heal()
        await core.fs.release(fh)  # the last release tries again
        assert core.stub(b"f").size == len(data)
        assert await core.read_file(b"f") == data


@core_test
async def test_upload_dropped_before_any_part_left_is_uploaded_again(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.drop_upload_before("upload_part", 1)
        await core.write_file(b"f", data)
        assert core.objects() == {"f": data}
        assert core.store.calls["create_multipart"] == 2
        assert core.counter("uploads_lost") == 0


@core_test
async def test_upload_dropped_after_parts_left_keeps_the_old_content(tmp_path: Path) -> None:
    data = content(2 * PART + 1000)
    # A window of two: one part uploads at a time, so part 1 is done before part 2 starts;
    # the hot tier is short of room, so part 1 leaves staging once uploaded.
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL,
                          upload_window=2) as core:
        await core.write_file(b"f", b"previous")
        core.store.drop_upload_before("upload_part", 2)
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        with pytest.raises(OSError) as e:
            await core.write_all(fh, data)
            await core.fs.flush(fh)
        assert e.value.errno == errno.EIO
        await core.fs.release(fh)
        assert core.counter("uploads_lost") == 1
        assert core.warm_path(b"f").read_bytes() == b"previous"
        assert len(core.lost_found()) == 2  # the staged rest and its note
        assert core.objects() == {} and core.staged() == []


@core_test
async def test_fsync_of_a_streaming_file_records_the_synced_size(tmp_path: Path) -> None:
    data = content(PART + 4096)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        await core.fs.fsync(fh)
        (entry,) = core.stored_journal().values()
        assert entry.synced == len(data) and 1 in entry.upload.parts
        assert not entry.closed
        await core.close(fh)
        assert core.objects() == {"f": data}


@core_test
async def test_unlinked_while_streaming_aborts_the_upload(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, content(PART + 1000))
        await core.until(lambda: bool(core.store.calls["upload_part"]))
        await core.fs.unlink(ROOT, b"f")
        await core.close(fh)
        assert core.uploads() == [] and core.objects() == {}
        assert core.staged() == [] and core.warm_names() == []


@core_test
async def test_sync_upload_that_cannot_start_fails_the_write_then_recovers(tmp_path: Path
                                                                          ) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.fail_always("create_multipart")
        fh = await core.create(b"f")
        with pytest.raises(OSError) as e:
            await core.write_all(fh, data)
        assert e.value.errno == errno.EIO
        assert core.uploads() == [] and core.stub(b"f") is None
        core.store.heal()
        await core.write_all(fh, data)  # the writer tries again
        await core.close(fh)
        assert core.objects() == {"f": data}


@core_test
async def test_writeback_upload_that_cannot_start_is_tried_again(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("create_multipart")
        await core.write_file(b"f", data)  # write-back: the writer goes on
        await core.until(lambda: core.counter("upload_errors") >= 1)
        assert core.stub(b"f") is None and not core.warm_path(b"f").read_bytes()
        core.store.heal()
        await core.until(lambda: core.stub(b"f") is not None)
        assert core.objects() == {"f": data}


@core_test
async def test_writeback_file_renamed_before_it_is_home(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"a", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        d = await core.mkdirs(b"d")
        await core.fs.rename(ROOT, b"a", d, b"b", 0)
        core.store.heal()
        await core.publish_all()
        assert core.cold(b"d/b").size == len(data) and not core.warm_path(b"a").exists()
        assert await core.read_file(b"d/b") == data


@core_test
async def test_read_of_a_writeback_file_waits_for_its_object(tmp_path: Path) -> None:
    data = content(PART + 1000)
    # A hot tier short of room: the first part leaves staging once uploaded.
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL,
                          durability="writeback") as core:
        core.store.delay("complete_multipart", 0.3)
        await core.write_file(b"f", data)
        upload = (await core.lookup_path(b"f")).data.upload
        await core.until(lambda: 1 in upload.gone)
        assert core.stub(b"f") is None
        assert await core.read_file(b"f") == data  # waits for the object
        assert core.stub(b"f") is not None


@core_test
async def test_reopened_writeback_file_publishes_the_first_version_first(tmp_path: Path
                                                                        ) -> None:
    one, two = content(300_000, seed=1), content(200_000, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.delay("complete_multipart", 0.2)
        await core.write_file(b"f", one)
        await core.write_file(b"f", two)
        await core.publish_all()
        await core.until(lambda: core.writeback_pending() == 0)
        assert core.objects() == {"f": two} and core.cold(b"f").size == len(two)
        assert core.store.calls["complete_multipart"] == 2


@core_test
async def test_mtime_set_while_streaming_is_in_the_stub(tmp_path: Path) -> None:
    when = 1_650_000_000_000_000_000
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, content(200_000))
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(mtime_ns=when))
        await core.close(fh)
        assert core.cold(b"f").mtime_ns == when
        assert (await core.fs.getattr(f.ino)).mtime_ns == when


@core_test
async def test_writeback_file_unlinked_before_it_is_home(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", content(200_000))
        await core.until(lambda: core.counter("upload_errors") >= 1)
        await core.fs.unlink(ROOT, b"f")
        core.store.heal()
        # (write-back notices the unlink after its pause, then aborts and removes staging)
        await core.until(lambda: core.uploads() == [] and core.staged() == [])
        assert core.objects() == {} and core.warm_names() == []
        assert core.writeback_pending() == 0


@core_test
async def test_two_files_streaming_to_one_key_get_two_objects(tmp_path: Path) -> None:
    one, two = content(200_000, seed=1), content(300_000, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        first = await core.create(b"a")
        await core.write_all(first, one)
        await core.fs.rename(ROOT, b"a", ROOT, b"b", 0)
        second = await core.create(b"a")
        await core.write_all(second, two)
        await core.close(first)
        await core.close(second)
        keys = {core.cold(b"a").key, core.cold(b"b").key}
        assert len(keys) == 2 and set(core.objects()) == keys
        assert await core.read_file(b"b") == one
        assert await core.read_file(b"a") == two


async def fail_a_writeback(core: Core, data: bytes) -> int:
    """Write ``data`` to ``f`` in write-back mode with every completion failing, until the
    background publish has failed once; returns the file's inode number."""
    core.store.fail_always("complete_multipart")
    await core.write_file(b"f", data)
    await core.until(lambda: core.counter("upload_errors") >= 1)
    return int((await core.lookup_path(b"f")).ino)


@core_test
async def test_writeback_failure_fails_the_next_open_for_writing(tmp_path: Path) -> None:
    one = content(300_000, seed=1)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        ino = await fail_a_writeback(core, one)
        with pytest.raises(OSError) as e:
            await core.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
        assert e.value.errno == errno.EIO
        assert core.stub(b"f") is None
        core.store.heal()
        fh, _, _ = await core.fs.open(ino, os.O_WRONLY | os.O_TRUNC)
        assert core.objects() == {"f": one}  # the first version went home first
        await core.fs.release(fh)


@core_test
async def test_error_already_resolved_is_not_reported_to_a_later_writer(tmp_path: Path
                                                                        ) -> None:
    one, two = content(300_000, seed=1), content(100_000, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        ino = await fail_a_writeback(core, one)
        core.store.heal()
        fh, _, _ = await core.fs.open(ino, os.O_WRONLY | os.O_TRUNC)  # publishes version one
        assert core.objects() == {"f": one}
        await core.write_all(fh, two)
        await core.close(fh)  # this writer's data is fine: no error to report
        await core.publish_all()
        assert await core.read_file(b"f") == two and core.objects() == {"f": two}


@core_test
async def test_writeback_fsync_of_a_closed_streamed_file_waits_for_its_object(tmp_path: Path
                                                                               ) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.delay("complete_multipart", 0.3)
        await core.write_file(b"f", data)
        reader = await core.open(b"f")
        await core.fs.fsync(reader)  # "fsync returns when the data is on its home tier"
        assert core.objects() == {"f": data} and core.stub(b"f") is not None
        await core.fs.release(reader)


@core_test
async def test_truncate_below_the_cut_while_streaming(tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        await core.until(lambda: 1 in entry_of(core).upload.parts)
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=PART - 1))  # into the uploaded part
        assert entry_of(core).upload.parts == {}  # part 1 is not what staging holds now
        await core.close(fh)
        assert core.objects() == {"f": data[:PART - 1]}
        assert core.cold(b"f").size == PART - 1


@core_test
async def test_truncate_to_the_cut_while_streaming(tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        await core.until(lambda: 1 in entry_of(core).upload.parts)
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=PART))
        await core.close(fh)
        assert core.objects() == {"f": data[:PART]} and core.cold(b"f").size == PART
        assert core.store.calls["upload_part"] == 1  # part 1 was kept: nothing went again


@core_test
async def test_truncate_up_while_streaming_adds_zeros(tmp_path: Path) -> None:
    data = content(PART + 1000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=2 * PART + 10))
        await core.fs.write(fh, 2 * PART, b"end")
        await core.close(fh)
        expect = data + bytes(PART - 1000) + b"end" + bytes(7)
        assert core.objects() == {"f": expect}
        assert await core.read_file(b"f") == expect


@core_test
async def test_second_writer_keeps_the_upload_open(tmp_path: Path) -> None:
    data = content(PART + 2 * MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        one = await core.create(b"f")
        two = await core.open(b"f", os.O_WRONLY)
        await core.write_all(one, data[:PART + MIB])
        await core.close(one)  # another writer goes on: no object yet
        assert core.objects() == {} and len(core.uploads()) == 1
        await core.write_all(two, data[PART + MIB:], offset=PART + MIB)
        await core.close(two)
        assert core.objects() == {"f": data} and core.uploads() == []


@core_test
async def test_object_deleted_behind_tierfs_is_an_error(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(200_000))
        await core.evict(b"f")  # (blocks cached, as those kept at its write, are served)
        core.store.inner.delete("f")
        fh = await core.open(b"f")
        with pytest.raises(OSError) as e:
            await core.fs.read(fh, 0, 10)
        assert e.value.errno == errno.EIO
        await core.fs.release(fh)
