"""A last close whose publish fails in sync mode: the close says EIO, and the staged data is
not left for the next mount alone. Until then every open here read the file's old content
(its state retired, the data waiting in staging for recovery); now the file goes on as a
write-back's would, read here as written and published once the bucket answers again. The
failure was told by that close: a failed background try is not told again by the next
writer's close."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .conftest import Core, core_test, open_core
from .test_streaming import SMALL, content


async def close_failing(core: Core, path: bytes, data: bytes) -> OSError:
    """Write a file bound for the bucket while the bucket refuses to complete uploads: the
    error of its (last) close."""
    core.store.fail_always("complete_multipart")
    fh = await core.create(path)
    await core.write_all(fh, data)
    with pytest.raises(OSError) as failed:
        await core.close(fh)
    return failed.value


@core_test
async def test_a_failed_last_close_is_read_as_written_and_published_later(
        tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        failed = await close_failing(core, b"f", data)
        assert failed.errno == errno.EIO
        assert await core.read_file(b"f") == data  # (was: b"", the old content)
        core.store.heal()
        await core.until(lambda: core.stub(b"f") is not None)
        assert await core.read_file(b"f") == data
        assert core.objects() == {core.cold(b"f").key: data}
        await core.until(lambda: core.staged() == [])


@core_test
async def test_a_new_writer_close_is_not_failed_by_the_background_retry(
        tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        failed = await close_failing(core, b"f", data)
        assert failed.errno == errno.EIO  # reported once, here
        # The background retry fails too (the bucket still away).
        await core.until(lambda: core.counter("upload_errors") >= 1)
        core.store.heal()
        inode = await core.lookup_path(b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"new content")
        try:
            await core.close(fh)
            closed = None
        except OSError as e:
            closed = e
        # The new content is home all the same (the release published it) ...
        assert await core.read_file(b"f") == b"new content"
        assert core.objects() == {} or list(core.objects().values()) == [b"new content"] \
            or (core.warm / "f").read_bytes() == b"new content"
        # ... yet its close said EIO: the background retry's failure, reported a second time.
        assert closed is None, f"the new writer's successful close failed: {closed!r}"
