"""A file in the bucket changed in place: opened for writing without ``O_TRUNC`` (random
writes, appends, ``ftruncate``) or truncated by path to a size that keeps it in the bucket. Its
object is downloaded into staging at the first change, the writer works there, and the close
publishes a new version (a new object and stub, or the warm tier if it ended small); nothing
streams while the writer may still change any byte. A file the hot disk cannot hold is refused
with ENOSPC before anything is downloaded."""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from pathlib import Path

import pytest

from tierfs.write.placement import COLD, NONE, WARM, Placement

from .conftest import MIB, PART, Core, SetAttr, Stub, core_test, open_core

SMALL = "64KiB"  # the threshold: anything past it goes to the bucket


def content(n: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(n)


async def cold_file(core: Core, path: bytes, data: bytes) -> Stub:
    """Write ``data`` to ``path`` and check it went to the bucket."""
    await core.write_file(path, data)
    stub = core.cold(path)
    assert stub.size == len(data)
    return stub


# -- the decision -------------------------------------------------------------------------

def test_a_file_being_rewritten_does_not_stream_until_its_writer_is_done() -> None:
    p = Placement(10 * MIB, 1 * MIB, ())
    for rule in (NONE, COLD):
        assert p.streams(rule, 20 * MIB, 20 * MIB)
        assert not p.streams(rule, 20 * MIB, 20 * MIB, rewriting=True)
    assert not p.streams(WARM, 20 * MIB, 20 * MIB, rewriting=False)
    assert p.belongs_cold(NONE, 20 * MIB)  # and at its publish it goes to the bucket whole


# -- through the core ---------------------------------------------------------------------

@core_test
async def test_a_cold_file_written_in_place_is_published_as_a_new_version(tmp_path: Path
                                                                          ) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        old = await cold_file(core, b"f", data)
        fh = await core.open(b"f", os.O_RDWR)
        assert core.staged() == []  # opening stages nothing; the first write does
        await core.fs.write(fh, 100, b"patched")
        expect = data[:100] + b"patched" + data[107:]
        assert await core.fs.read(fh, 90, 30) == expect[90:120]
        assert await core.size_of(b"f") == len(data)
        await core.close(fh)
        new = core.cold(b"f")
        assert new.etag != old.etag and new.size == len(data)
        assert core.objects() == {"f": expect}  # one object: the old version is gone
        assert core.staged() == [] and core.journal() == {} and core.uploads() == []
        assert await core.read_file(b"f") == expect


@core_test
async def test_a_rewrite_past_the_threshold_does_not_stream_before_close(tmp_path: Path
                                                                         ) -> None:
    data = content(PART + MIB)
    more = content(2 * PART, seed=4)
    # stream_after too: a rewrite waits for its close whatever would start streaming early.
    async with open_core(tmp_path, large_file_threshold=SMALL, stream_after=SMALL) as core:
        await cold_file(core, b"f", data)
        uploads = core.store.calls["create_multipart"]
        fh = await core.open(b"f", os.O_RDWR)
        await core.write_all(fh, more, offset=len(data))  # it grows by two parts, in order
        assert core.store.calls["create_multipart"] == uploads
        assert core.store.calls["upload_part"] == 2  # the first version's parts only
        (entry,) = core.journal().values()
        assert entry.upload is None
        await core.fs.write(fh, 0, b"head")  # (EOPNOTSUPP if part 1 had gone)
        await core.close(fh)
        expect = b"head" + data[4:] + more
        assert core.objects() == {"f": expect}
        assert core.store.calls["create_multipart"] == uploads + 1
        assert core.cold(b"f").size == len(expect)


@core_test
async def test_ftruncate_of_a_cold_file_opened_without_o_trunc(tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        f = await core.lookup_path(b"f")
        fh = await core.open(b"f", os.O_WRONLY)
        await core.fs.setattr(f.ino, SetAttr(size=len(data) + 1000))  # longer: zeros after
        assert await core.size_of(b"f") == len(data) + 1000
        await core.fs.setattr(f.ino, SetAttr(size=PART))  # shorter, still past the threshold
        assert await core.size_of(b"f") == PART
        await core.close(fh)
        assert core.objects() == {"f": data[:PART]} and core.cold(b"f").size == PART
        # Cut below the threshold, it comes back to the warm tier and its object goes.
        fh = await core.open(b"f", os.O_RDWR)
        await core.fs.setattr(f.ino, SetAttr(size=1000))
        await core.fs.write(fh, 1000, b"tail")
        await core.close(fh)
        assert core.stub(b"f") is None and core.objects() == {}
        assert core.warm_path(b"f").read_bytes() == data[:1000] + b"tail"


@core_test
async def test_truncate_by_path_keeps_a_large_cold_file_in_the_bucket(tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=PART + 10))  # no handle open
        assert core.objects() == {"f": data[:PART + 10]}
        assert core.cold(b"f").size == PART + 10
        assert core.staged() == [] and core.journal() == {}


@core_test
async def test_a_small_file_pinned_cold_is_rewritten_in_the_bucket(tmp_path: Path) -> None:
    async with open_core(tmp_path, rules=["*=cold"]) as core:
        await cold_file(core, b"a", b"one two")
        fh = await core.open(b"a", os.O_RDWR)
        await core.fs.write(fh, 4, b"TWO")
        await core.close(fh)
        assert core.objects() == {"a": b"one TWO"} and core.cold(b"a").size == 7
        fh = await core.open(b"a", os.O_WRONLY | os.O_APPEND)
        await core.fs.write(fh, 0, b" three")  # (appended whatever the offset)
        await core.close(fh)
        assert core.objects() == {"a": b"one TWO three"} and core.cold(b"a").size == 13


@core_test
async def test_each_fsync_of_a_rewrite_publishes_and_the_next_write_starts_again(
        tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        fh = await core.open(b"f", os.O_RDWR)
        await core.fs.write(fh, 0, b"one")
        await core.fs.fsync(fh)
        assert core.objects() == {"f": b"one" + data[3:]} and core.staged() == []
        await core.fs.write(fh, 3, b"two")  # staged again from the new object
        assert await core.fs.read(fh, 0, 6) == b"onetwo"
        await core.close(fh)
        assert core.objects() == {"f": b"onetwo" + data[6:]}


@core_test
async def test_a_rewrite_closed_in_writeback_mode_survives_a_crash(tmp_path: Path) -> None:
    data = content(PART + MIB)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        await core.write_file(b"f", data)
        await core.publish_all()
        assert core.objects() == {"f": data}
        core.store.fail_always("create_multipart")  # the background publish cannot finish
        fh = await core.open(b"f", os.O_RDWR)
        await core.fs.write(fh, 10, b"kept")
        await core.close(fh)
        core.crash()
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        await core.recover()
        assert core.objects() == {"f": data[:10] + b"kept" + data[14:]}
        assert core.cold(b"f").size == len(data) and core.staged() == []


@core_test
async def test_a_cold_file_the_hot_tier_cannot_hold_is_refused_with_enospc(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    huge = 1 << 40  # more than the hot disk has free: a sparse object in the bucket folder
    async with open_core(tmp_path) as core:
        with open(core.bucket / "huge", "wb") as f:
            f.truncate(huge)
        info = core.store.inner.head("huge")
        core.put_stub(b"huge", Stub("huge", huge, info.etag, 0o644, time.time_ns()))
        fh = await core.open(b"huge", os.O_RDWR)  # opening is fine
        with caplog.at_level(logging.WARNING, logger="tierfs.write.staging"):
            for _ in range(3):
                with pytest.raises(OSError) as e:
                    await core.fs.write(fh, 0, b"x")
                assert e.value.errno == errno.ENOSPC
        assert caplog.text.count("huge is not staged") == 1  # (not a line per write)
        assert core.store.calls["get_range"] == 0  # nothing downloaded
        assert core.staged() == [] and core.journal() == {}
        assert await core.fs.read(fh, 0, 4) == b"\0" * 4  # reads go to the object
        await core.close(fh)
        assert core.cold(b"huge").etag == info.etag  # unchanged


@core_test
async def test_a_failed_download_fails_that_change_only(tmp_path: Path) -> None:
    data = content(3 * PART + 10)  # four ranged GETs, some at once
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        fh = await core.open(b"f", os.O_RDWR)
        core.store.fail_nth("get_range", 2)
        with pytest.raises(OSError) as e:
            await core.fs.write(fh, 5, b"x")
        assert e.value.errno == errno.EIO
        assert core.staged() == [] and core.journal() == {}
        await core.fs.write(fh, 5, b"y")  # the next change downloads it all again
        await core.close(fh)
        assert core.objects() == {"f": data[:5] + b"y" + data[6:]}


@core_test
async def test_a_large_download_makes_several_ranged_gets_at_once(tmp_path: Path) -> None:
    data = content(3 * PART + 10)  # four ranged GETs
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await cold_file(core, b"f", data)
        fh = await core.open(b"f", os.O_RDWR)
        core.store.delay("get_range", 0.5)
        started = time.monotonic()
        await core.fs.write(fh, 0, b"z")
        assert time.monotonic() - started < 1.5  # one after the other: 2 s at least
        assert core.store.calls["get_range"] == 4
        await core.close(fh)
        assert core.objects() == {"f": b"z" + data[1:]}
