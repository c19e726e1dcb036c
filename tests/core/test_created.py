"""A file created through the mount stages from nothing (there is nothing to copy yet), but only
until its content is first home: writes after a publish (an fsync, the close of another
handle, a completed upload, a failed one tried again, or an upload that had to be given up)
must build on what was published, never on the empty file of the create. Every test compares
the final bytes with what a plain file would hold after the same calls."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .conftest import PART, Core, core_test, open_core
from .test_streaming import SMALL, content, open_short

MODES = [pytest.param(by_rename, durability, id=f"{'rename' if by_rename else 'copy'}-"
                      f"{durability}")
         for by_rename in (True, False) for durability in ("sync", "writeback")]


class Plain:
    """What a plain file holds after the same writes and truncates."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, offset: int, buf: bytes) -> None:
        if offset > len(self.data):
            self.data += bytes(offset - len(self.data))
        self.data[offset:offset + len(buf)] = buf

    def truncate(self, size: int) -> None:
        del self.data[size:]
        self.data += bytes(size - len(self.data))


async def write(core: Core, fh: int, plain: Plain, offset: int, buf: bytes) -> None:
    await core.write_all(fh, buf, offset)
    plain.write(offset, buf)


async def settled(core: Core, path: bytes, plain: Plain) -> None:
    """Everything published (write-back included), then the file read back three ways: through
    the core, and from its home tier (the warm file or the object its stub names)."""
    await core.until(lambda: core.writeback_pending() == 0)
    assert await core.publish_all() == []
    want = bytes(plain.data)
    got = await core.read_file(path)
    assert len(got) == len(want)
    assert got == want
    stub = core.stub(path)
    if stub is None:
        assert core.warm_path(path).read_bytes() == want
    else:
        assert core.objects()[stub.key] == want


@pytest.mark.parametrize(("by_rename", "durability"), MODES)
@core_test
async def test_write_after_fsync_builds_on_what_was_published(
        tmp_path: Path, by_rename: bool, durability: str) -> None:
    plain = Plain()
    async with open_core(tmp_path, by_rename=by_rename, durability=durability) as core:
        fh = await core.create(b"f", flags=os.O_RDWR)
        await write(core, fh, plain, 0, b"A" * 1000)
        await core.fs.fsync(fh)
        assert core.warm_path(b"f").read_bytes() == b"A" * 1000  # published
        await write(core, fh, plain, 5000, b"B" * 100)
        await write(core, fh, plain, 10, b"C" * 10)
        await core.fs.fsync(fh)  # and once more: the second publish builds on the first
        await write(core, fh, plain, 20, b"D" * 10)
        assert await core.fs.read(fh, 0, 30) == bytes(plain.data[:30])
        await core.close(fh)
        await settled(core, b"f", plain)


@pytest.mark.parametrize(("by_rename", "durability"), MODES)
@core_test
async def test_write_through_a_handle_left_open_after_another_closed(
        tmp_path: Path, by_rename: bool, durability: str) -> None:
    plain = Plain()
    async with open_core(tmp_path, by_rename=by_rename, durability=durability) as core:
        first = await core.create(b"f", flags=os.O_RDWR)
        second = await core.open(b"f", os.O_WRONLY)  # shares the open state
        await write(core, first, plain, 0, b"A" * 3000)
        await core.close(first)  # the other handle stays: published now (sync) or not
        await write(core, second, plain, 100, b"B" * 50)
        third = await core.open(b"f", os.O_RDWR)
        await write(core, third, plain, 4000, b"C" * 10)
        await core.close(second)
        assert await core.fs.read(third, 0, 200) == bytes(plain.data[:200])
        await core.close(third)
        await settled(core, b"f", plain)


