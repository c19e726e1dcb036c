"""Two nodes uploading to one key: a large file rewritten on both at once (every rank of a
job saving the same checkpoint path). Each upload goes to the file's own key, so the later
completion replaces the earlier one's object; the stubs must end up naming what the bucket
holds, whichever order the two stubs are put in place."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio

from .conftest import core_test, open_core


def content(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@core_test
async def test_a_stub_put_in_place_after_a_later_completion_follows_the_object(
        tmp_path: Path) -> None:
    first, from_a, from_b = (content(256 * 1024, seed) for seed in (1, 2, 3))
    (tmp_path / "hot-b").mkdir(mode=0o700)
    async with open_core(tmp_path, large_file_threshold="64KiB") as a, \
            open_core(tmp_path, hot=str(tmp_path / "hot-b"),
                      large_file_threshold="64KiB") as b:
        await a.write_file(b"ckpt", first)
        key = a.cold(b"ckpt").key
        # A completes its rewrite, and its reply is slow to come back; meanwhile B rewrites
        # the file to the same key and puts its stub in place; then A's stub goes in.
        hold = a.store.hold_after("complete_multipart")
        done = trio.Event()

        async def rewrite_on_a() -> None:
            try:
                await a.write_file(b"ckpt", from_a)
            finally:
                done.set()

        a.nursery.start_soon(rewrite_on_a)
        try:
            await a.until(hold.reached.is_set)
            await b.write_file(b"ckpt", from_b)
            assert b.cold(b"ckpt").key == key  # (both uploads went to the file's own key)
        finally:
            hold.release()
        await done.wait()
        assert a.objects() == {key: from_b}  # B's completion came last
        for node in (a, b):
            assert await node.read_file(b"ckpt") == from_b
    async with open_core(tmp_path, large_file_threshold="64KiB") as again:
        assert await again.read_file(b"ckpt") == from_b


@core_test
async def test_recovery_aborts_only_its_own_upload_of_a_shared_key(tmp_path: Path) -> None:
    """A node killed while streaming a file that another node streams too (same key) aborts
    only its own upload at recovery: its upload id is committed to the journal before any
    part goes up. It had been left to the next batch, and recovery then aborted every upload
    of the key, the other node's too (whose close then failed, its parts gone)."""
    from .conftest import PART

    (tmp_path / "hot-b").mkdir(mode=0o700)
    from_b = content(PART + 1000, 5)
    async with open_core(tmp_path, hot=str(tmp_path / "hot-b"),
                         large_file_threshold="64KiB") as b:
        fb = await b.create(b"ckpt")
        await b.write_all(fb, from_b)
        await b.until(lambda: len(b.uploads()) == 1)
        async with open_core(tmp_path, large_file_threshold="64KiB") as a:
            a.store.fail_always("upload_part")  # (nothing of A's recorded by a part)
            fa = await a.open(b"ckpt", os.O_WRONLY)
            await a.write_all(fa, content(PART + 1000, 6))
            await a.until(lambda: a.store.calls["upload_part"] > 0)
            store = a.store
            a.crash()
        store.heal()
        async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
            await again.recover()
        assert len(b.uploads()) == 1  # B's, still there
        await b.close(fb)
        assert await b.read_file(b"ckpt") == from_b


@core_test
async def test_a_name_removed_by_another_node_before_the_stub_swap_leaves_nothing(
        tmp_path: Path) -> None:
    """The file is gone for everyone: its close succeeds as after an unlink here, and its
    object is deleted (it had been left in the bucket, named by nothing, and the close
    failed with ENOENT)."""
    from .conftest import PART

    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        fh = await core.create(b"f")
        await core.write_all(fh, content(PART + 1000, 1))
        os.unlink(core.warm_path(b"f"))  # another node's rm
        await core.close(fh)
        assert core.objects() == {} and core.uploads() == []
        assert core.journal() == {}


