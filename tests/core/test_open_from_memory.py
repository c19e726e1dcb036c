"""Opens answered from memory: a read-only open of a warm file looked up less than
``attr_timeout`` ago makes no warm call, and its warm file is opened by the first call that
needs it. Whatever needs it, a handle reads the file it opened: after an unlink or a rename
over its name through the mount, after a write through another handle, and never the
attributes of a version older than this node's own last close."""

from __future__ import annotations

import errno
import os
import random
import time
from pathlib import Path

import pytest
import trio

from .conftest import ROOT, core_test, open_core, rewrite_in_place


@core_test
async def test_an_open_after_a_lookup_makes_no_warm_call_until_a_read(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"hello")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        calls = core.count_warm_calls()
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        await core.fs.flush(fh)
        assert calls["calls"] == 0
        assert await core.fs.read(fh, 0, 4096) == b"hello"
        assert calls["calls"] == 1  # the open and the first read in one call
        await core.fs.release(fh)


@core_test
async def test_an_open_after_the_attribute_timeout_goes_to_the_warm_tier(tmp_path: Path
                                                                         ) -> None:
    async with open_core(tmp_path, attr_timeout=0.2) as core:
        core.warm_path(b"f").write_bytes(b"old")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        core.warm_path(b"f").write_bytes(b"changed by another node")
        await trio.sleep(0.3)
        calls = core.count_warm_calls()
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert calls["calls"] == 1
        assert (await core.fs.getattr(inode.ino)).size == len(b"changed by another node")
        assert await core.read_all(fh) == b"changed by another node"
        await core.fs.release(fh)


@core_test
async def test_a_file_opened_from_memory_reads_to_the_end_after_an_unlink(tmp_path: Path
                                                                          ) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"still here")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        await core.fs.unlink(ROOT, b"f")
        assert not core.warm_path(b"f").exists()
        assert await core.read_all(fh) == b"still here"
        await core.fs.release(fh)


@core_test
async def test_a_file_opened_from_memory_reads_to_the_end_after_a_rename_over_it(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"the first")
        core.warm_path(b"g").write_bytes(b"the second")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        await core.fs.lookup(ROOT, b"g")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        await core.fs.rename(ROOT, b"g", ROOT, b"f", 0)
        assert await core.read_all(fh) == b"the first"
        await core.fs.release(fh)
        assert await core.read_file(b"f") == b"the second"


@core_test
async def test_a_writer_sharing_a_state_opened_from_memory_stages_the_file(tmp_path: Path
                                                                           ) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"0123456789")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        reader, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        writer, _, _ = await core.fs.open(inode.ino, os.O_WRONLY)
        assert await core.fs.write(writer, 2, b"ab") == 2
        assert await core.read_all(reader) == b"01ab456789"
        await core.close(writer)
        await core.fs.release(reader)
        assert core.warm_path(b"f").read_bytes() == b"01ab456789"


@core_test
async def test_an_open_after_a_close_here_never_answers_from_older_attributes(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"short")
        inode, _ = await core.fs.lookup(ROOT, b"f")  # the warm file's attributes as read
        assert await core.read_file(b"f") == b"short"
        fh, _, _ = await core.fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"a good deal longer")
        await core.close(fh)
        start = time.monotonic()
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)  # (no lookup in between)
        assert time.monotonic() - start < core.fs.config.attr_timeout
        assert (await core.fs.getattr(inode.ino)).size == len(b"a good deal longer")
        assert await core.read_all(fh) == b"a good deal longer"
        await core.fs.release(fh)


@core_test
async def test_an_open_after_a_change_of_names_never_answers_from_older_attributes(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"linked")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        await core.fs.link(inode.ino, ROOT, b"h")
        assert (await core.fs.getattr(inode.ino)).nlink == 2
        await core.fs.unlink(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)  # (no lookup in between)
        assert (await core.fs.getattr(inode.ino)).nlink == 1
        await core.fs.release(fh)
        await core.fs.getattr(inode.ino)  # (read with no open state: remembered)
        await trio.sleep(0.01)
        await core.fs.setxattr(inode.ino, b"user.k", b"v")
        ctime = core.warm_path(b"h").stat().st_ctime_ns
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert (await core.fs.getattr(inode.ino)).ctime_ns == ctime
        await core.fs.release(fh)


@core_test
async def test_a_file_replaced_after_the_lookup_an_open_used_is_stale_never_mixed(
        tmp_path: Path) -> None:
    """Another node replaces the file between the lookup and the first read: the open was
    answered for the old version (the kernel may keep its pages), so the handle's reads fail
    with ESTALE instead of filling gaps with the new file's bytes; a new open reads it."""
    import errno

    import pytest

    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"old content")
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        new = core.warm_path(b"f.tmp")
        new.write_bytes(b"new content, longer")
        os.rename(new, core.warm_path(b"f"))  # as another node publishes
        with pytest.raises(OSError) as raised:
            await core.fs.read(fh, 4, 4096)
        assert raised.value.errno == errno.ESTALE
        await core.fs.release(fh)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.read_all(fh) == b"new content, longer"
        await core.fs.release(fh)


BS = 64 * 1024  # block_size in the core's configuration (conftest)


def blocks(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n * BS)


