"""A created file streaming to the bucket, hard-linked by another node on the warm tree, then
unlinked here: its writes are published in place to the name that remains (the upload is
dropped: a stub cannot be hard-linked), never dropped with a successful close. Also when the
unlink (or a rename over it) comes while the close completes the upload: the object is
deleted and the data written in place from staging (both were dropped, and the close said
it succeeded). If parts of it had already left staging, the object alone holds the data: it
is kept and the close fails (it was deleted, and the close succeeded)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
import trio

from tierfs.transfer import streaming

from .conftest import PART, ROOT, Core, core_test, open_core
from .test_streaming import SMALL, open_short

DATA = bytes(range(256)) * (2 * PART // 256 + 9)


@core_test
async def test_streaming_file_linked_elsewhere_then_unlinked_keeps_its_writes(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        fh = await core.create(b"a", flags=os.O_RDWR)
        await core.write_all(fh, DATA[:PART + 10])
        f = await core.lookup_path(b"a")
        assert f.data.upload is not None  # streaming
        os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
        await core.fs.unlink(ROOT, b"a")
        await core.write_all(fh, DATA[PART + 10:], offset=PART + 10)
        try:
            await core.close(fh)
        except OSError:
            pass  # (refusing is fine; silently losing the data is not)
        await core.publish_all()
        b = core.warm_path(b"b")
        got = b.read_bytes() if not b.is_symlink() else await core.read_file(b"b")
        assert got == DATA, f"b holds {len(got)} bytes, the writes went nowhere"


@pytest.mark.parametrize("durability,remove", [("sync", "unlink"), ("writeback", "unlink"),
                                               ("sync", "rename")])
@core_test
async def test_a_name_removed_while_the_upload_completes_leaves_the_data_to_the_others(
        tmp_path: Path, durability: str, remove: str) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB",
                         durability=durability) as core:
        fh = await core.create(b"a", flags=os.O_RDWR)
        await core.write_all(fh, DATA)
        assert (await core.lookup_path(b"a")).data.upload is not None  # streaming
        os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
        if remove == "rename":
            await core.write_file(b"c", b"other")
        completing = core.store.hold_after("complete_multipart")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.close, fh)
            if durability == "writeback":
                nursery.start_soon(core.publish_all)
            assert await trio.to_thread.run_sync(completing.reached.wait, 10)
            # Done in the bucket, its reply on its way: the name goes meanwhile.
            if remove == "rename":
                nursery.start_soon(core.fs.rename, ROOT, b"c", ROOT, b"a", 0)
            else:
                nursery.start_soon(core.fs.unlink, ROOT, b"a")
            await core.until(lambda: not core.warm_path(b"a").exists()
                             or core.warm_path(b"a").read_bytes() == b"other")
            completing.release()
        await core.publish_all()
        assert core.warm_path(b"b").read_bytes() == DATA
        assert core.objects() == {} and core.uploads() == [] and core.lost_found() == []
        await core.until(lambda: core.staged() == [])


def named(fd: int) -> str:
    """The file a descriptor of this process names now, or that it is closed."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        return f"a closed descriptor ({e.strerror})"


async def punched_and_linked(core: Core) -> int:
    """``a`` written with DATA, streaming, some of its parts already punched out of staging,
    and hard-linked as ``b`` by another node; its handle."""
    fh = await core.create(b"a", flags=os.O_RDWR)
    await core.write_all(fh, DATA)
    inode = await core.lookup_path(b"a")
    await core.until(lambda: inode.data.upload is not None and inode.data.upload.punched)
    os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
    return fh


@pytest.mark.parametrize("durability", ["sync", "writeback"])
@core_test
async def test_a_name_removed_while_the_upload_of_a_punched_file_completes_keeps_the_object(
        tmp_path: Path, durability: str) -> None:
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL, upload_window=2,
                          durability=durability) as core:
        fh = await punched_and_linked(core)
        completing = core.store.hold_after("complete_multipart")
        failed: list[OSError] = []

        async def close() -> None:
            try:
                await core.close(fh)
                if durability == "writeback":
                    await core.publish_all()
            except OSError as e:
                failed.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close)
            assert await trio.to_thread.run_sync(completing.reached.wait, 10)
            nursery.start_soon(core.fs.unlink, ROOT, b"a")
            await core.until(lambda: not core.warm_path(b"a").exists())
            completing.release()
        assert list(core.objects().values()) == [DATA]
        await settled_hopeless(core, failed, durability)


async def settled_hopeless(core: Core, failed: list[OSError], durability: str) -> None:
    """A publish that cannot succeed (parts of the file are in the bucket alone, and no name
    here is left to put them at) fails once, sets what was staged aside, and is not tried
    again (write-back retried it for ever, logging an error each time)."""
    if durability == "sync":
        assert [e.errno for e in failed] == [errno.EIO]
    errors = core.counter("upload_errors")
    await trio.sleep(1.5)  # (write-back's first retry comes after 1 s)
    assert core.counter("upload_errors") == errors and core.writeback_pending() == 0
    assert core.staged() == [] and len(core.lost_found()) >= 1


@pytest.mark.parametrize("durability", ["sync", "writeback"])
@core_test
async def test_a_punched_file_unlinked_before_its_close_is_not_retried_for_ever(
        tmp_path: Path, durability: str) -> None:
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL, upload_window=2,
                          durability=durability) as core:
        fh = await punched_and_linked(core)
        await core.fs.unlink(ROOT, b"a")
        failed: list[OSError] = []
        try:
            await core.close(fh)
            if durability == "writeback":
                await core.publish_all()
        except OSError as e:
            failed.append(e)
        await settled_hopeless(core, failed, durability)
        assert core.uploads() == []  # (its parts aborted: nobody can read them)


