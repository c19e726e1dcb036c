"""A create named later (``core.naming``) at its edges: another node's file at the name (its
owner and content), a directory fsynced, a failed name heard by every close of its writer and
retried, listings while saves go on, and the directory's attributes after names made side by
side. Each compares with what a create named at once gives."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import pytest
import trio

from .conftest import Core, core_test, open_core
from .test_named_later import DATA, SAVE, first_file, gate_names, open_soon, pending

OTHER = b"the other node's bytes " * 1000


def slow_names(core: Core, before: Callable[[int], float], after: Callable[[int], float]
               ) -> None:
    """The warm call that makes the n-th pending name (0, 1, ...) waits ``before(n)``
    seconds before it and ``after(n)`` after it."""
    warm = core.fs.warm
    inner = warm.run
    count = [0]

    async def run(fn: Callable[..., Any], *args: object) -> Any:
        if getattr(fn, "__name__", "") == "make" and args[-1] is True:
            n = count[0]
            count[0] += 1
            await trio.sleep(before(n))
            out = await inner(fn, *args)
            await trio.sleep(after(n))
            return out
        return await inner(fn, *args)

    warm.run = run  # type: ignore[method-assign]


@core_test
async def test_a_file_another_node_made_at_the_name_is_truncated(tmp_path: Any) -> None:
    """As open(O_CREAT | O_TRUNC): empty, even with nothing written, and read so."""
    async with open_core(tmp_path, durability="writeback") as core:
        d = await first_file(core)
        gate = gate_names(core)
        empty = await core.create(b"d/empty", flags=SAVE)
        fh, _, inode, attrs = await core.fs.create(d, b"read", 0o644,
                                                   os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                                                   os.getuid(), os.getgid())
        assert attrs.size == 0
        core.warm_path(b"d/empty").write_bytes(OTHER)  # another node, meanwhile
        core.warm_path(b"d/read").write_bytes(OTHER)
        gate.set()
        await core.close(empty)  # (an empty save: open(path, "wb").close())
        assert await core.fs.read(fh, 0, 4096) == b""
        assert (await core.fs.getattr(inode.ino)).size == 0
        await core.close(fh)
        assert await core.publish_all() == []
        for name in (b"d/empty", b"d/read"):
            assert await core.size_of(name) == 0
            assert core.warm_path(name).read_bytes() == b""


@core_test
async def test_a_file_of_another_user_at_the_name_is_left_alone(tmp_path: Any) -> None:
    """Another user's read-only file made at the name meanwhile: open(2) would have refused
    it; the save's close says so and the file keeps its bytes."""
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        os.chmod(core.warm_path(b"d"), 0o777)  # (anyone may create there)
        gate = gate_names(core)
        d = (await core.lookup_path(b"d")).ino
        fh, _, _, _ = await core.fs.create(d, b"theirs", 0o644, SAVE, 4242, 4242)
        theirs = core.warm_path(b"d/theirs")
        theirs.write_bytes(OTHER)
        os.chown(theirs, 4343, 4343)
        os.chmod(theirs, 0o444)
        gate.set()
        await core.fs.write(fh, 0, b"mine")
        with pytest.raises(OSError) as failed:
            await core.close(fh)
        assert failed.value.errno == errno.EACCES
        assert await core.publish_all() == []
        assert theirs.read_bytes() == OTHER


@core_test
async def test_fsync_of_the_directory_makes_pending_names(tmp_path: Any) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        d = await first_file(core)
        dh = await core.fs.opendir(d)  # (held open, as a database holds its directory)
        gate = gate_names(core)
        fh = await core.create(b"d/new", flags=SAVE)
        await core.write_all(fh, DATA)
        open_soon(core, gate, 0.1)
        await core.fs.fsyncdir(dh)
        assert core.warm_path(b"d/new").exists()
        assert pending(core) == 0
        await core.close(fh)
        await core.fs.releasedir(dh)