@pytest.mark.parametrize(("by_rename", "durability"), MODES)
@core_test
async def test_write_after_the_object_completed_under_an_open_reader(
        tmp_path: Path, by_rename: bool, durability: str) -> None:
    """The writer's close completes the object (the stub replaces the file) while a reader
    keeps the open state: a new writer's change is made to the object's content."""
    plain = Plain()
    async with open_core(tmp_path, by_rename=by_rename, durability=durability,
                         large_file_threshold=SMALL) as core:
        writer = await core.create(b"f")
        reader = await core.open(b"f")
        await write(core, writer, plain, 0, content(PART + 5000))
        await core.close(writer)
        if durability == "sync":
            assert core.stub(b"f") is not None and core.stub(b"f").size == PART + 5000
        again = await core.open(b"f", os.O_WRONLY)
        await write(core, again, plain, 100, b"B" * 50)
        await write(core, again, plain, PART + 6000, b"C" * 10)
        await core.close(again)
        assert await core.fs.read(reader, 0, 200) == bytes(plain.data[:200])
        await core.close(reader)
        await settled(core, b"f", plain)


@pytest.mark.parametrize(("by_rename", "durability"), MODES)
@core_test
async def test_large_file_fsynced_then_written_at_another_offset(
        tmp_path: Path, by_rename: bool, durability: str) -> None:
    plain = Plain()
    async with open_core(tmp_path, by_rename=by_rename, durability=durability,
                         large_file_threshold=SMALL) as core:
        fh = await core.create(b"f", flags=os.O_RDWR)
        await write(core, fh, plain, 0, content(PART + 1000))
        await core.fs.fsync(fh)
        await write(core, fh, plain, 2 * PART, b"B" * 100)
        await write(core, fh, plain, 10, b"C" * 10)
        await core.close(fh)
        await settled(core, b"f", plain)
        assert core.stub(b"f") is not None


@pytest.mark.parametrize(("by_rename", "durability"), MODES)
@core_test
async def test_write_after_a_failed_upload_is_tried_again(
        tmp_path: Path, by_rename: bool, durability: str) -> None:
    """The bucket refuses to complete the upload once: the staged data stays for another try,
    the file is written again through a handle still open, and the next publish has it all."""
    plain = Plain()
    async with open_core(tmp_path, by_rename=by_rename, durability=durability,
                         large_file_threshold=SMALL) as core:
        core.store.fail_nth("complete_multipart", 1)
        first = await core.create(b"f")
        reader = await core.open(b"f")
        await write(core, first, plain, 0, content(PART + 1000))
        if durability == "sync":
            with pytest.raises(OSError) as failed:
                await core.fs.flush(first)
            assert failed.value.errno == errno.EIO
            await core.fs.release(first)
        else:
            await core.close(first)
            with pytest.raises(OSError):
                await core.fs.fsync(reader)  # write-back: the publish is forced, and fails
        assert core.stub(b"f") is None
        again = await core.open(b"f", os.O_WRONLY)
        await write(core, again, plain, 50, b"B" * 50)
        await core.close(again)
        await core.close(reader)
        await settled(core, b"f", plain)
        assert core.store.calls["complete_multipart"] >= 2


@pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])
@core_test
async def test_published_then_unlinked_reads_and_writes_on(tmp_path: Path, by_rename: bool
                                                           ) -> None:
    """Published, then its name removed (and another file renamed over a second one) while
    handles stay open: they read and write on from what was published."""
    plain = Plain()
    async with open_core(tmp_path, by_rename=by_rename) as core:
        fh = await core.create(b"f", flags=os.O_RDWR)
        reader = await core.open(b"f")
        await write(core, fh, plain, 0, b"A" * 100)
        await core.fs.fsync(fh)
        await core.fs.unlink(*(await core.parent_and_name(b"f")))
        await write(core, fh, plain, 200, b"B" * 10)
        assert await core.read_all(reader) == bytes(plain.data)
        await core.close(fh)
        assert await core.read_all(reader) == bytes(plain.data)
        await core.close(reader)

        plain = Plain()
        fh = await core.create(b"g", flags=os.O_RDWR)
        await write(core, fh, plain, 0, b"C" * 100)
        await core.fs.fsync(fh)
        await core.write_file(b"h", b"other")
        (p, n), (q, m) = await core.parent_and_name(b"h"), await core.parent_and_name(b"g")
        await core.fs.rename(p, n, q, m, 0)
        await write(core, fh, plain, 50, b"D" * 100)
        assert await core.read_all(fh) == bytes(plain.data)
        await core.close(fh)
        assert await core.read_file(b"g") == b"other"