@core_test
async def test_a_part_in_flight_never_punches_a_staging_descriptor_given_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The case above with a part still uploading at the close: the upload is aborted (which
    waits for that part) before the staging file is closed and set aside. The other way
    round, the part's end punched its range out of whatever file got the closed descriptor's
    number next (another file's staging)."""
    punched: list[str] = []
    punch = streaming.punch_ranges

    def recording(fd: int, ranges: list[tuple[int, int]]) -> None:
        punched.append(named(fd))
        punch(fd, ranges)

    monkeypatch.setattr(streaming, "punch_ranges", recording)
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL, upload_window=2) as core:
        second = core.store.hold_after("upload_part", 2)
        fh = await core.create(b"a", flags=os.O_RDWR)
        await core.write_all(fh, DATA)
        upload = (await core.lookup_path(b"a")).data.upload
        assert await trio.to_thread.run_sync(second.reached.wait, 10)
        await core.until(lambda: upload.punched)  # part 1 left staging; part 2 in flight
        os.link(core.warm_path(b"a"), core.warm_path(b"b"))  # another node: ln a b
        await core.fs.unlink(ROOT, b"a")
        failed: list[OSError] = []

        async def close() -> None:
            try:
                await core.close(fh)
            except OSError as e:
                failed.append(e)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close)
            await trio.sleep(0.3)  # (the close on its way, the part still held)
            second.release()
        assert [e.errno for e in failed] == [errno.EIO]
        assert punched and all("/staging/" in p for p in punched), punched
        assert core.uploads() == [] and core.lost_found()


@core_test
async def test_a_full_hot_tier_never_punches_an_upload_dropped_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write finding the hot tier full takes uploaded parts back from every upload it
    found (``give_back_all``), one at a time. One of them dropped meanwhile (its file's last
    name went, other names made elsewhere: written to them from staging) used to be punched
    all the same, through a descriptor its file had closed since."""
    gate, reached = threading.Event(), threading.Event()
    punch, punched, first = streaming.punch_ranges, [], []

    def recording(fd: int, ranges: list[tuple[int, int]]) -> None:
        if first and fd == first[0]:  # (the first upload's punch waits: the rest after it)
            reached.set()
            gate.wait(20)
        punched.append(fd)
        punch(fd, ranges)

    monkeypatch.setattr(streaming, "punch_ranges", recording)
    async with open_core(tmp_path, large_file_threshold=SMALL, upload_window=4) as core:
        fhs = {}
        for name in (b"x", b"y"):
            fhs[name] = await core.create(name, flags=os.O_RDWR)
            await core.write_all(fhs[name], DATA[:PART + 10])
        ups = {n: (await core.lookup_path(n)).data.upload for n in (b"x", b"y")}
        await core.until(lambda: all(u.kept == {1} for u in ups.values()))
        order = [u for u in list(streaming._live) if u in ups.values()]
        first.append(order[0].fd)
        dropped = order[-1]
        name = next(n for n, u in ups.items() if u is dropped)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(streaming.give_back_all, core.fs.hot, 1 << 40)
            assert await trio.to_thread.run_sync(reached.wait, 10)
            os.link(core.warm_path(name), core.warm_path(b"b"))  # another node: ln
            await core.fs.unlink(ROOT, name)
            await core.close(fhs[name])  # written in place from staging; upload dropped
            assert core.warm_path(b"b").read_bytes() == DATA[:PART + 10]
            gate.set()
        assert dropped.fd not in punched


@pytest.mark.parametrize("unlinked", [True, False])
@core_test
async def test_a_punch_under_way_at_the_last_close_never_punches_another_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unlinked: bool) -> None:
    """A full hot tier is punching a streaming file's uploaded parts out of staging when its
    last handle closes. Unlinked, the close aborts the upload; named, it completes it; either
    way it then closes (or takes) the staging descriptor. Neither the abort nor the
    completion waited for the punch, so the descriptor was closed, and its number free for
    any file, before the punch used it: holes punched in whatever file got the number."""
    gate, reached = threading.Event(), threading.Event()
    punch, seen = streaming.punch_ranges, []

    def gated(fd: int, ranges: list[tuple[int, int]]) -> None:
        reached.set()
        gate.wait(20)
        seen.append(named(fd))
        punch(fd, ranges)

    monkeypatch.setattr(streaming, "punch_ranges", gated)
    async with open_core(tmp_path, large_file_threshold=SMALL, upload_window=4) as core:
        fh = await core.create(b"a", flags=os.O_RDWR)
        await core.write_all(fh, DATA[:PART + 10])
        upload = (await core.lookup_path(b"a")).data.upload
        staging = os.readlink(f"/proc/self/fd/{upload.fd}")
        await core.until(lambda: upload.kept == {1})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(streaming.give_back_all, core.fs.hot, 1 << 40)
            assert await trio.to_thread.run_sync(reached.wait, 10)
            if unlinked:
                await core.fs.unlink(ROOT, b"a")
            nursery.start_soon(core.close, fh)
            await trio.sleep(0.3)  # (the close on its way, the punch held)
            gate.set()
        assert seen == [staging]
        assert core.uploads() == [] and core.staged() == []
        if not unlinked:
            assert list(core.objects().values()) == [DATA[:PART + 10]]
