"""A warm file's cached blocks are only ever its version's bytes: a block read while another
node rewrote the file in place is served to the handle that asked, as any open file's bytes,
and never kept; a block read through a descriptor number that was closed and given to another
file meanwhile is never kept nor served, and a reader's fetches use a descriptor of their own,
which no publish closes under them."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.vfs import reads
from tierfs.vfs.reads import _read_of

from .conftest import ROOT, core_test, open_core, rewrite_in_place
from .test_publish import warm_files_held_open

BS = 64 * 1024


def blocks(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n * BS)
@core_test
async def test_read_ahead_after_release_never_caches_another_files_bytes(tmp_path: Path
                                                                         ) -> None:
    one, two = blocks(4, 1), blocks(4, 2)
    async with open_core(tmp_path, cache_warm=True) as core:
        core.warm_path(b"f").write_bytes(one)
        core.warm_path(b"g").write_bytes(two)
        warm = core.fs.warm
        inner = warm.run
        gate = trio.Event()

        async def slow(fn: Any, *args: Any) -> Any:
            # The warm tier's threads are busy (a slow NFS server): a read-ahead's pread of
            # block 1 waits in the queue for a while.
            if fn in (os.pread, _read_of) and args[2] >= BS and not gate.is_set():
                await gate.wait()
            return await inner(fn, *args)

        warm.run = slow  # type: ignore[method-assign]
        fh = await core.open(b"f")
        assert bytes(await core.fs.read(fh, 0, BS)) == one[:BS]  # block 1 read ahead
        await trio.sleep(0.05)
        inode_f = await core.lookup_path(b"f")
        f_fd = inode_f.data.warm_fd
        await core.fs.release(fh)  # retire: the warm descriptor is closed
        fh_g = await core.open(b"g")
        assert bytes(await core.fs.read(fh_g, 0, 100)) == two[:100]
        # (f's closed number may be g's descriptor now; the queued read-ahead reads through
        # the reader's own, still open.)
        assert f_fd is not None
        gate.set()  # the queued read-ahead runs now
        await trio.sleep(0.3)
        got = await core.read_file(b"f")
        await core.fs.release(fh_g)
        assert got[BS:2 * BS] != two[BS:2 * BS], "f's block 1 is g's bytes"
        assert got == one


@core_test
async def test_an_in_place_rewrite_is_never_cached_as_the_version_opened(tmp_path: Path
                                                                         ) -> None:
    one, two = blocks(4, 1), blocks(4, 2)
    async with open_core(tmp_path, cache_warm=True, attr_timeout=5) as core:
        core.warm_path(b"f").write_bytes(one)
        inode, _ = await core.fs.lookup(ROOT, b"f")  # this node's lookup: version one
        fh, _, _ = await core.fs.open(inode.ino, 0)
        assert bytes(await core.fs.read(fh, 0, BS)) == one[:BS]  # block 1 read ahead
        await core.until(lambda: core.cached_blocks() == 2)
        rewrite_in_place(core.warm_path(b"f"), two)  # another node, same size, new mtime
        # The open handle reads on through its descriptor (as any open file: the new bytes),
        # which are not kept as version one's...
        assert bytes(await core.fs.read(fh, 2 * BS, 2 * BS)) == two[2 * BS:]
        await trio.sleep(0.2)
        assert core.cached_blocks() == 2
        await core.fs.release(fh)
        # ... and an open answered from the lookup of version one must read version one whole
        # (its blocks are all cached "for it"), never a mix with version two.
        fh, _, _ = await core.fs.open(inode.ino, 0)
        try:
            got = await core.read_all(fh)
        except OSError as e:
            assert e.errno == errno.ESTALE  # (what it lacks of version one is gone)
        else:
            assert got == one, "version one's handle served version two's blocks"
        await core.fs.release(fh)
        assert core.cached_blocks() == 2
        # A later open, past attr_timeout, reads version two whole.
        inode.seen = None
        assert await core.read_file(b"f") == two


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_a_block_fetch_waiting_for_a_thread_reads_the_file_a_publish_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by_rename: bool) -> None:
    """A reader's block fetch waits for a warm thread while another handle writes and
    fsyncs: the publish closes the warm descriptor the fetch was given, and the next file
    opened gets its number, often with the replaced file's inode number too (ext4 gives a
    freed one to the next file made), so the check after the read passed and the other
    file's bytes were served. The fetch now reads through the reader's own descriptor."""
    old = b"o" * 50_000
    gate, reached = threading.Event(), threading.Event()
    read_of, seen = reads._read_of, []

    def held(fd: int, view: memoryview, offset: int, version: Any) -> tuple[int, bool]:
        if not reached.is_set():
            reached.set()
            gate.wait(20)
            seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return read_of(fd, view, offset, version)

    monkeypatch.setattr(reads, "_read_of", held)
    async with open_core(tmp_path, cache_warm=True, by_rename=by_rename) as core:
        await core.write_file(b"f", old)
        await core.evict(b"f")
        w = await core.open(b"f", os.O_RDWR)
        r = await core.open(b"f", os.O_RDONLY)
        got: list[object] = []

        async def read() -> None:
            got.append(bytes(await core.fs.read(r, 0, len(old))))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            assert await trio.to_thread.run_sync(reached.wait, 10)
            await core.fs.write(w, 0, b"NEW")
            await core.fs.fsync(w)  # published: the old warm file's descriptor closed
            other = os.open(tmp_path / "warm" / "g", os.O_CREAT | os.O_RDWR, 0o644)
            os.write(other, b"G" * len(old))
            gate.set()
        os.close(other)
        assert seen and seen[0].startswith(str(core.warm_path(b"f"))), seen
        assert got == [old]
        await core.close(w)
        await core.close(r)


def deleted_files_open(under: Path) -> list[str]:
    """Files under ``under`` this process holds open though their names are gone."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)) and target.endswith("(deleted)"):
            out.append(target)
    return out


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_a_publish_lets_go_of_the_readers_descriptor_of_the_file_it_replaced(
        tmp_path: Path, by_rename: bool) -> None:
    """The warm reader's own descriptor (above) was dropped only by the next reader or the
    last close: the file a publish replaced stayed open while the handle did, its blocks
    kept, and on a network file system a hidden name left in the shared tree."""
    old = blocks(4, 3)
    async with open_core(tmp_path, cache_warm=True, by_rename=by_rename) as core:
        await core.write_file(b"f", old)
        await core.evict(b"f")
        fh = await core.open(b"f", os.O_RDWR)
        assert bytes(await core.fs.read(fh, 0, 1000)) == old[:1000]
        await core.fs.write(fh, 0, b"NEW")
        await core.fs.fsync(fh)
        await core.until(lambda: deleted_files_open(tmp_path / "warm") == [])
        assert bytes(await core.fs.read(fh, 0, 1000)) == b"NEW" + old[3:1000]
        await core.close(fh)


