"""A truncate that waits for a punch of uploaded parts (the hot tier short of room) looks again
for punched parts each time round: a part whose upload ended meanwhile may have been punched
by a new ``give_back``. The truncate then cannot keep its bytes (the upload is abandoned and
the writer gets EIO), and never keeps zeros in their place."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.transfer import streaming

from .conftest import MIB, PART, SetAttr, core_test, open_core


def content(n: int, seed: int) -> bytes:
    block = bytes((i * 7 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@core_test
async def test_a_punch_started_while_a_truncate_waits_never_zeroes_kept_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_punch = streaming.punch_ranges

    def slow_punch(fd: int, ranges: list[tuple[int, int]]) -> None:
        time.sleep(1.0)  # a busy hot disk
        real_punch(fd, ranges)

    monkeypatch.setattr(streaming, "free_bytes", lambda fd: 0)  # short of room
    monkeypatch.setattr(streaming, "punch_ranges", slow_punch)
    old = content(2 * PART + MIB, 1)
    keep = PART + 1000  # into part 2
    async with open_core(tmp_path, large_file_threshold="64KiB", upload_window=4) as core:
        store = core.store
        real_upload = store.upload_part

        def upload_part(key: str, upload_id: str, number: int, *rest: Any) -> Any:
            if number == 2:
                time.sleep(0.5)  # part 2's upload ends while the truncate waits
            return real_upload(key, upload_id, number, *rest)

        store.upload_part = upload_part  # type: ignore[method-assign]
        fh = await core.create(b"f")
        await core.write_all(fh, old)
        f = await core.lookup_path(b"f")
        upload = f.data.upload
        await core.until(lambda: 1 in upload.gone)  # part 1's punch is in its thread
        assert 2 not in upload.gone  # (part 2 still uploading)
        try:
            await core.fs.setattr(f.ino, SetAttr(size=keep))
        except OSError as e:
            # Part 2 was punched while the truncate waited for part 1's punch: the change
            # cannot be made, the upload is abandoned and the writer told.
            assert e.errno == errno.EIO
            truncated = False
        else:
            truncated = True
        await trio.sleep(1.5)  # (any punch of part 2 has run)
        if truncated:
            got = bytes(await core.fs.read(fh, PART, keep - PART))
            assert got == old[PART:keep], "bytes the truncate kept were punched out"
        try:
            await core.close(fh)
        except OSError as e:
            assert not truncated and e.errno == errno.EIO
        if truncated:
            assert core.objects()[core.cold(b"f").key] == old[:keep]
        else:  # the file keeps its previous content: created empty
            assert core.stub(b"f") is None and core.warm_path(b"f").read_bytes() == b""
            assert core.objects() == {}
