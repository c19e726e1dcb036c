"""A change of owner, mode or times waits while a cold publish has put the stub at the name
and not yet rekeyed the inode to it (it asks the bucket, a HEAD, in between): a ``touch``
there, checked against the file the inode stood for (``WarmTier.set_attrs``), failed with
ESTALE, again at the kernel's retry. It now lands on the stub once the swap is done. It waits
for that alone, not for the whole publish (a first fix waited for the file's lock, which a
publish holds while its upload completes)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from tierfs.write.cold import ColdPublisher

from .conftest import MIB, PART, SetAttr, core_test, open_core

DATA = b"z" * 300_000
MTIME = 10**18


@core_test
async def test_a_touch_while_a_cold_publish_asks_the_bucket_waits_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reached, go = trio.Event(), trio.Event()
    real = ColdPublisher._follow_later_upload

    async def slow_head(self: ColdPublisher, *args: object) -> object:
        reached.set()  # the stub is at the name; the inode not rekeyed yet
        await go.wait()
        return await real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ColdPublisher, "_follow_later_upload", slow_head)
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.recover()
        fh = await core.create(b"big")
        await core.write_all(fh, DATA)
        inode = await core.lookup_path(b"big")
        touched = trio.Event()

        async def touch() -> None:
            await core.fs.setattr(inode.ino, SetAttr(atime_ns=MTIME, mtime_ns=MTIME))
            touched.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.close, fh)  # sync mode: the close publishes
            await reached.wait()
            assert core.warm_path(b"big").is_symlink()
            nursery.start_soon(touch)
            await trio.sleep(0.2)
            assert not touched.is_set()  # (waiting for the publish)
            go.set()
        stub = core.cold(b"big")
        assert stub.size == len(DATA) and stub.mtime_ns == MTIME
        assert await core.read_file(b"big") == DATA


BIG = b"z" * (6 * MIB)


@core_test
async def test_a_touch_does_not_wait_for_a_whole_upload(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.recover()
        fh = await core.create(b"big")
        await core.write_all(fh, BIG)
        inode = await core.lookup_path(b"big")
        core.store.delay("complete_multipart", 4.0)  # a slow bucket
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.close, fh)  # sync mode: the close publishes
            await trio.sleep(0.3)  # (completing the upload now, the file's lock held)
            started = trio.current_time()
            await core.fs.setattr(inode.ino, SetAttr(atime_ns=MTIME, mtime_ns=MTIME))
            took = trio.current_time() - started
        assert took < 1.0, f"touch took {took:.1f} s behind the upload"
        assert core.cold(b"big").mtime_ns == MTIME


@core_test
async def test_a_touch_does_not_wait_for_a_file_brought_back_from_the_bucket(
        tmp_path: Path) -> None:
    """A file streamed early (``stream_after``) that ends under the threshold is copied back
    from the bucket to the warm tier at its close: an attribute change waits for the rename
    into place alone, not for that copy (it used to wait for all of it)."""
    data = b"q" * (PART + MIB)
    async with open_core(tmp_path, large_file_threshold="16MiB", stream_after="64KiB") as core:
        await core.recover()
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        await core.until(lambda: core.store.calls["upload_part"] >= 1)
        inode = await core.lookup_path(b"f")
        copying = core.store.hold_after("get_range")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.close, fh)  # sync mode: the close publishes
            assert await trio.to_thread.run_sync(copying.reached.wait, 10)
            try:
                with trio.fail_after(5):
                    await core.fs.setattr(inode.ino, SetAttr(atime_ns=MTIME, mtime_ns=MTIME))
            finally:
                copying.release()
        p = core.warm_path(b"f")
        assert not p.is_symlink() and p.read_bytes() == data
        assert p.stat().st_mtime_ns == MTIME
        assert (await core.fs.getattr(inode.ino)).mtime_ns == MTIME


@core_test
async def test_a_chmod_after_a_publish_whose_last_check_failed_lands(tmp_path: Path) -> None:
    """Once its stub is in place, a cold publish asks the bucket whether a later upload took
    the key. That HEAD failing with an error of the system (a local-folder bucket's stat
    refused) used to skip the switch of the inode to the stub: every chmod then failed with
    ESTALE, and the publish was tried again, uploading the file anew. It is logged now, and
    the stub stands."""
    async with open_core(tmp_path, large_file_threshold="64KiB",
                         durability="writeback") as core:
        fh = await core.create(b"big", flags=os.O_RDWR)
        await core.write_all(fh, DATA)
        inode = await core.lookup_path(b"big")  # (the kernel's inode, as a chmod by fd uses)
        core.store.fail_always("head", error=PermissionError(errno.EACCES, "head refused"))
        await core.close(fh)
        await core.until(lambda: core.stub(b"big") is not None and core.writeback_pending() == 0)
        await core.fs.setattr(inode.ino, SetAttr(mode=0o600))
        core.store.heal()
        assert core.cold(b"big").mode & 0o777 == 0o600
        assert core.counter("upload_errors") == 0
        assert core.store.calls["complete_multipart"] == 1
        assert await core.read_file(b"big") == DATA
