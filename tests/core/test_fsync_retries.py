"""A part of a file streaming to the bucket whose upload failed (after the store's own
retries) stays staged, and the next ``fsync`` tries it again, as ``close`` does
(docs/semantics.md, "Large files")."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

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
