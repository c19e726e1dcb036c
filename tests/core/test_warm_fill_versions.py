"""``tierfs warm`` (``BlockCache.fill``) arriving while a reader's fetch of the same warm block
is under way shares that load: if the file was rewritten in place meanwhile (another node),
the bytes are ``Unkept`` and ``fill`` fails rather than keep the new version's bytes under the
old version's name, where an open answered from memory for the old version would read them."""

from __future__ import annotations

import errno
import random
from pathlib import Path
from typing import Any

import trio

from tierfs.cache.entries import block_key
from tierfs.vfs.reads import _read_of
from tierfs.vfs.residency import Residency

from .conftest import ROOT, core_test, open_core, rewrite_in_place

BS = 64 * 1024


def blocks(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n * BS)


@core_test
async def test_warming_never_keeps_a_readers_unkept_block(tmp_path: Path) -> None:
    one, two = blocks(4, 1), blocks(4, 2)
    async with open_core(tmp_path, cache_warm=True, attr_timeout=5) as core:
        core.warm_path(b"f").write_bytes(one)
        inode, _ = await core.fs.lookup(ROOT, b"f")  # version one
        warm = core.fs.warm
        inner = warm.run
        gate = trio.Event()

        async def slow(fn: Any, *args: Any) -> Any:
            # A slow warm tier: the reader's read-ahead of block 1 waits in the queue.
            if fn is _read_of and args[2] >= BS and not gate.is_set():
                await gate.wait()
            return await inner(fn, *args)

        warm.run = slow  # type: ignore[method-assign]
        fh, _, _ = await core.fs.open(inode.ino, 0)
        assert bytes(await core.fs.read(fh, 0, BS)) == one[:BS]  # block 1 read ahead
        await trio.sleep(0.05)
        residency = Residency(core.fs)
        states = await residency.files(b"f")  # version one, as the walk saw it
        sid = states[0].source.id
        done = trio.Event()

        async def run_warm() -> None:
            try:
                await residency.warm(states, lambda n: None)
            except OSError:
                pass  # (its own fetches of the other blocks find the rewrite: ESTALE)
            finally:
                done.set()

        core.nursery.start_soon(run_warm)
        await trio.sleep(0.2)  # the fill of block 1 shares the reader's load
        rewrite_in_place(core.warm_path(b"f"), two)  # another node, same size
        gate.set()
        await done.wait()
        await trio.sleep(0.2)
        cache = core.fs.cache
        key = block_key(sid, 1)
        await core.fs.release(fh)
        # An open answered from the lookup of version one reads version one, or ESTALE.
        fh, _, _ = await core.fs.open(inode.ino, 0)
        try:
            got = await core.read_all(fh)
        except OSError as e:
            assert e.errno == errno.ESTALE
        else:
            assert got[BS:2 * BS] != two[BS:2 * BS], "version two's block kept as one's"
            assert got == one
        await core.fs.release(fh)
        assert key not in cache.entries, "block 1 of version one holds version two's bytes"