@core_test
async def test_a_cached_file_opened_from_memory_is_read_without_a_warm_call(tmp_path: Path
                                                                            ) -> None:
    """With warm caching on, a file whose blocks are all cached for the version its lookup
    read is served from the hot tier: the warm file is never opened, nor closed."""
    data = blocks(3, seed=1)
    async with open_core(tmp_path, cache_warm=True) as core:
        await core.write_file(b"f", data)
        assert await core.read_file(b"f") == data
        await core.until(lambda: core.cached_blocks() == 3)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        calls = core.count_warm_calls()
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.read_all(fh, chunk=BS // 2) == data
        await core.fs.flush(fh)
        await core.fs.release(fh)
        assert calls["calls"] == 0


@core_test
async def test_a_handle_opened_from_memory_reads_the_cached_version_whole(tmp_path: Path
                                                                         ) -> None:
    """Another node replaces the file after this node's lookup: a handle opened from that
    lookup reads the version it names, all of it (its blocks are cached), and an open after
    attr_timeout reads the new one."""
    one, two = blocks(2, seed=1), blocks(2, seed=2)
    async with open_core(tmp_path, cache_warm=True, attr_timeout=0.3) as core:
        await core.write_file(b"f", one)
        assert await core.read_file(b"f") == one
        await core.until(lambda: core.cached_blocks() == 2)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        tmp = core.warm_path(b"other-node-temp")
        tmp.write_bytes(two)
        os.rename(tmp, core.warm_path(b"f"))
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert await core.read_all(fh) == one
        await core.fs.release(fh)
        await trio.sleep(0.4)
        assert await core.read_file(b"f") == two


@core_test
async def test_a_handle_that_served_cached_blocks_is_stale_rather_than_mixed(tmp_path: Path
                                                                            ) -> None:
    """Only part of the file is cached, and another node rewrites it in place after the
    lookup: the handle served the cached part of the version it was opened for, so the rest,
    now another version's, fails with ESTALE instead of being read."""
    one, two = blocks(4, seed=1), blocks(4, seed=2)
    async with open_core(tmp_path, cache_warm=True) as core:
        core.warm_path(b"f").write_bytes(one)
        fh = await core.open(b"f")
        assert await core.fs.read(fh, 0, BS) == one[:BS]  # block 1 is read ahead
        await core.fs.release(fh)
        await core.until(lambda: 1 <= core.cached_blocks() < 4)  # (as below)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        rewrite_in_place(core.warm_path(b"f"), two)
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert bytes(await core.fs.read(fh, 0, BS)) == one[:BS]
        with pytest.raises(OSError) as info:
            await core.fs.read(fh, 3 * BS, BS)
        assert info.value.errno == errno.ESTALE
        await core.fs.release(fh)


@core_test
async def test_a_rename_through_the_mount_keeps_a_partly_cached_handle_reading(
        tmp_path: Path) -> None:
    """A rename moves only the file's ctime: the handle reads on, its uncached blocks from
    the warm file, which is opened then."""
    one = blocks(4, seed=1)
    async with open_core(tmp_path, cache_warm=True) as core:
        core.warm_path(b"f").write_bytes(one)
        fh = await core.open(b"f")
        assert await core.fs.read(fh, 0, BS) == one[:BS]
        await core.fs.release(fh)
        # (how many blocks read ahead get stored depends on the pace: at least the one read
        # is; waiting for exactly two failed once under load)
        await core.until(lambda: 1 <= core.cached_blocks() < 4)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert bytes(await core.fs.read(fh, 0, BS)) == one[:BS]
        await core.fs.rename(ROOT, b"f", ROOT, b"g", 0)
        assert await core.read_all(fh) == one
        await core.fs.release(fh)


@core_test
async def test_a_handle_that_kept_the_kernels_pages_is_stale_rather_than_mixed(
        tmp_path: Path) -> None:
    """An open answered from memory that let the kernel keep its pages of the version read
    before: the pages hold that version, so the handle's first read that reaches the daemon
    must not fill their gaps with another content under the same inode number (a new file
    that got the freed number, or the file rewritten in place, as here)."""
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"A" * 10_000)
        assert await core.read_file(b"f") == b"A" * 10_000  # (the kernel keeps the pages)
        inode, _ = await core.fs.lookup(ROOT, b"f")
        fh, keep, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        assert keep
        rewrite_in_place(core.warm_path(b"f"), b"B" * 10_000)  # another node, same inode
        with pytest.raises(OSError) as raised:
            await core.fs.read(fh, 4096, 4096)  # a page the kernel did not keep
        assert raised.value.errno == errno.ESTALE
        await core.fs.release(fh)
        assert await core.read_file(b"f") == b"B" * 10_000


def rewrite_keeping_times(path: Path, data: bytes) -> None:
    """As ``cp -p`` over the file on another node: the same inode, size and mtime (put back);
    only the ctime tells."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@core_test
async def test_warming_never_caches_a_rewrite_under_the_version_it_walked(tmp_path: Path
                                                                          ) -> None:
    """``tierfs warm`` walks the files, then fetches their blocks: a file rewritten between
    the two with its old size and times must not have its new bytes cached as the old
    version's (an open answered from memory would then read them as that version)."""
    from tierfs.vfs.residency import Residency

    async with open_core(tmp_path, cache_warm=True) as core:
        one, two = blocks(4, 1), blocks(4, 2)
        core.warm_path(b"f").write_bytes(one)
        time.sleep(0.01)  # (the ctime moves on at the rewrite)
        residency = Residency(core.fs)
        states = await residency.files(b"f")
        rewrite_keeping_times(core.warm_path(b"f"), two)
        # (Not a failure of the command: the file is another version now, not fetched.)
        assert await residency.warm(states, lambda n: None) == 0
        assert core.cached_blocks() == 0
