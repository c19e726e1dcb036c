"""A warm file's cached blocks are only ever its version's bytes: a block read while another
node rewrote the file in place is served to the handle that asked, as any open file's bytes,
and never kept; a block read through a descriptor number that was closed and given to another
file meanwhile is never kept nor served."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any

import trio

from tierfs.vfs.reads import _read_of

from .conftest import ROOT, core_test, open_core, rewrite_in_place

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
        inode_g = await core.lookup_path(b"g")
        assert inode_g.data.warm_fd == f_fd  # (the freed number, as the kernel gives it)
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