@core_test
async def test_a_crash_between_an_fsyncs_completion_and_its_stub_keeps_the_fsynced_content(
        tmp_path: Path) -> None:
    """A cold file rewritten under its own key and fsynced while still open: the completion
    replaces the object the old stub names. Killed before the new stub went in, recovery
    discarded the unclosed entry, and the file read EIO for good; it now publishes what the
    fsync flushed."""
    from .conftest import PART

    old = content(PART + 1000, 1)
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.write_file(b"f", old)
        fh = await core.open(b"f", os.O_RDWR)
        await core.fs.write(fh, 0, b"NEW")
        hold = core.store.hold_after("complete_multipart")
        core.nursery.start_soon(core.fs.fsync, fh)
        await core.until(hold.reached.is_set)
        store = core.store
        core.crash()
        hold.release()  # (the crashed mount's worker goes on, and nothing of it is kept)
    store.heal()
    async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
        await again.recover()
        assert await again.read_file(b"f") == b"NEW" + old[3:]


@pytest.mark.parametrize("rebooted", [False, True])
@core_test
async def test_a_crash_after_an_fsync_inside_a_part_and_that_part_uploaded(
        tmp_path: Path, rebooted: bool) -> None:
    """fsync at 7 MiB (5 MiB parts), writes on until part 2 (5 to 10 MiB) is uploaded and
    recorded, then a crash: recovery published the fsynced 7 MiB with part 2 whole, the
    object came out 10 MiB, and the file was set aside instead. It is now published to the
    end of part 2, which holds the fsynced bytes and some written after."""
    from .conftest import PART

    first = content(PART + 2 * 1024 * 1024, 1)
    more = content(PART, 2)
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.write_file(b"f", b"previous")
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, first)
        await core.fs.fsync(fh)
        await core.write_all(fh, more, offset=len(first))

        def part_2_recorded() -> bool:
            entries = list(core.stored_journal().values())
            return bool(entries) and entries[0].upload is not None and \
                2 in entries[0].upload.parts

        await core.until(part_2_recorded)
        store = core.store
        core.crash()
    async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
        await again.recover(rebooted=rebooted)  # (part 2 holds the fsynced size: stored)
        assert again.lost_found() == []
        assert await again.read_file(b"f") == (first + more)[:2 * PART]


@core_test
async def test_a_file_moved_by_another_node_during_its_rewrite_keeps_its_object(
        tmp_path: Path) -> None:
    """Another node moved the file (its stub, naming the old object) while this node
    rewrote it under a new key: the rewrite has no name left, and the old object is the moved
    file's. It had been deleted as the replaced object (the moved file then read EIO)."""
    from .conftest import PART

    old, new = content(PART + 1000, 1), content(PART + 1000, 2)
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.write_file(b"f", old)
        await core.fs.rename(*await core.parent_and_name(b"f"),
                             *await core.parent_and_name(b"g"), 0)  # (key stays "f")
        fh = await core.open(b"g", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, new)  # streams to key "g"
        os.rename(core.warm_path(b"g"), core.warm_path(b"moved"))  # another node's mv
        await core.close(fh)
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
        assert await again.read_file(b"moved") == old
        assert set(again.objects()) == {"f"}


@core_test
async def test_a_completion_described_by_a_head_another_completion_overtook(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 describes a completed object by a HEAD after the completion; another node's
    completion to the same key may land in between. The stub then named the other object
    while this node kept its own bytes cached under it: this node read its bytes, every other
    node the other's. The file is now the other's everywhere."""
    from tierfs.objects.local import LocalStore
    from tierfs.transfer.streaming import UPLOAD_TOKEN

    from .conftest import PART

    mine, theirs = content(PART + 1000, 1), content(PART + 1000, 2)
    complete = LocalStore.complete_multipart

    def overtaken(self, key, upload_id, parts):  # type: ignore[no-untyped-def]
        complete(self, key, upload_id, parts)
        self.put(key, theirs, {UPLOAD_TOKEN: "another-node", "mode": "0644",
                               "mtime-ns": "1700000000000000000"})
        return self.head(key)  # (as S3Store.complete_multipart does)

    (tmp_path / "hot-b").mkdir(mode=0o700)
    async with open_core(tmp_path, large_file_threshold="64KiB") as a:
        monkeypatch.setattr(LocalStore, "complete_multipart", overtaken)
        await a.write_file(b"ckpt", mine)
        monkeypatch.undo()
        assert await a.read_file(b"ckpt") == theirs
    async with open_core(tmp_path, hot=str(tmp_path / "hot-b"),
                         large_file_threshold="64KiB") as b:
        assert await b.read_file(b"ckpt") == theirs