@core_test
async def test_a_failed_name_fails_every_close_and_a_retry_makes_it(tmp_path: Any) -> None:
    """Every flush of the writer's handle (a dup's close too) hears the failure; an open of
    the inode after it is stale, so the kernel looks the name up again, finds nothing and
    creates the file anew."""
    async with open_core(tmp_path, durability="writeback") as core:
        d = await first_file(core)
        warm = core.fs.warm
        inner = warm.run
        fail = [True]

        async def run(fn: Callable[..., Any], *args: object) -> Any:
            if getattr(fn, "__name__", "") == "make" and args[-1] is True and fail[0]:
                fail[0] = False
                raise OSError(errno.EDQUOT, "quota")
            return await inner(fn, *args)

        warm.run = run  # type: ignore[method-assign]
        fh, _, inode, _ = await core.fs.create(d, b"x", 0o644, SAVE, os.getuid(), os.getgid())
        await core.write_all(fh, DATA)
        for _ in range(2):  # (the dup's close, then the file's)
            with pytest.raises(OSError) as failed:
                await core.fs.flush(fh)
            assert failed.value.errno == errno.EDQUOT
        await core.fs.release(fh)
        with pytest.raises(OSError) as stale:
            await core.fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
        assert stale.value.errno == errno.ESTALE
        with pytest.raises(FileNotFoundError):
            await core.fs.lookup(d, b"x")
        fh, _, _, _ = await core.fs.create(d, b"x", 0o644, SAVE, os.getuid(), os.getgid())
        await core.write_all(fh, DATA)
        await core.close(fh)
        assert await core.publish_all() == []
        assert core.warm_path(b"d/x").read_bytes() == DATA


@core_test
async def test_a_listing_waits_only_for_names_pending_when_it_came(tmp_path: Any) -> None:
    """Writers saving file after file: an ls of another directory is not held back for as
    long as they go on."""
    async with open_core(tmp_path, durability="writeback") as core:
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        d = await first_file(core)
        other = await core.mkdirs(b"other")
        slow_names(core, lambda n: 0.01 + (n % 7) * 0.005, lambda n: 0.0)
        stop = trio.Event()

        async def writer(i: int) -> None:
            n = 0
            while not stop.is_set():
                fh, _, _, _ = await core.fs.create(d, b"w%d-%d" % (i, n), 0o644, SAVE,
                                                   os.getuid(), os.getgid())
                await core.write_all(fh, b"x" * 100)
                await core.close(fh)
                n += 1

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(writer, i)
            await trio.sleep(0.2)
            started = trio.current_time()
            with trio.move_on_after(3.0):
                dh = await core.fs.opendir(other)
                await core.fs.releasedir(dh)
            waited = trio.current_time() - started
            stop.set()
        assert waited < 1.0


@core_test
async def test_the_directory_after_names_made_side_by_side(tmp_path: Any) -> None:
    """The name that finishes last read the directory before the other's create: the later
    attributes are kept."""
    async with open_core(tmp_path, durability="writeback", attr_timeout=5.0) as core:
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        d = await first_file(core)
        slow_names(core, lambda n: 0.0 if n == 0 else 0.05, lambda n: 0.3 if n == 0 else 0.0)
        a = await core.create(b"d/a", flags=SAVE)
        b = await core.create(b"d/b", flags=SAVE)
        assert pending(core) == 2
        await core.close(a)
        await core.close(b)
        attrs = await core.fs.getattr(d)
        assert attrs.mtime_ns == os.stat(core.warm_path(b"d")).st_mtime_ns


@core_test
async def test_a_file_of_this_mount_linked_at_the_name_is_left_alone(tmp_path: Any) -> None:
    """Another node links, at the name being made, a file this mount knows under another
    name: the save's close fails (two inodes would name one file) and that file keeps its
    bytes."""
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        await core.write_file(b"d/mine", b"precious " * 1000)
        assert await core.publish_all() == []
        await core.lookup_path(b"d/mine")
        gate = gate_names(core)
        fh = await core.create(b"d/x", flags=SAVE)
        await core.write_all(fh, DATA)
        os.link(core.warm_path(b"d/mine"), core.warm_path(b"d/x"))
        gate.set()
        with pytest.raises(OSError) as failed:
            await core.close(fh)
        assert failed.value.errno == errno.EEXIST
        assert core.warm_path(b"d/mine").read_bytes() == b"precious " * 1000


