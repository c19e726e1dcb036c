"""Recovery from a journal left by a crash: a core writes and stops without publishing (the
index closed without its last batch, nothing released), and a new core on the same hot tier
runs recovery. Closed data is published, unclosed data discarded, uploads resumed with the
parts the journal lists as done."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.core.attrs import SetAttr

from .conftest import PART, ROOT, core_test, open_core

SMALL = "64KiB"


def content(n: int, seed: int = 3) -> bytes:
    block = bytes((i * 17 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


def only(entries: dict[str, Any]) -> Any:
    (entry,) = entries.values()
    return entry


@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_closed_writeback_file_is_published(tmp_path: Path, by_rename: bool) -> None:
    data = content(100_000)
    async with open_core(tmp_path, durability="writeback") as core:
        await core.write_file(b"f", data)
        # close returned: staged and journaled; the crash comes before write-back ran
        core.crash()
    async with open_core(tmp_path, by_rename=by_rename, durability="writeback") as again:
        entry = only(again.stored_journal())
        assert entry.closed and entry.path == b"f"
        assert again.warm_path(b"f").read_bytes() == b""  # as create left it
        report = await again.recover()
        assert report.published == 1 and report.discarded == 0
        assert again.warm_path(b"f").read_bytes() == data
        assert again.staged() == [] and again.warm_temps() == []
        assert again.stored_journal() == {}
        assert await again.read_file(b"f") == data


@core_test
async def test_unclosed_file_is_discarded(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", b"published before")
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"half-written")
        await core.sync_journal()  # the periodic commit ran; close never came
        core.crash()
    async with open_core(tmp_path) as again:
        assert not only(again.stored_journal()).closed
        report = await again.recover()
        assert report.discarded == 1 and report.published == 0
        assert again.warm_path(b"f").read_bytes() == b"published before"
        assert again.staged() == [] and again.stored_journal() == {}


@core_test
async def test_staging_without_an_entry_is_removed(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, b"never journaled")
        assert len(core.staged()) == 1
        core.crash()  # before any commit: the entry is lost, the staging file is not
    async with open_core(tmp_path) as again:
        assert again.stored_journal() == {} and len(again.staged()) == 1
        report = await again.recover()
        assert report.orphans == 1 and again.staged() == []
        assert again.warm_path(b"f").read_bytes() == b""


@core_test
async def test_closed_file_renamed_before_the_crash_goes_to_its_new_name(tmp_path: Path
                                                                         ) -> None:
    data = content(50_000)
    async with open_core(tmp_path, durability="writeback") as core:
        d = await core.mkdirs(b"d")
        fh = await core.create(b"a")
        await core.write_all(fh, data)
        await core.fs.rename(ROOT, b"a", d, b"b", 0)
        await core.close(fh)
        core.crash()
    async with open_core(tmp_path) as again:
        assert only(again.stored_journal()).path == b"d/b"
        report = await again.recover()
        assert report.published == 1
        assert again.warm_path(b"d/b").read_bytes() == data
        assert not again.warm_path(b"a").exists()


@core_test
async def test_closed_upload_is_resumed_with_the_parts_done(tmp_path: Path) -> None:
    data = content(2 * PART + 300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"big", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        store = core.store
        core.crash()
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        entry = only(again.stored_journal())
        assert entry.closed and sorted(entry.upload.parts) == [1, 2, 3]
        before = store.calls["upload_part"]
        report = await again.recover()
        assert report.uploaded == 1
        assert store.calls["upload_part"] == before  # every part was in the bucket already
        assert again.objects() == {"big": data}
        assert again.cold(b"big").size == len(data)
        assert again.uploads() == [] and again.staged() == []
        assert await again.read_file(b"big") == data


@core_test
async def test_recovery_sends_only_the_parts_not_done(tmp_path: Path) -> None:
    data = content(2 * PART + 300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback",
                         upload_window=2) as core:
        fh = await core.create(b"big")
        await core.write_all(fh, data[:PART])
        await core.until(lambda: 1 in only(core.journal()).upload.parts)
        core.store.fail_always("upload_part")  # parts 2 and 3 never make it
        await core.write_all(fh, data[PART:], offset=PART)
        await core.close(fh)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        store = core.store
        core.crash()
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert sorted(only(again.stored_journal()).upload.parts) == [1]
        before = [n for m, _, n in store.log if m == "upload_part"]
        report = await again.recover()
        sent = [n for m, _, n in store.log if m == "upload_part"][len(before):]
        assert report.uploaded == 1 and sorted(sent) == [2, 3]
        assert again.objects() == {"big": data}


@core_test
async def test_fsynced_upload_is_completed_to_the_synced_size(tmp_path: Path) -> None:
    data = content(PART + 100_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"big")
        await core.write_all(fh, data)
        await core.fs.fsync(fh)
        await core.write_all(fh, b"not synced", offset=len(data))
        core.crash()
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.uploaded == 1
        assert again.objects() == {"big": data}
        assert again.cold(b"big").size == len(data)


@core_test
async def test_unclosed_upload_is_aborted(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"big")
        await core.write_all(fh, content(PART + 1000))
        await core.until(lambda: 1 in only(core.journal()).upload.parts)
        assert len(core.uploads()) == 1
        core.crash()
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.aborted == 1 and report.discarded == 1
        assert again.uploads() == [] and again.objects() == {}
        assert again.stub(b"big") is None and again.staged() == []


@core_test
async def test_upload_dropped_by_the_bucket_after_parts_left_is_set_aside(tmp_path: Path
                                                                          ) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"big", content(PART + 1000))
        await core.until(lambda: core.counter("upload_errors") >= 1)
        core.crash()
        store = core.store
    store.heal()
    assert store.drop_uploads() == 1
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.lost == 1
        assert len(again.lost_found()) == 2 and again.staged() == []
        assert again.stub(b"big") is None and again.objects() == {}
        assert again.stored_journal() == {}


@core_test
async def test_upload_dropped_before_any_part_left_is_started_again(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("upload_part")
        await core.write_file(b"f", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        core.crash()
        store = core.store
    store.heal()
    assert store.drop_uploads() == 1
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert only(again.stored_journal()).upload.parts == {}
        report = await again.recover()
        assert report.uploaded == 1 and report.lost == 0
        assert again.objects() == {"f": data} and again.cold(b"f").size == len(data)


@core_test
async def test_upload_completed_before_the_crash_is_found_by_its_token(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.lose_reply("complete_multipart")
        await core.write_file(b"f", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        # (the crash comes before write-back tries again, a second later)
        assert core.objects() == {"f": data} and core.stub(b"f") is None
        core.crash()
        store = core.store
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.uploaded == 1
        assert again.cold(b"f").size == len(data) and again.objects() == {"f": data}


@core_test
async def test_completed_object_with_a_wrong_size_is_not_made_a_stub(tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.lose_reply("complete_multipart")
        await core.write_file(b"f", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        core.crash()
        store = core.store
    store.heal()
    store.wrong_head_size(1)
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        await again.recover()
        stub = again.stub(b"f")
        assert stub is None or stub.size == len(data)
        assert await again.read_file(b"f") in (b"", data)  # what it had, or all of the new


@core_test
async def test_unlinked_before_the_crash_is_not_brought_back(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", content(200_000))
        await core.until(lambda: core.counter("upload_errors") >= 1)
        await core.fs.unlink(ROOT, b"f")
        core.crash()
        store = core.store
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert only(again.stored_journal()).path == b""
        report = await again.recover()
        assert report.published == report.uploaded == 0
        assert again.warm_names() == [] and again.objects() == {}
        assert again.uploads() == [] and again.staged() == []


@core_test
async def test_after_a_reboot_unflushed_closed_data_is_set_aside(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.write_file(b"f", b"old")
        await core.publish_all()
        await core.write_file(b"f", b"new, never flushed to disk")
        core.crash()
    async with open_core(tmp_path) as again:
        report = await again.recover(rebooted=True)
        assert report.set_aside == 1 and report.published == 0
        assert again.warm_path(b"f").read_bytes() == b"old"
        (sid,) = [n for n in again.lost_found() if not n.endswith(".txt")]
        assert again.lost_path(sid).read_bytes() == b"new, never flushed to disk"


@core_test
async def test_rewrite_of_a_cold_file_deletes_the_old_object_at_recovery(tmp_path: Path
                                                                         ) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        await core.write_file(b"f", content(200_000))
        await core.publish_all()
        await core.sync_journal()  # (its entry gone from the index too: a close commits none)
        assert "f" in core.objects()
        await core.write_file(b"f", b"small now")  # under the threshold: back to warm
        core.crash()
    async with open_core(tmp_path, large_file_threshold=SMALL) as again:
        assert only(again.stored_journal()).replaces == "f"
        report = await again.recover()
        assert report.published == 1
        assert again.warm_path(b"f").read_bytes() == b"small now"
        assert again.objects() == {}


@core_test
async def test_second_recovery_has_nothing_to_do(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.write_file(b"f", b"data")
        core.crash()
    async with open_core(tmp_path) as again:
        assert (await again.recover()).published == 1
    async with open_core(tmp_path) as third:
        report = await third.recover()
        assert (report.published, report.discarded, report.orphans) == (0, 0, 0)
        assert third.warm_path(b"f").read_bytes() == b"data"


@core_test
async def test_recovered_rewrite_of_a_cold_file_keeps_its_mode(tmp_path: Path) -> None:
    data = content(200_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        await core.write_file(b"f", content(100_000), mode=0o600)
        await core.publish_all()
        assert core.cold(b"f").mode == 0o600
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", data)  # O_TRUNC: a new object for the same file
        await core.until(lambda: core.counter("upload_errors") >= 1)
        core.crash()
        store = core.store
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert (await again.recover()).uploaded == 1
        stub = again.cold(b"f")
        assert stub.size == len(data) and again.objects()["f"] == data
        assert stub.mode == 0o600


@core_test
async def test_closed_file_replaced_by_a_rename_before_the_crash(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", content(200_000))
        await core.until(lambda: core.counter("upload_errors") >= 1)
        core.store.heal()
        core.store.fail_always("complete_multipart")
        await core.write_file(b"g", b"the file that took its name")
        await core.fs.rename(ROOT, b"g", ROOT, b"f", 0)
        core.crash()
        store = core.store
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.warm_names() == ["f"]
        assert await again.read_file(b"f") == b"the file that took its name"
        assert again.objects() == {} and again.uploads() == []


@core_test
async def test_hard_linked_file_is_recovered_in_place(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.write_file(b"a", b"old")
        await core.publish_all()
        a = await core.lookup_path(b"a")
        await core.fs.link(a.ino, ROOT, b"b")
        ino = core.warm_path(b"a").stat().st_ino
        await core.write_file(b"a", b"new for both names")
        core.crash()
    async with open_core(tmp_path) as again:
        assert (await again.recover()).published == 1
        for name in (b"a", b"b"):
            st = again.warm_path(name).stat()
            assert st.st_ino == ino and st.st_nlink == 2
            assert again.warm_path(name).read_bytes() == b"new for both names"


@core_test
async def test_closed_upload_follows_a_folder_renamed_before_the_crash(tmp_path: Path) -> None:
    data = content(200_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.fail_always("complete_multipart")
        await core.mkdirs(b"d")
        await core.write_file(b"d/f", data)
        await core.until(lambda: core.counter("upload_errors") >= 1)
        await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)
        core.crash()
        store = core.store
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        assert only(again.stored_journal()).path == b"e/f"
        assert (await again.recover()).uploaded == 1
        assert again.cold(b"e/f").size == len(data)
        assert await again.read_file(b"e/f") == data


@core_test
async def test_unclosed_streaming_writeback_file_is_discarded(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        await core.write_file(b"f", b"before")
        await core.publish_all()
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, content(PART + 10))
        await core.until(lambda: 1 in only(core.journal()).upload.parts)
        core.crash()
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.discarded == 1 and report.aborted == 1
        assert again.warm_path(b"f").read_bytes() == b"before"
        assert again.uploads() == [] and again.objects() == {}


@core_test
async def test_crash_between_completion_and_stub_keeps_the_file_readable(tmp_path: Path
                                                                         ) -> None:
    """A cold file rewritten whole (sync mode) to an exact number of parts: every part is in
    the bucket before close, so close only completes the upload. A crash after the bucket
    completed it (the old object at that key is replaced) and before the stub was written
    must leave a readable file: the old content or the new, never neither."""
    old, new = content(200_000, seed=1), content(PART, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", old)
        assert core.cold(b"f").key == "f"
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, new)
        await core.until(lambda: 1 in only(core.journal()).upload.parts)
        core.store.delay("complete_multipart", 0.3)
        completions = core.store.calls["complete_multipart"] + 1
        closing = trio.CancelScope()

        async def close() -> None:
            with closing:
                await core.fs.flush(fh)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close)
            # the crash comes while the bucket completes the upload
            await core.until(lambda: core.store.calls["complete_multipart"] == completions)
            closing.cancel()
        assert core.objects() == {"f": new}
        core.crash()
        store = core.store
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert await again.read_file(b"f") in (old, new)


@core_test
async def test_after_a_reboot_the_fsynced_part_of_an_upload_is_completed(tmp_path: Path
                                                                         ) -> None:
    data = content(PART + 100_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"big")
        await core.write_all(fh, data)
        await core.fs.fsync(fh)
        await core.write_all(fh, b"lost with the page cache", offset=len(data))
        core.crash()
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover(rebooted=True)
        assert report.uploaded == 1 and report.set_aside == 0
        assert again.objects() == {"big": data}


@core_test
async def test_closed_entry_whose_staging_is_gone_is_dropped(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        await core.write_file(b"f", b"before")
        await core.publish_all()
        await core.sync_journal()  # (its entry gone from the index too: a close commits none)
        await core.write_file(b"f", b"after")
        (sid,) = core.staged()
        core.crash()
    core.staging_path(sid).unlink()  # the hot disk lost it
    async with open_core(tmp_path) as again:
        report = await again.recover()
        assert report.discarded == 1 and report.published == 0
        assert again.warm_path(b"f").read_bytes() == b"before"
        assert again.stored_journal() == {}


@core_test
async def test_after_a_reboot_writes_past_a_cut_below_the_fsync_are_not_taken_as_flushed(
        tmp_path: Path) -> None:
    """A file streaming to the bucket, fsynced, cut below the fsynced size, written again up
    to less than that, closed (write-back), and the node loses power: the blocks written after
    the cut were never flushed and may come back as zeros. Recovery after the reboot used to
    take the whole file for flushed (the fsynced size was past its end) and published the
    zeros as its content; it publishes what is known to be on disk, the part before the cut."""
    first = content(PART + 100_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        fh = await core.create(b"big", flags=os.O_RDWR)
        await core.write_all(fh, first)
        await core.fs.fsync(fh)
        f = await core.lookup_path(b"big")
        await core.fs.setattr(f.ino, SetAttr(size=1000))
        await core.write_all(fh, b"n" * 5000, offset=1000)
        await core.close(fh)  # staged and journaled; the crash comes before write-back ran
        (sid,) = core.staged()
        store = core.store
        core.crash()
    with open(core.staging_path(sid), "r+b") as staged:  # the power loss
        staged.seek(1000)
        staged.write(bytes(5000))
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        await again.recover(rebooted=True)
        assert await again.read_file(b"big") == first[:1000]


@core_test
async def test_a_cut_below_the_fsynced_size_is_in_the_stored_journal_when_it_returns(
        tmp_path: Path) -> None:
    """The lowered flushed size is committed (durably) before the cut, not left for the next
    batch: a completion that trusts it, or a power loss a moment later, must find it there."""
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"big", flags=os.O_RDWR)
        await core.write_all(fh, content(PART + 100_000))
        await core.fs.fsync(fh)
        assert only(core.stored_journal()).synced == PART + 100_000
        f = await core.lookup_path(b"big")
        await core.fs.setattr(f.ino, SetAttr(size=1000))
        assert only(core.stored_journal()).synced == 1000
        await core.close(fh)


@core_test
async def test_of_two_closed_entries_at_one_path_the_newer_is_published_last(
        tmp_path: Path) -> None:
    # Staged data an earlier publish failed to send home (kept for a later try) and newer
    # data closed at the same path before a crash: whatever order their staging ids sort in,
    # the file ends with the newer content.
    from tierfs.write.entries import Entry
    new = content(50_000, seed=5)
    async with open_core(tmp_path, durability="writeback") as core:
        await core.write_file(b"f", new)
        core.crash()
    async with open_core(tmp_path, durability="writeback") as again:
        newer = only(again.stored_journal())
        assert newer.closed and newer.acked_ns > 0
        old = content(30_000, seed=9)
        sid = "f" * 32  # sorts after any other id
        again.staging_path(sid).write_bytes(old)
        os.chmod(again.staging_path(sid), 0o600)
        older = Entry(b"f", closed=True, size=len(old), acked_ns=newer.acked_ns - 10**9)
        again.fs.index.commit({("journal", sid.encode()): older.encode()})
        report = await again.recover()
        assert report.published == 2
        assert again.warm_path(b"f").read_bytes() == new
        assert await again.read_file(b"f") == new
        assert again.staged() == [] and again.stored_journal() == {}
