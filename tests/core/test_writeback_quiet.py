"""Write-back publishing gives way to foreground work: a closed file's publish waits for a
quiet moment on the mount, at most a bounded time, and never when something needs the file
home now (``tierfs flush``, unmount, an open for writing)."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from .conftest import Core, SetAttr, core_test, open_core

DATA = b"x" * 60_000


def policy(core: Core, quiet: float, max_wait: float, max_held: int = 1 << 40) -> None:
    """Shorter (or longer) than the defaults, so that the tests take a second or two."""
    wb = core.fs.writeback
    wb.quiet, wb.max_wait, wb.max_held = quiet, max_wait, max_held


def home(core: Core, path: bytes, data: bytes = DATA) -> bool:
    return core.warm_path(path).read_bytes() == data


async def close_and_flush(core: Core, fh: int) -> None:
    """The writer's close, then ``tierfs flush``: which must publish the file."""
    await core.close(fh)
    with trio.fail_after(5.0):
        assert await core.publish_all() == []


@core_test
async def test_publish_waits_while_creates_keep_coming(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=0.5, max_wait=20.0)
        await core.write_file(b"a", DATA)
        for i in range(12):  # a save of many small files, a create every 0.1 s
            await core.write_file(b"s%d" % i, b"shard")
            assert core.warm_path(b"a").read_bytes() == b""  # named at create, not home
            await trio.sleep(0.1)
        start = trio.current_time()
        await core.until(lambda: home(core, b"a") and home(core, b"s11", b"shard"))
        assert trio.current_time() - start < 5.0  # went once the creates stopped
        await core.until(lambda: core.staged() == [])


@core_test
async def test_publish_starts_after_the_longest_wait_under_continuous_writes(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=0.5, max_wait=1.0)
        await core.write_file(b"a", DATA)
        closed = trio.current_time()
        fh = await core.create(b"log")
        offset = 0
        published = None
        with trio.move_on_after(5.0):
            while published is None:  # a write every 50 ms: never quiet
                offset += await core.fs.write(fh, offset, b"line\n")
                if home(core, b"a"):
                    published = trio.current_time()
                await trio.sleep(0.05)
        assert published is not None, "never published under continuous writes"
        assert 0.9 <= published - closed <= 3.0
        assert core.warm_path(b"log").read_bytes() == b""  # still open, still staged
        await core.close(fh)


@core_test
async def test_flush_publishes_waiting_files_at_once(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=60.0)
        await core.write_file(b"a", DATA)
        await core.write_file(b"b", DATA[:1000])
        await trio.sleep(0.2)
        assert core.warm_path(b"a").read_bytes() == b""
        with trio.fail_after(5.0):
            assert await core.publish_all() == []
        assert home(core, b"a") and home(core, b"b", DATA[:1000])
        assert core.writeback_pending() == 0
        await core.until(lambda: core.staged() == [] and core.journal() == {}, timeout=5.0)


@core_test
async def test_open_for_writing_publishes_a_waiting_file_at_once(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=60.0)
        await core.write_file(b"a", DATA)
        with trio.fail_after(5.0):
            fh = await core.open(b"a", os.O_WRONLY)
        assert home(core, b"a")  # what the close acknowledged is home before new writes
        await core.fs.write(fh, 0, b"y")
        await close_and_flush(core, fh)
        assert home(core, b"a", b"y" + DATA[1:])


@core_test
async def test_the_oldest_go_when_waiting_bytes_pass_the_bound(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=60.0, max_held=100_000)
        await core.write_file(b"a", DATA)
        await trio.sleep(0.2)
        assert core.warm_path(b"a").read_bytes() == b""  # 60,000 bytes wait: under the bound
        await core.write_file(b"b", DATA)  # 120,000 bytes wait: a goes
        await core.until(lambda: home(core, b"a"), timeout=5.0)
        await trio.sleep(0.2)
        assert core.warm_path(b"b").read_bytes() == b""  # 60,000 again: b waits
        with trio.fail_after(5.0):
            assert await core.publish_all() == []
        assert home(core, b"b")


@core_test
async def test_unmount_publishes_waiting_files_without_waiting(tmp_path: Path) -> None:
    with trio.fail_after(10.0):
        async with open_core(tmp_path, durability="writeback") as core:
            policy(core, quiet=60.0, max_wait=60.0)
            await core.write_file(b"a", DATA)
            await core.write_file(b"b", DATA[:10])
    assert home(core, b"a") and home(core, b"b", DATA[:10])
    async with open_core(tmp_path, durability="writeback") as core:
        report = await core.recover()
        assert report.published == 0  # nothing left for recovery
        assert core.staged() == [] and core.journal() == {}


@core_test
async def test_truncating_a_waiting_file_publishes_it_at_once(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=60.0)
        await core.write_file(b"a", DATA)
        a = await core.lookup_path(b"a")
        with trio.fail_after(5.0):
            await core.fs.setattr(a.ino, SetAttr(size=10))
            assert await core.publish_all() == []
        assert home(core, b"a", DATA[:10])


