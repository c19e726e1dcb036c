"""An fsync that tries failed parts again (``StreamingUpload.wait_idle``) holds the file's lock:
a truncate and writes meanwhile would un-cut parts it is about to send, which would then be
sent from stale staging bytes and taken for done when the file is cut into parts again."""

from __future__ import annotations

from pathlib import Path

import trio

from .conftest import PART, SetAttr, core_test, open_core


def content(n: int, seed: int) -> bytes:
    block = bytes((i * 13 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@core_test
async def test_truncate_during_an_fsync_retry_never_keeps_a_stale_part(tmp_path: Path) -> None:
    a1, a2 = content(PART, 1), content(PART, 2)
    x, y, z = content(PART, 3), content(PART, 4), content(PART, 5)
    async with open_core(tmp_path, large_file_threshold="64KiB",
                         durability="writeback") as core:
        core.store.fail_always("upload_part")
        fh = await core.create(b"f")
        f = await core.lookup_path(b"f")
        await core.write_all(fh, a1)
        upload = f.data.upload
        await core.until(lambda: not upload._running and len(upload.failed) == 1)
        await core.write_all(fh, a2, offset=PART)
        await core.until(lambda: not upload._running and len(upload.failed) == 2)
        assert [n for n, _, _ in upload.failed] == [1, 2]
        core.store.heal()
        hold = core.store.hold_after("upload_part", 1)  # the retry of part 1: slow reply
        fsynced = trio.Event()

        async def fsync() -> None:
            try:
                await core.fs.fsync(fh)
            finally:
                fsynced.set()

        core.nursery.start_soon(fsync)
        await core.until(hold.reached.is_set)
        # Meanwhile the writer (another thread of the program) truncates and rewrites.
        await core.fs.setattr(f.ino, SetAttr(size=0))
        await core.write_all(fh, x, offset=PART)  # part 2's range, before part 1's
        hold.release()
        await fsynced.wait()
        await core.write_all(fh, y, offset=PART)  # part 2's final bytes
        await core.write_all(fh, z, offset=0)  # part 1: the file is contiguous again
        await core.close(fh)
        assert await core.publish_all() == []
        got = core.objects()[core.cold(b"f").key]
        assert got[:PART] == z
        assert got[PART:] == y, "part 2 holds bytes overwritten before the close"
