"""A last close whose publish fails in sync mode: the close says EIO, and the staged data is
not left for the next mount alone. Until then every open here read the file's old content
(its state retired, the data waiting in staging for recovery); now the file goes on as a
write-back's would, read here as written and published once the bucket answers again."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from .conftest import core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_a_failed_last_close_is_read_as_written_and_published_later(
        tmp_path: Path) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.fail_always("complete_multipart")
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        with pytest.raises(OSError) as failed:
            await core.close(fh)
        assert failed.value.errno == errno.EIO
        assert await core.read_file(b"f") == data  # (was: b"", the old content)
        core.store.heal()
        await core.until(lambda: core.stub(b"f") is not None)
        assert await core.read_file(b"f") == data
        assert core.objects() == {core.cold(b"f").key: data}
        await core.until(lambda: core.staged() == [])
