"""An open of a cold file waits for its object's owner check (a HEAD) after reading the stub;
a promotion or an unlink through this mount in that gap sees no open state, and may delete
the object. The open is then stale (the kernel looks the name up again), never a handle
whose reads fail: an open either fails so, or reads the file's bytes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import trio

from .conftest import PART, ROOT, Core, core_test, open_core
from .faults import FaultStore

DATA = bytes(range(256)) * (3 * PART // 256 + 17)


async def demoted(tmp_path: Path, **overrides: str) -> FaultStore:
    """``big.bin`` moved to the bucket by a first mount; its store, for the next."""
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "warm" / "big.bin").write_bytes(DATA)
    async with open_core(tmp_path, **overrides) as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
    return c.store


def open_in_the_background(c: Core, ino: int, opens: int = 1) -> list[int | OSError]:
    """Start ``opens`` opens of ``ino``; each appends its handle or its error."""
    handles: list[int | OSError] = []

    async def opener() -> None:
        try:
            fh, _, _ = await c.fs.open(ino, os.O_RDONLY)
        except OSError as e:
            handles.append(e)
        else:
            handles.append(fh)

    for _ in range(opens):
        c.nursery.start_soon(opener)
    return handles


@core_test
async def test_an_open_in_flight_is_not_broken_by_a_promotion(tmp_path: Path) -> None:
    store = await demoted(tmp_path, large_file_threshold="1GiB")
    async with open_core(tmp_path, store=store, large_file_threshold="1GiB") as c:
        inode = await c.lookup_path(b"big.bin")
        hold = c.store.hold_after("head", 1)  # the open's owner check
        handles = open_in_the_background(c, inode.ino)
        await trio.to_thread.run_sync(hold.reached.wait)
        outcome = await c.fs.demoter.promote(b"big.bin")
        hold.release()
        await c.until(lambda: bool(handles))
        fh = handles[0]
        if isinstance(fh, OSError):
            assert fh.errno == errno.ESTALE and outcome.done
            assert await c.read_file(b"big.bin") == DATA  # (the promoted file)
            return
        got = await c.read_all(fh)
        await c.fs.release(fh)
        assert got == DATA, (outcome, len(got))


@core_test
async def test_an_open_in_flight_is_not_broken_by_an_unlink(tmp_path: Path) -> None:
    """The same gap with an unlink through this mount: the unlink sees no open state and
    deletes the object at once (an unlinked file must stay readable by a handle opened
    before the unlink returned, so such an open is stale)."""
    store = await demoted(tmp_path)
    async with open_core(tmp_path, store=store) as c:
        inode = await c.lookup_path(b"big.bin")
        hold = c.store.hold_after("head", 1)  # the open's owner check
        handles = open_in_the_background(c, inode.ino)
        await trio.to_thread.run_sync(hold.reached.wait)
        unlinked = trio.Event()

        async def unlink() -> None:
            await c.fs.unlink(ROOT, b"big.bin")
            unlinked.set()

        c.nursery.start_soon(unlink)
        with trio.move_on_after(2):
            await unlinked.wait()
        hold.release()
        await c.until(lambda: bool(handles))
        await unlinked.wait()
        fh = handles[0]
        if isinstance(fh, OSError):
            assert fh.errno == errno.ESTALE
            return
        got = await c.read_all(fh)
        await c.fs.release(fh)
        assert got == DATA


@core_test
async def test_opens_of_one_cold_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Several opens of one cold file at once (a DataLoader's workers) each read its stub: the
    check above must not take the others' reading of it for a change."""
    store = await demoted(tmp_path)
    async with open_core(tmp_path, store=store) as c:
        inode = await c.lookup_path(b"big.bin")
        hold = c.store.hold_after("head", 1)
        handles = open_in_the_background(c, inode.ino, opens=3)
        await trio.to_thread.run_sync(hold.reached.wait)
        await trio.sleep(0.1)
        hold.release()
        await c.until(lambda: len(handles) == 3)
        for fh in handles:
            assert isinstance(fh, int)
            assert await c.read_all(fh, 4096) == DATA[:4096]
            await c.fs.release(fh)