@core_test
async def test_a_reader_made_while_its_publish_ends_reads_on(tmp_path: Path) -> None:
    """A cold file rewritten small goes warm; its publish then deletes the replaced object
    (an await after the rename). A read meanwhile made the warm reader and its descriptor,
    which the publish's end let go of as the replaced file's: every later fetch of that
    reader failed with ESTALE (the first fix of the descriptor left open)."""
    async with open_core(tmp_path, cache_warm=True, by_rename=True,
                         large_file_threshold="256KiB") as core:
        await core.write_file(b"f", blocks(8, 1))
        await core.until(lambda: core.stub(b"f") is not None)
        new = blocks(3, 2)
        inode = await core.lookup_path(b"f")
        r = await core.open(b"f", os.O_RDONLY)
        w, _, _ = await core.fs.open(inode.ino, os.O_RDWR | os.O_TRUNC)
        await core.write_all(w, new)
        hold = core.store.hold_after("delete")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(core.fs.fsync, w)
            assert await trio.to_thread.run_sync(hold.reached.wait, 10)
            assert core.stub(b"f") is None  # warm now, the old object being deleted
            assert bytes(await core.fs.read(r, 0, 100)) == new[:100]
            hold.release()
        await trio.sleep(0.2)
        await core.evict(b"f")
        for _ in range(2):
            assert bytes(await core.fs.read(r, 2 * BS, BS)) == new[2 * BS:]
        await core.close(w)
        await core.close(r)


