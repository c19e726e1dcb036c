"""Cleanups the bucket failed (``core.garbage``): an object nothing names any more whose delete
failed, an upload given up on whose abort failed. Each is owed, kept in the index and tried
again (while the mount runs, and at the next mount's recovery). Before, the failure was only
logged, and the object, or the upload with its parts, stayed in the bucket for ever. A delete
is owed only of a version (its ETag, each its own record), never of whatever a key holds by
the time it is tried again; and the retries never end the mount's background work."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import trio

from tierfs.core import garbage

from .conftest import PART, ROOT, core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_an_unlinked_cold_file_leaves_no_object_when_the_first_delete_fails(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000))
        assert core.stub(b"f") is not None and len(core.objects()) == 1
        core.store.fail_nth("delete", 1)  # a 503 burst past the retries
        await core.fs.unlink(ROOT, b"f")  # succeeds: the name is gone
        assert core.warm_names() == []
    async with open_core(tmp_path, store=core.store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.objects() == {}, "an object no stub names stays in the bucket for ever"


@core_test
async def test_upload_of_a_file_unlinked_while_streaming_is_not_leaked_when_abort_fails(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, content(PART + 1000))
        await core.until(lambda: bool(core.store.calls["upload_part"]))
        await core.fs.unlink(ROOT, b"f")
        core.store.fail_always("abort_multipart")  # the bucket is away for a moment
        await core.close(fh)
        core.store.heal()
    # The next mount, with the bucket back: nothing left to know the upload by.
    async with open_core(tmp_path, store=core.store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.uploads() == [], "an upload holding a 5 MiB part leaked for ever"


@core_test
async def test_an_owed_delete_is_done_while_the_mount_runs(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000))
        core.store.fail_nth("delete", 1)
        await core.fs.unlink(ROOT, b"f")
        assert len(core.objects()) == 1 and len(core.fs.core.garbage.owed) == 1
        assert await core.fs.core.garbage.retry() == 0  # (what the upkeep job runs)
        assert core.objects() == {}


@core_test
async def test_an_owed_delete_does_not_delete_the_object_written_at_its_key_since(
        tmp_path: Path) -> None:
    big, again = content(300_000, seed=1), content(400_000, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", big)
        assert core.stub(b"f") is not None
        key = core.stub(b"f").key
        # Rewritten small: home on the warm tier, its old object deleted ... and the reply
        # of that delete lost (a timeout; the delete took effect). Owed, of that version
        # only: the key may name a new object by the time it is tried again.
        core.store.lose_reply("delete", 1)
        inode = await core.lookup_path(b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"small now")
        await core.close(fh)
        assert core.stub(b"f") is None
        assert len(core.fs.core.garbage.owed) == 1
        # Written large again: streamed to the bucket, to the same key (free again).
        await core.write_file(b"f", again)
        assert core.stub(b"f") is not None and core.stub(b"f").key == key
        assert core.objects() == {key: again}
        # The owed delete is tried again (every five minutes, or at the next mount).
        await core.fs.core.garbage.retry()
        assert core.objects() == {key: again}, "the live file's object was deleted"


@core_test
async def test_two_owed_deletes_of_one_key_are_both_kept(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000, seed=1))
        key = core.stub(b"f").key
        core.store.lose_reply("delete", 1)  # took effect, its reply lost: owed all the same
        await core.fs.unlink(ROOT, b"f")
        assert core.objects() == {} and len(core.fs.core.garbage.owed) == 1
        await core.write_file(b"f", content(400_000, seed=2))
        assert core.stub(b"f").key == key  # (the key was free)
        core.store.fail_nth("delete", 1)  # this delete fails: owed too
        await core.fs.unlink(ROOT, b"f")
        assert len(core.objects()) == 1
        await core.fs.core.garbage.retry()
        await core.fs.core.garbage.retry()
        assert core.objects() == {}, "the second version's object stays in the bucket for ever"


@core_test
async def test_an_odd_error_of_an_owed_delete_does_not_stop_the_mount(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(garbage, "RETRY_INTERVAL", 0.05)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000))
        core.store.fail_nth("delete", 1)
        await core.fs.unlink(ROOT, b"f")
        assert len(core.fs.core.garbage.owed) == 1
        core.store.fail_always("delete", PermissionError(errno.EACCES, "bucket folder"))
        await trio.sleep(0.5)  # a few rounds of the job
        await core.write_file(b"g", b"still serving")
        assert await core.read_file(b"g") == b"still serving"


@core_test
async def test_an_odd_error_of_an_owed_delete_at_mount_does_not_fail_the_mount(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000))
        core.store.fail_nth("delete", 1)
        await core.fs.unlink(ROOT, b"f")
        assert len(core.fs.core.garbage.owed) == 1
    core.store.fail_always("delete", ValueError("a bug of the store's"))
    async with open_core(tmp_path, store=core.store, large_file_threshold=SMALL) as again:
        await again.recover()  # (raised: the mount failed)
        assert len(again.fs.core.garbage.owed) == 1
        await again.write_file(b"g", b"serving")
        assert await again.read_file(b"g") == b"serving"
