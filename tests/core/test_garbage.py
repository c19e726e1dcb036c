"""Cleanups the bucket failed (``core.garbage``): an object nothing names any more whose delete
failed, an upload given up on whose abort failed. Each is owed, kept in the index and tried
again (while the mount runs, and at the next mount's recovery). Before, the failure was only
logged, and the object, or the upload with its parts, stayed in the bucket for ever."""

from __future__ import annotations

from pathlib import Path

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
