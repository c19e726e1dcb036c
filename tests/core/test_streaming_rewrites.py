"""A writer that goes back into bytes already streamed to the bucket (``zipfile`` patching its
headers, a truncate below what was uploaded): while the hot tier has room the parts stay
staged, the ones changed go up again before completion and the journal never claims them;
once a part has left the hot tier for room, a change to it fails cleanly (the upload is
abandoned, the file keeps what it had, nothing partial is published)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from .conftest import MIB, PART, Core, SetAttr, core_test, open_core
from .test_streaming import SMALL, content, entry_of, open_short


def patched(data: bytes, *patches: tuple[int, bytes]) -> bytes:
    out = bytearray(data)
    for offset, buf in patches:
        out[offset:offset + len(buf)] = buf
    return bytes(out)


async def upload_of(core: Core, path: bytes):  # type: ignore[no-untyped-def]
    return (await core.lookup_path(path)).data.upload


@core_test
async def test_seeking_back_into_uploaded_parts_uploads_them_again(tmp_path: Path) -> None:
    data = content(2 * PART + MIB)
    patches = ((10, b"header"), (PART + 5, b"second"), (2 * PART - 3, b"across"))
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"big", flags=os.O_RDWR)
        await core.write_all(fh, data)
        entry = entry_of(core)
        await core.until(lambda: set(entry.upload.parts) == {1, 2})
        for offset, buf in patches:  # (the last one spans parts 2 and 3, still staged)
            assert await core.fs.write(fh, offset, buf) == len(buf)
        want = patched(data, *patches)
        # The journal forgot the changed parts before their bytes changed: recovery would
        # never resume from a part that staging no longer matches.
        assert entry.upload.parts == {}
        assert all(not s.upload.parts for s in core.stored_journal().values())
        assert await core.fs.read(fh, 0, 100) == want[:100]  # served from staging
        assert await core.fs.read(fh, PART, 100) == want[PART:PART + 100]
        await core.close(fh)
        assert core.objects() == {"big": want}
        assert await core.read_file(b"big") == want
        # parts 1 and 2 twice (same numbers), the tail once
        assert core.store.calls["upload_part"] == 5
        assert core.uploads() == [] and core.staged() == [] and core.journal() == {}


@core_test
async def test_a_part_changed_while_it_uploads_is_not_recorded(tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.delay("upload_part", 0.5)
        fh = await core.create(b"big")
        await core.write_all(fh, data)
        upload = await upload_of(core, b"big")
        await core.until(lambda: 1 in upload._flying)
        await core.fs.write(fh, 0, b"changed")
        await upload.wait_idle()  # part 1's first upload landed: its bytes are stale
        assert entry_of(core).upload.parts == {} and upload.parts == {}
        await core.close(fh)
        assert core.objects() == {"big": patched(data, (0, b"changed"))}


@core_test
async def test_recovery_after_a_rewrite_uploads_the_changed_part_again(tmp_path: Path
                                                                       ) -> None:
    data = content(2 * PART + 1000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"big")
        await core.write_all(fh, data)
        entry = entry_of(core)
        await core.until(lambda: set(entry.upload.parts) == {1, 2})
        await core.fs.fsync(fh)
        await core.fs.write(fh, PART + 1, b"patched")
        await core.fs.fsync(fh)
        core.crash()  # before close: recovery completes the upload at the fsynced size
    async with open_core(tmp_path, large_file_threshold=SMALL) as again:
        (stored,) = again.stored_journal().values()
        assert set(stored.upload.parts) == {1}
        report = await again.recover()
        assert report.uploaded == 1
        assert again.objects() == {"big": patched(data, (PART + 1, b"patched"))}


@core_test
async def test_a_write_into_a_part_freed_for_room_fails_cleanly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = content(3 * PART)
    # A window of two parts, so that staging leaves the index room on this small hot tier.
    async with open_short(tmp_path, "16m", large_file_threshold=SMALL,
                          upload_window=2) as core:
        await core.write_file(b"f", b"previous")
        fh = await core.open(b"f", os.O_RDWR | os.O_TRUNC)
        await core.write_all(fh, data)
        upload = await upload_of(core, b"f")
        await core.until(lambda: 1 in upload.gone)
        with caplog.at_level(logging.ERROR):
            with pytest.raises(OSError) as e:
                await core.fs.write(fh, 10, b"header")
        assert e.value.errno == errno.EIO
        lines = [r.getMessage() for r in caplog.records if "abandoned" in r.getMessage()]
        assert len(lines) == 1 and lines[0].startswith("f: ")
        assert core.uploads() == []  # aborted at once
        for attempt in (core.fs.write(fh, len(data), b"more"), core.fs.read(fh, PART, 10)):
            with pytest.raises(OSError) as e:
                await attempt
            assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            await core.close(fh)
        assert e.value.errno == errno.EIO
        assert core.warm_path(b"f").read_bytes() == b"previous"
        assert core.objects() == {} and core.uploads() == []
        assert core.staged() == [] and core.journal() == {} and core.lost_found() == []
        assert await core.read_file(b"f") == b"previous"


@core_test
async def test_a_new_file_whose_rewrite_fails_is_left_empty(tmp_path: Path) -> None:
    data = content(3 * PART)
    async with open_short(tmp_path, "16m", large_file_threshold=SMALL, upload_window=2,
                          durability="writeback") as core:
        fh = await core.create(b"new", flags=os.O_RDWR)
        await core.write_all(fh, data)
        upload = await upload_of(core, b"new")
        await core.until(lambda: 1 in upload.gone)
        f = await core.lookup_path(b"new")
        with pytest.raises(OSError) as e:
            await core.fs.setattr(f.ino, SetAttr(size=100))  # into the freed part 1
        assert e.value.errno == errno.EIO
        # recovery would publish nothing of it
        assert all(not e.path and not e.closed for e in core.stored_journal().values())
        with pytest.raises(OSError) as e:
            await core.close(fh)  # write-back: the close itself says so
        assert e.value.errno == errno.EIO
        # (The file is clean before its staging is removed, in a hot-tier thread after.)
        await core.until(lambda: core.writeback_pending() == 0 and core.staged() == [],
                         timeout=15)
        assert core.warm_path(b"new").read_bytes() == b""
        assert not core.warm_path(b"new").is_symlink()
        assert core.objects() == {} and core.uploads() == []


@core_test
async def test_a_full_hot_disk_takes_back_the_uploaded_parts(tmp_path: Path) -> None:
    big, other = content(3 * PART), content(20 * MIB, seed=2)
    # 32 MiB of hot tier, a reserve of two parts: the three uploaded parts of "big" stay
    # staged until "other" (pinned to the warm tier, so it never streams) fills the disk.
    async with open_short(tmp_path, "32m", large_file_threshold=SMALL, upload_window=2,
                          rules=("other=warm",)) as core:
        fh = await core.create(b"big")
        await core.write_all(fh, big)
        upload = await upload_of(core, b"big")
        await core.until(lambda: set(upload.parts) == {1, 2, 3} and not upload._running)
        assert upload.gone == set() and core.staged_bytes() >= 3 * PART
        await core.write_file(b"other", other)
        assert upload.gone == {1, 2, 3}
        await core.close(fh)
        assert core.objects() == {"big": big}
        assert core.warm_path(b"other").read_bytes() == other