def open_under(path: Path) -> int:
    """Descriptors of this process on ``path``."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
        except OSError:
            pass
    return n


@core_test
async def test_a_fetch_resuming_after_the_last_close_makes_no_descriptor(tmp_path: Path
                                                                         ) -> None:
    """Two read-ahead fetches of an open answered from memory: one opens the warm file, the
    other waits for that open, and resumes after the handle's last close has let the file
    go, its descriptors being closed in a thread. It made a reader's descriptor from the
    number being closed (another file's by then, or EBADF), and that descriptor was never
    closed. (Sixteen files: the order of the waiting tasks varies.)"""
    outcomes: list[str] = []
    async with open_core(tmp_path, cache_warm=True, attr_timeout=5) as core:
        warm = core.fs.warm
        inner = warm.run
        state: dict[str, Any] = {}

        async def gated(fn: Any, *args: Any) -> Any:
            if getattr(fn, "__name__", "") == "open_and_read" and "open_gate" in state:
                await state["open_gate"].wait()
            if fn is reads._read_of and "read_gate" in state:
                if not state.get("released"):
                    state["released"] = True
                    state["nursery"].start_soon(core.fs.release, state["fh"])
                await state["read_gate"].wait()
            return await inner(fn, *args)

        warm.run = gated  # type: ignore[method-assign]
        for i in range(16):
            name = f"f{i}".encode()
            core.warm_path(name).write_bytes(blocks(4, i))
            inode, _ = await core.fs.lookup(ROOT, name)
            fh, _, _ = await core.fs.open(inode.ino, 0)
            data = inode.data
            assert data is not None and data.warm_deferred and data.warm_id is not None
            fetch = core.fs.reads._fetch_unopened(inode, data, data.warm_id)
            state.clear()
            state.update(open_gate=trio.Event(), read_gate=trio.Event(), fh=fh)
            results: list[str] = []

            async def one(start: int) -> None:
                try:
                    await fetch(start, BS)
                    results.append("ok")
                except OSError as e:
                    results.append(f"{type(e).__name__}:{e.errno}")

            async with trio.open_nursery() as nursery:
                state["nursery"] = nursery
                nursery.start_soon(one, BS)
                await trio.sleep(0.02)
                nursery.start_soon(one, 2 * BS)
                await trio.sleep(0.02)
                state["open_gate"].set()
                with trio.fail_after(5):
                    while inode.data is not None or not state.get("released"):
                        await trio.sleep(0.01)
                await trio.sleep(0.1)
                state["read_gate"].set()
            await trio.sleep(0.1)
            outcomes.append(f"{name!r}: {results}, {open_under(core.warm_path(name))} left "
                            f"open, reader's descriptor {data.reader_fd}")
            assert not [r for r in results if r.endswith(f":{errno.EBADF}")], outcomes
    assert all(" 0 left open" in o and "descriptor None" in o for o in outcomes), outcomes


class GatedRead:
    """A read of an open file whose ``pread`` waits, as for a thread of a busy tier, until
    ``gate`` is set; ``seen``: what its descriptor named when it went on, ``got``: what the
    read returned (or raised)."""

    def __init__(self, core: Any, tier: Any, fh: int, size: int) -> None:
        self.core, self.tier, self.fh, self.size = core, tier, fh, size
        self.gate, self.reached = trio.Event(), trio.Event()
        self.seen: list[str] = []
        self.got: list[object] = []
        self.inner = tier.run
        tier.run = self._slow

    async def _slow(self, fn: Any, *args: Any) -> Any:
        if fn in (os.pread, getattr(reads, "_pread_own", None)) and not self.gate.is_set():
            self.reached.set()
            await self.gate.wait()
            try:
                self.seen.append(os.readlink(f"/proc/self/fd/{args[0]}"))
            except OSError as e:
                self.seen.append(str(e))
        return await self.inner(fn, *args)

    async def read(self) -> None:
        try:
            self.got.append(bytes(await self.core.fs.read(self.fh, 0, self.size)))
        except OSError as e:
            self.got.append(e)
        finally:
            self.tier.run = self.inner


@pytest.mark.parametrize("by_rename", [True, False])
@core_test
async def test_a_plain_warm_read_waiting_for_a_thread_never_reads_the_file_a_publish_closed(
        tmp_path: Path, by_rename: bool) -> None:
    """The same, with warm caching off (the default over a local warm tier): a read's
    ``pread`` was handed ``warm_fd`` itself, and a publish by another handle closed it while
    the read waited for a thread, so the read went to whatever file got the number next."""
    old, other = b"o" * 50_000, b"G" * 50_000
    async with open_core(tmp_path, cache_warm=False, by_rename=by_rename) as core:
        await core.write_file(b"f", old)
        w = await core.open(b"f", os.O_RDWR)  # (opens the warm file: reads go to warm_fd)
        r = await core.open(b"f", os.O_RDONLY)
        gated = GatedRead(core, core.fs.warm, r, len(old))  # (a slow NFS server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gated.read)
            await gated.reached.wait()
            await core.fs.write(w, 0, b"NEW")
            await core.fs.fsync(w)  # published: the old warm file's descriptor closed
            g = os.open(tmp_path / "warm" / "g", os.O_CREAT | os.O_RDWR, 0o644)
            os.write(g, other)
            gated.gate.set()
        os.close(g)
        seen, got = gated.seen, gated.got
        assert seen and seen[0].startswith(str(core.warm_path(b"f"))), seen
        assert got in ([old], [b"NEW" + old[3:]]), got[0] if got else got
        await core.close(w)
        await core.close(r)


@pytest.mark.parametrize("reuse", [False, True])
@core_test
async def test_a_staged_read_waiting_for_a_thread_never_reads_a_closed_staging_descriptor(
        tmp_path: Path, reuse: bool) -> None:
    """A read of a staged file handed ``staging_fd`` itself to a hot thread. While it waited,
    the writer's fsync published by rename (staging became the warm file) and the next one
    replaced that file, closing the number: the read failed with EBADF, or read the file that
    got the number next (thrown away by the check after it, unless that file was a pipe)."""
    old, other = b"o" * 50_000, b"G" * 50_000
    async with open_core(tmp_path, by_rename=True) as core:
        await core.write_file(b"f", old)
        w = await core.open(b"f", os.O_RDWR)
        await core.fs.write(w, 0, b"AAA")  # staged: reads go to staging
        r = await core.open(b"f", os.O_RDONLY)
        gated = GatedRead(core, core.fs.hot, r, len(old))
        g = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gated.read)
            await gated.reached.wait()
            await core.fs.fsync(w)  # by rename: staging becomes the warm file
            await core.fs.write(w, 0, b"BBB")  # staged again
            await core.fs.fsync(w)  # by rename again: the first staging file's number closed
            if reuse:
                g = os.open(tmp_path / "warm" / "g", os.O_CREAT | os.O_RDWR, 0o644)
                os.write(g, other)
            gated.gate.set()
        if g is not None:
            os.close(g)
        seen, got = gated.seen, gated.got
        assert seen and "Bad file descriptor" not in seen[0], seen
        assert not seen[0].startswith(str(core.warm_path(b"g"))), seen
        assert got in ([b"AAA" + old[3:]], [b"BBB" + old[3:]]), got
        await core.close(w)
        await core.close(r)


@pytest.mark.parametrize("cache_warm", [False, True])
@core_test
async def test_a_read_created_file_is_not_held_open_on_the_warm_tier_at_its_publish(
        tmp_path: Path, cache_warm: bool) -> None:
    """A read of a file this open created (O_DIRECT, or a stale size) made the readers' own
    descriptor of it, which the close of the created file before a publish by copy renames
    over it (``WarmPublisher._let_go_of_created``: no NFS silly rename) left open: the file
    was held across the rename. A plain read keeps no descriptor now."""
    async with open_core(tmp_path, by_rename=False, cache_warm=cache_warm) as core:
        fh = await core.create(b"f", mode=0o640, flags=os.O_RDWR)
        assert bytes(await core.fs.read(fh, 0, 4096)) == b""
        await core.write_all(fh, b"abc")
        warm = core.fs.warm
        real = warm.replace
        at_rename: list[list[str]] = []

        def replace(*args: Any) -> Any:
            at_rename.append(warm_files_held_open(core))
            return real(*args)

        warm.replace = replace  # type: ignore[method-assign]
        try:
            await core.fs.fsync(fh)
        finally:
            warm.replace = real  # type: ignore[method-assign]
        assert core.warm_path(b"f").read_bytes() == b"abc"
        assert at_rename == [[]], f"held open as the publish renamed over it: {at_rename}"
        await core.close(fh)