@core_test
async def test_after_a_failed_name_the_next_create_there_fails_at_once(tmp_path: Any
                                                                       ) -> None:
    async with open_core(tmp_path, durability="writeback", attr_timeout=5.0) as core:
        d = await first_file(core)
        gate = gate_names(core)
        fh = await core.create(b"d/one", flags=SAVE)
        await core.write_all(fh, DATA)
        os.remove(core.warm_path(b"d/first"))  # another node removes the directory
        os.rmdir(core.warm_path(b"d"))
        gate.set()
        with pytest.raises(OSError) as failed:
            await core.close(fh)
        assert failed.value.errno == errno.ENOENT
        with pytest.raises(OSError) as again:
            await core.fs.create(d, b"two", 0o644, SAVE, os.getuid(), os.getgid())
        assert again.value.errno == errno.ENOENT
        assert pending(core) == 0


@core_test
async def test_a_create_that_cannot_write_is_named_at_once(tmp_path: Any) -> None:
    """O_RDONLY | O_CREAT | O_TRUNC: no close of it would hear a name that failed."""
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        gate_names(core)  # (never set)
        fh = await core.create(b"d/r", flags=os.O_RDONLY | os.O_CREAT | os.O_TRUNC)
        assert pending(core) == 0
        assert core.warm_path(b"d/r").exists()
        await core.close(fh)


@core_test
async def test_a_save_may_get_the_number_of_a_file_removed_elsewhere(tmp_path: Any) -> None:
    """The warm file system gives a freed inode number to the next file at once: a file
    this mount still knows (a kernel lookup held), removed by another node, lends it to the
    save's new file, which is a new file here too, as for a create named at once
    (``InodeTable.resolve``)."""
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        await core.write_file(b"d/old", b"old shard")
        assert await core.publish_all() == []
        old = await core.lookup_path(b"d/old")
        old_number = core.warm_path(b"d/old").stat().st_ino
        os.unlink(core.warm_path(b"d/old"))  # another node removes the old checkpoint
        fh = await core.create(b"d/new", flags=SAVE)
        assert pending(core) == 1
        await core.write_all(fh, DATA)
        await core.close(fh)
        assert await core.publish_all() == []
        assert core.warm_path(b"d/new").read_bytes() == DATA
        new = await core.lookup_path(b"d/new")
        assert new.ino != old.ino
        if core.warm_path(b"d/new").stat().st_ino != old_number:
            pytest.skip("the warm file system gave the new file another number")


@core_test
async def test_a_file_another_node_removes_before_it_is_adopted_is_made_again(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node makes a file at the name (the create with O_EXCL finds it) and removes it
    before it is opened to be adopted: open(2) without O_EXCL would have made the file, and
    so does the name. It failed with ENOENT, and the save's close said so."""
    async with open_core(tmp_path, durability="writeback") as core:
        await first_file(core)
        warm = core.fs.warm
        real_open = warm.open
        path = core.warm_path(b"d/ckpt")
        steps: list[str] = []

        def other_node_open(rel: bytes, flags: int, mode: int = 0o600) -> int:
            if rel == b"d/ckpt" and flags & os.O_EXCL and not steps:
                path.write_bytes(OTHER)  # made just before our create
                steps.append("made")
            elif rel == b"d/ckpt" and not flags & os.O_CREAT and steps == ["made"]:
                path.unlink()  # removed just before our open of it
                steps.append("removed")
            return real_open(rel, flags, mode)

        monkeypatch.setattr(warm, "open", other_node_open)
        fh = await core.create(b"d/ckpt", flags=SAVE)
        await core.write_all(fh, DATA)
        await core.close(fh)
        assert steps == ["made", "removed"]
        assert await core.publish_all() == []
        assert core.warm_path(b"d/ckpt").read_bytes() == DATA
        assert await core.read_file(b"d/ckpt") == DATA
