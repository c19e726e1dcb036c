"""A truncate to a part boundary while the punch of that part out of staging (the hot tier
short of room) is still under way in a hot-tier thread: the part is no longer gone after the
truncate, and the bytes written there next must come after the punch, never be zeroed by it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tierfs.transfer import streaming

from .conftest import MIB, PART, SetAttr, core_test, open_core


def content(n: int, seed: int) -> bytes:
    block = bytes((i * 7 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@core_test
async def test_truncate_to_zero_during_a_punch_keeps_the_new_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_punch = streaming.punch_ranges

    def slow_punch(fd: int, ranges: list[tuple[int, int]]) -> None:
        time.sleep(1.0)  # a busy hot disk: the punch runs a moment after it was decided
        real_punch(fd, ranges)

    monkeypatch.setattr(streaming, "free_bytes", lambda fd: 0)  # short of room
    monkeypatch.setattr(streaming, "punch_ranges", slow_punch)
    old, new = content(PART + MIB, 1), content(PART + 1000, 2)
    async with open_core(tmp_path, large_file_threshold="64KiB", upload_window=4) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, old)
        f = await core.lookup_path(b"f")
        upload = f.data.upload
        await core.until(lambda: 1 in upload.gone)  # decided; the punch is in its thread
        await core.fs.setattr(f.ino, SetAttr(size=0))  # the part is no longer cut
        await core.write_all(fh, new)
        await core.close(fh)
        assert core.objects()[core.cold(b"f").key] == new