async def made(core: Core, plain: Plain, how: str, flags: int) -> int:
    """A handle on ``f``: made by this open, or an older file opened (its descriptor then
    names the file a publish by copy replaces)."""
    if how == "created":
        return await core.create(b"f", flags=flags)
    await core.write_file(b"f", b"old")
    plain.write(0, b"old")
    return await core.open(b"f", flags)


@pytest.mark.parametrize("how", ["created", "opened"])
@core_test
async def test_published_by_copy_then_an_upload_given_up_keeps_the_published_content(
        tmp_path: Path, how: str) -> None:
    """Published by copy (staging stays), then grown past the threshold and streamed; a write
    into a part that left the hot tier for room abandons the upload, and the file keeps what
    was published before. A writer that goes on through the same open state builds on that,
    and reads of it see it: never the empty file the create made, nor the one replaced."""
    plain = Plain()
    async with open_short(tmp_path, "16m", by_rename=False, large_file_threshold=SMALL,
                          upload_window=2) as core:
        fh = await made(core, plain, how, os.O_RDWR)
        reader = await core.open(b"f")
        await write(core, fh, plain, 0, b"previous")
        await core.fs.fsync(fh)  # by copy: staging stays, and is what is home
        assert core.warm_path(b"f").read_bytes() == b"previous"
        await core.write_all(fh, content(3 * PART), 8)
        upload = (await core.lookup_path(b"f")).data.upload
        await core.until(lambda: 1 in upload.gone)
        with pytest.raises(OSError) as e:
            await core.fs.write(fh, 10, b"header")
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError):
            await core.close(fh)
        assert core.warm_path(b"f").read_bytes() == b"previous"  # kept what was home
        assert await core.fs.read(reader, 0, 100) == b"previous"
        again = await core.open(b"f", os.O_WRONLY)
        await write(core, again, plain, 8, b"!")
        await core.close(again)
        await core.close(reader)
        await settled(core, b"f", plain)
        assert core.warm_path(b"f").read_bytes() == b"previous!"


@pytest.mark.parametrize("how", ["created", "opened"])
@core_test
async def test_published_by_copy_then_an_upload_lost_keeps_the_published_content(
        tmp_path: Path, how: str) -> None:
    """As above, with the bucket dropping the unfinished upload after a part left staging."""
    plain = Plain()
    async with open_short(tmp_path, "12m", by_rename=False, large_file_threshold=SMALL,
                          upload_window=2) as core:
        fh = await made(core, plain, how, os.O_WRONLY)
        reader = await core.open(b"f")
        await write(core, fh, plain, 0, b"previous")
        await core.fs.fsync(fh)
        core.store.drop_upload_before("upload_part", 2)
        with pytest.raises(OSError) as e:
            await core.write_all(fh, content(2 * PART + 1000), 8)
            await core.fs.flush(fh)
        assert e.value.errno == errno.EIO
        await core.fs.release(fh)
        assert core.counter("uploads_lost") == 1
        assert core.warm_path(b"f").read_bytes() == b"previous"
        assert await core.fs.read(reader, 0, 100) == b"previous"
        again = await core.open(b"f", os.O_WRONLY)
        await write(core, again, plain, 8, b"!")
        await core.close(again)
        await core.close(reader)
        await settled(core, b"f", plain)
        assert core.warm_path(b"f").read_bytes() == b"previous!"