@core_test
async def test_a_waiting_file_reopened_for_writing_is_not_published_mid_write(
        tmp_path: Path) -> None:
    # The open publishes what the close acknowledged; the writes after it are the new
    # writer's, and reach home at its close (or fsync), never half-done while it writes.
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=0.2, max_wait=60.0)
        await core.write_file(b"a", DATA)
        fh = await core.open(b"a", os.O_WRONLY)
        assert home(core, b"a")
        await core.fs.write(fh, 0, b"y")
        await trio.sleep(0.8)  # quiet for longer than QUIET, the writer still holds it
        assert home(core, b"a"), "a write not yet closed was published"
        await close_and_flush(core, fh)
        assert home(core, b"a", b"y" + DATA[1:])


@core_test
async def test_flush_leaves_a_file_reopened_for_writing_to_its_writer(tmp_path: Path) -> None:
    # ``tierfs flush`` publishes what closes acknowledged; a file opened for writing again
    # while it waited holds its new writer's writes, which only that writer's close publishes.
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=60.0)
        await core.write_file(b"a", DATA)
        fh = await core.open(b"a", os.O_WRONLY)
        assert home(core, b"a")
        await core.fs.write(fh, 0, b"y")
        with trio.fail_after(5.0):
            assert await core.publish_all() == []
        assert home(core, b"a"), "tierfs flush published a write not yet closed"
        await close_and_flush(core, fh)
        assert home(core, b"a", b"y" + DATA[1:])


@core_test
async def test_files_past_their_wait_go_one_at_a_time_while_the_mount_is_busy(
        tmp_path: Path) -> None:
    # Over a network warm tier every publish shares the connections with the foreground's
    # creates: while the mount stays busy, only one publish forced by the longest wait runs.
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=0.2)
        wb = core.fs.writeback
        running, most = 0, 0
        publish = wb.publisher.publish

        async def counted(inode: object, data: object) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await trio.sleep(0.05)  # (a slow tier)
                await publish(inode, data)  # type: ignore[arg-type]
            finally:
                running -= 1

        wb.publisher.publish = counted  # type: ignore[method-assign]
        for i in range(4):
            await core.write_file(b"f%d" % i, DATA)
        fh = await core.create(b"log")
        offset = 0
        with trio.move_on_after(5.0):
            while not all(home(core, b"f%d" % i) for i in range(4)):
                offset += await core.fs.write(fh, offset, b"line\n")  # never quiet
                await trio.sleep(0.02)
        assert all(home(core, b"f%d" % i) for i in range(4)), "not all published while busy"
        assert most == 1
        await close_and_flush(core, fh)


@core_test
async def test_a_second_writer_never_publishes_the_first_writers_unclosed_writes(
        tmp_path: Path) -> None:
    # b waits for its turn behind a's slow publish; reopened for writing, its acknowledged
    # content goes home at that open. What the reopening writer then writes is half-written
    # until its close: neither another writable open nor a truncate publishes it (another
    # writer's close does: its promise covers the file as staged).
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=0.1)
        wb = core.fs.writeback
        publish = wb.publisher.publish
        await core.write_file(b"a", DATA)
        a = await core.lookup_path(b"a")

        slowed = []

        async def slow_for_a(inode: object, data: object) -> None:
            if inode is a and not slowed:  # (its first publish: the one holding the turn)
                slowed.append(inode)
                await trio.sleep(3.0)
            await publish(inode, data)  # type: ignore[arg-type]

        wb.publisher.publish = slow_for_a  # type: ignore[method-assign]
        await core.write_file(b"b", DATA)
        await trio.sleep(0.3)  # both past their wait; a holds the turn
        with trio.fail_after(5.0):
            first = await core.open(b"b", os.O_WRONLY)
        assert home(core, b"b")  # acknowledged content home before the new writes
        await core.fs.write(first, 0, b"half")
        with trio.fail_after(5.0):
            second = await core.open(b"b", os.O_WRONLY)
            b = await core.lookup_path(b"b")
            await core.fs.setattr(b.ino, SetAttr(size=len(DATA) + 1))
        assert home(core, b"b"), "a writer's unclosed writes were published"
        await core.close(second)
        await close_and_flush(core, first)
        assert home(core, b"b", b"half" + DATA[4:] + b"\0")


@core_test
async def test_an_open_for_writing_between_a_close_and_its_release_publishes_it_first(
        tmp_path: Path) -> None:
    # A write-back close acknowledges at its flush; the release (which hands the file to
    # write-back) may come later (a descriptor shared after fork or dup). A new writer in
    # between must find the acknowledged content home before its writes take the journal's
    # "closed" back.
    async with open_core(tmp_path, durability="writeback") as core:
        policy(core, quiet=60.0, max_wait=60.0)
        first = await core.create(b"f")
        await core.write_all(first, DATA)
        await core.fs.flush(first)  # close(2) returned: acknowledged
        with trio.fail_after(5.0):
            second = await core.open(b"f", os.O_WRONLY)
        assert home(core, b"f"), "acknowledged content not home before a new writer"
        await core.fs.write(second, 0, b"y")
        await core.fs.release(first)
        await close_and_flush(core, second)
        assert home(core, b"f", b"y" + DATA[1:])
