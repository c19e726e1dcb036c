"""Demotion and promotion without FUSE: a warm file moved to the bucket whole (on demand or by
the warm quota), only if it did not change while it uploaded; a cold file brought back; and a
crash at each step of a demotion, which loses nothing."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import trio

from tierfs.index import Index

from .conftest import PART, core_test, open_core
from .faults import FaultStore

DATA = bytes(range(256)) * (3 * PART // 256 + 17)  # a little over three parts


def put_warm(root: Path, name: str, data: bytes, age: int = 0) -> Path:
    """A file written to the warm tier directly (before tierfs, or by another tool)."""
    path = root / "warm" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age:
        t = path.stat().st_mtime_ns - age * 10**9
        os.utime(path, ns=(t, t))
    return path


def space(path: Path, name: str | None = None) -> int:
    """The space a file takes (what the quota counts, and what demoting it frees)."""
    return (path / "warm" / name if name else path).stat().st_blocks * 512


@core_test
async def test_a_demoted_file_is_a_stub_and_reads_the_same_bytes(tmp_path: Path) -> None:
    put_warm(tmp_path, "d/big.bin", DATA)
    async with open_core(tmp_path) as c:
        before = c.warm_path(b"d/big.bin").stat()
        outcome = await c.fs.demoter.demote(b"d/big.bin")
        assert outcome.done, outcome.why
        stub = c.cold(b"d/big.bin")
        assert stub.size == len(DATA) and stub.mtime_ns == before.st_mtime_ns
        assert stub.mode == 0o644 & before.st_mode
        assert c.objects()[stub.key] == DATA
        assert await c.read_file(b"d/big.bin") == DATA
        assert c.counter("demotions") == 1 and c.counter("bytes_demoted") == len(DATA)
        assert c.uploads() == []
        await c.fs.save_index()
        assert not [k for k, _ in c.fs.index.items("meta") if k.startswith(b"demoting/")]


@core_test
async def test_a_file_changed_during_its_upload_stays_and_the_upload_is_discarded(
        tmp_path: Path) -> None:
    path = put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        async def writer_wins(step: str) -> None:
            if step == "uploaded":  # another node (or a direct write) changes the file
                with open(path, "r+b") as f:
                    f.write(b"changed")

        c.fs.demoter.at_step = writer_wins
        outcome = await c.fs.demoter.demote(b"big.bin")
        assert not outcome.done and "changed" in outcome.why
        assert not path.is_symlink()
        assert path.read_bytes() == b"changed" + DATA[7:]
        assert c.objects() == {}  # the object was deleted
        assert c.counter("demotions") == 0 and c.counter("demotions_discarded") == 1


@core_test
async def test_a_file_replaced_by_rename_during_its_upload_is_not_swapped(
        tmp_path: Path) -> None:
    path = put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        async def replace(step: str) -> None:
            if step == "swap":  # same size and bytes, another file (another inode)
                other = tmp_path / "warm" / "other"
                other.write_bytes(DATA)
                os.utime(other, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
                os.rename(other, path)

        c.fs.demoter.at_step = replace
        outcome = await c.fs.demoter.demote(b"big.bin")
        assert not outcome.done
        assert not path.is_symlink() and path.read_bytes() == DATA
        assert c.objects() == {}


@core_test
async def test_a_file_open_through_the_mount_is_not_demoted(tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        fh = await c.open(b"big.bin", os.O_RDWR)
        outcome = await c.fs.demoter.demote(b"big.bin")
        assert not outcome.done and "open" in outcome.why
        await c.close(fh)
        assert c.stub(b"big.bin") is None and c.objects() == {}
        assert (await c.fs.demoter.demote(b"big.bin")).done


@core_test
async def test_a_file_opened_for_writing_during_its_upload_is_not_swapped(
        tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        handles: list[int] = []

        async def open_it(step: str) -> None:
            if step == "uploaded":
                handles.append(await c.open(b"big.bin", os.O_RDWR))
                await c.fs.write(handles[0], 0, b"new")

        c.fs.demoter.at_step = open_it
        outcome = await c.fs.demoter.demote(b"big.bin")
        assert not outcome.done
        await c.close(handles[0])
        assert c.stub(b"big.bin") is None
        assert c.warm_path(b"big.bin").read_bytes() == b"new" + DATA[3:]
        assert c.objects() == {}


@core_test
async def test_plain_refusals(tmp_path: Path) -> None:
    put_warm(tmp_path, "empty", b"")
    put_warm(tmp_path, "a", DATA)
    os.link(tmp_path / "warm" / "a", tmp_path / "warm" / "b")
    async with open_core(tmp_path) as c:
        assert "empty" in (await c.fs.demoter.demote(b"empty")).why
        assert "hard-linked" in (await c.fs.demoter.demote(b"a")).why
        assert not (await c.fs.demoter.demote(b"missing")).done
        assert c.objects() == {}


@core_test
async def test_promote_brings_a_small_cold_file_back(tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        inode = await c.lookup_path(b"big.bin")
        assert (await c.fs.demoter.demote(b"big.bin")).done
        key = c.cold(b"big.bin").key
        outcome = await c.fs.demoter.promote(b"big.bin")
        assert outcome.done, outcome.why
        path = c.warm_path(b"big.bin")
        assert not path.is_symlink() and path.read_bytes() == DATA
        assert key not in c.objects()
        assert (await c.lookup_path(b"big.bin")).ino == inode.ino
        assert await c.read_file(b"big.bin") == DATA
        assert c.counter("promotions") == 1 and c.counter("bytes_promoted") == len(DATA)
        assert c.warm_temps() == []


@core_test
async def test_a_warm_disk_filling_during_a_promotion_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write of the download that comes back short (the warm disk filling part way; the
    next one fails) fails the promotion: the stub and its object stay. The count was not
    looked at, the file's final truncate filled the rest with zeros, the file was renamed
    over the stub, and the object deleted."""
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
        key = c.cold(b"big.bin").key
        real, full = os.pwrite, []

        def filling(fd: int, data: bytes, offset: int) -> int:
            if full:
                raise OSError(errno.ENOSPC, "full")
            if offset + len(data) == len(DATA):  # the last block: half of it fits
                full.append(True)
                return real(fd, data[:len(data) // 2], offset)
            return real(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", filling)
        try:
            outcome = await c.fs.demoter.promote(b"big.bin")
        except OSError as e:
            assert e.errno in (errno.ENOSPC, errno.EIO)
        else:
            assert not outcome.done
        monkeypatch.undo()
        assert full and c.stub(b"big.bin") is not None and c.objects()[key] == DATA
        assert await c.read_file(b"big.bin") == DATA
        assert c.warm_temps() == []


@core_test
async def test_promote_leaves_a_file_that_belongs_in_the_bucket(tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1MiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
        outcome = await c.fs.demoter.promote(b"big.bin")
        assert not outcome.done and "belongs in the bucket" in outcome.why
        assert c.stub(b"big.bin") is not None


@core_test
async def test_promote_keeps_a_stub_changed_during_the_download(tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
        stub = c.cold(b"big.bin")

        async def other_node(step: str) -> None:
            if step == "downloaded":  # another node rewrites the stub (a chmod, say)
                import dataclasses
                c.put_stub(b"big.bin", dataclasses.replace(stub, mode=0o600))

        c.fs.demoter.at_step = other_node
        outcome = await c.fs.demoter.promote(b"big.bin")
        assert not outcome.done
        assert c.cold(b"big.bin").mode == 0o600
        assert stub.key in c.objects() and c.warm_temps() == []


@core_test
async def test_the_quota_demotes_the_least_recently_used_large_files(tmp_path: Path) -> None:
    put_warm(tmp_path, "old.bin", DATA, age=3000)
    put_warm(tmp_path, "older.bin", DATA, age=5000)
    put_warm(tmp_path, "new.bin", DATA, age=10)
    put_warm(tmp_path, "small.txt", b"x" * 1000, age=9000)
    # (the quota counts the space files take: what two of the three and small.txt take)
    async with open_core(tmp_path, warm_quota=2 * space(tmp_path, "old.bin") + 5000,
                         demote_min_size="1MiB", demote_interval=0.1) as c:
        await c.until(lambda: c.counter("demotions") >= 1)
        await trio.sleep(0.3)  # (a second pass finds the quota kept)
        assert c.counter("demotions") == 1
        assert c.stub(b"older.bin") is not None
        assert c.stub(b"old.bin") is None and c.stub(b"new.bin") is None
        assert c.stub(b"small.txt") is None
        assert await c.read_file(b"older.bin") == DATA


STEPS = ["recorded", "uploaded", "swap", "swapped"]


async def crash_at(root: Path, step: str, path: bytes) -> FaultStore:
    """Demote ``path`` and crash the mount once the demotion reaches ``step``; its store."""
    async with open_core(root) as c:
        reached = trio.Event()

        async def stop(name: str) -> None:
            if name == step:
                reached.set()
                await trio.sleep_forever()

        c.fs.demoter.at_step = stop
        c.nursery.start_soon(c.fs.demoter.demote, path)
        await reached.wait()
        c.crash()
    return c.store


@pytest.mark.parametrize("step", STEPS)
@core_test
async def test_a_crash_at_each_step_of_a_demotion_loses_nothing(tmp_path: Path,
                                                                step: str) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    store = await crash_at(tmp_path, step, b"big.bin")
    async with open_core(tmp_path, store=store) as c:
        await c.recover()
        await c.purge_temps()
        stub = c.stub(b"big.bin")
        if step == "swapped":
            assert stub is not None and c.objects()[stub.key] == DATA
        else:
            assert stub is None
            assert c.warm_path(b"big.bin").read_bytes() == DATA
            assert c.objects() == {}  # the demotion's object was deleted
        assert c.uploads() == []
        assert await c.read_file(b"big.bin") == DATA
        assert not [k for k, _ in c.fs.index.items("meta") if k.startswith(b"demoting/")]
        assert c.warm_temps() == []


@core_test
async def test_a_crash_after_the_swap_keeps_a_stub_moved_by_another_node(
        tmp_path: Path) -> None:
    """The swap happened and another node renamed the stub before recovery: its object is
    kept (it is the file's data), not taken for the garbage of an undone demotion."""
    put_warm(tmp_path, "big.bin", DATA)
    store = await crash_at(tmp_path, "swapped", b"big.bin")
    os.rename(tmp_path / "warm" / "big.bin", tmp_path / "warm" / "moved.bin")
    async with open_core(tmp_path, store=store) as c:
        await c.recover()
        assert await c.read_file(b"moved.bin") == DATA





@core_test
async def test_a_file_keeps_its_inode_number_through_demotion_and_promotion(
        tmp_path: Path) -> None:
    """Also when the file is not in memory (looked up by an earlier mount): tools that cache
    inode numbers (git, rsync) see the same file."""
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        ino = (await c.lookup_path(b"big.bin")).ino
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.lookup_path(b"big.bin")).ino == ino
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.fs.demoter.promote(b"big.bin")).done
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.lookup_path(b"big.bin")).ino == ino
        assert await c.read_file(b"big.bin") == DATA


@core_test
async def test_a_file_cut_short_during_its_upload_stays_and_nothing_is_left(
        tmp_path: Path) -> None:
    path = put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        async def cut(step: str) -> None:
            if step == "recorded":  # before any part is read: the parts come up short
                os.truncate(path, 1000)

        c.fs.demoter.at_step = cut
        outcome = await c.fs.demoter.demote(b"big.bin")
        assert not outcome.done and "changed" in outcome.why
        assert path.read_bytes() == DATA[:1000]
        assert c.objects() == {} and c.uploads() == []
        assert c.counter("demotions_discarded") == 1


@core_test
async def test_nothing_outside_the_warm_tree_is_demoted_through_a_symbolic_link(
        tmp_path: Path) -> None:
    """A user of the shared tree points a directory link elsewhere (``/etc``, say): neither a
    demotion named through it nor the quota's walk reaches the files there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(DATA)
    inside = space(put_warm(tmp_path, "d/inside.bin", DATA))
    os.symlink(outside, tmp_path / "warm" / "evil")
    os.symlink(outside, tmp_path / "warm" / "d" / "evil")
    async with open_core(tmp_path, warm_quota=1, demote_min_size="1MiB",
                         demote_interval=3600) as c:
        for path in (b"evil/secret", b"d/evil/secret"):
            outcome = await c.fs.demoter.demote(path)
            assert not outcome.done and "symbolic link" in outcome.why
        assert not (await c.fs.demoter.promote(b"evil/secret")).done
        assert await c.fs.demoter.enforce_quota() == inside  # d/inside.bin only
        assert not (outside / "secret").is_symlink()
        assert (outside / "secret").read_bytes() == DATA
        assert c.stub(b"d/inside.bin") is not None
        assert list(c.objects().values()) == [DATA]


@core_test
async def test_recovery_tries_again_while_the_bucket_cannot_be_reached(tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        reached = trio.Event()

        async def stop(name: str) -> None:
            if name == "uploaded":  # the object is complete, the swap not begun
                reached.set()
                await trio.sleep_forever()

        c.fs.demoter.at_step = stop
        c.nursery.start_soon(c.fs.demoter.demote, b"big.bin")
        await reached.wait()
        c.crash()
    store = c.store
    store.fail_always("head")
    async with open_core(tmp_path, store=store) as c:
        await c.recover()
        assert len(c.objects()) == 1  # kept for now: the bucket could not say whose it is
        assert await c.read_file(b"big.bin") == DATA
    store.heal()
    async with open_core(tmp_path, store=store) as c:
        await c.recover()
        assert c.objects() == {}
        assert c.warm_path(b"big.bin").read_bytes() == DATA
        await c.fs.save_index()
        assert not [k for k, _ in c.fs.index.items("meta") if k.startswith(b"demoting/")]


@core_test
async def test_two_nodes_demoting_one_file_at_once_lose_nothing(tmp_path: Path) -> None:
    """Both nodes upload the file; the first swaps in its stub, the second finds the file
    changed and deletes its own object: never the one the stub names (both used the path's
    key, and the second upload replaced the first's object before it was deleted)."""
    put_warm(tmp_path, "big.bin", DATA)
    (tmp_path / "hot-b").mkdir(mode=0o700)
    async with open_core(tmp_path) as a, open_core(tmp_path, hot=str(tmp_path / "hot-b")) as b:
        b_recorded, go_b, b_done = trio.Event(), trio.Event(), trio.Event()
        outcomes = {}

        async def b_waits(step: str) -> None:
            if step == "recorded":  # B chose its key and recorded it, and waits
                b_recorded.set()
                await go_b.wait()

        async def run_b() -> None:
            outcomes["b"] = await b.fs.demoter.demote(b"big.bin")
            b_done.set()

        b.fs.demoter.at_step = b_waits
        b.nursery.start_soon(run_b)
        await b_recorded.wait()
        outcomes["a"] = await a.fs.demoter.demote(b"big.bin")
        go_b.set()
        await b_done.wait()
        assert outcomes["a"].done and not outcomes["b"].done
        stub = a.cold(b"big.bin")
        assert a.objects() == {stub.key: DATA}
        assert await a.read_file(b"big.bin") == DATA
        assert await b.read_file(b"big.bin") == DATA


@core_test
async def test_an_error_after_the_swaps_rename_keeps_the_object(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stub is in place but the stat after the rename failed (the stub renamed away at
    once, a lost reply on NFS): the object it names is kept, not taken for an undone
    demotion's."""
    put_warm(tmp_path, "big.bin", DATA)
    real_stat = os.stat
    failed: list[bool] = []

    def stat_fails_once_on_the_stub(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        st = real_stat(path, *args, **kwargs)
        if path == b"big.bin" and stat.S_ISLNK(st.st_mode) and not failed:
            failed.append(True)
            raise OSError(errno.EIO, "no reply")
        return st

    async with open_core(tmp_path) as c:
        ino = (await c.lookup_path(b"big.bin")).ino
        monkeypatch.setattr(os, "stat", stat_fails_once_on_the_stub)
        outcome = await c.fs.demoter.demote(b"big.bin")
        monkeypatch.undo()
        assert failed
        stub = c.cold(b"big.bin")
        assert outcome.done
        assert (await c.lookup_path(b"big.bin")).ino == ino  # (the same file, as after a swap)
        assert c.objects() == {stub.key: DATA}
        assert await c.read_file(b"big.bin") == DATA
        await c.fs.save_index()
        assert not [k for k, _ in c.fs.index.items("meta") if k.startswith(b"demoting/")]


@core_test
async def test_a_hard_linked_stub_is_not_promoted(tmp_path: Path) -> None:
    """Its object would be deleted under the other name."""
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
        os.link(tmp_path / "warm" / "big.bin", tmp_path / "warm" / "other.bin",
                follow_symlinks=False)
        outcome = await c.fs.demoter.promote(b"big.bin")
        assert not outcome.done and "hard-linked" in outcome.why
        assert await c.read_file(b"other.bin") == DATA
        assert await c.read_file(b"big.bin") == DATA


@core_test
async def test_a_silly_renamed_file_is_not_demoted(tmp_path: Path) -> None:
    """Another node's client keeps an unlinked file open under a hidden name and removes it
    at its last close: a stub there would leave its object behind for good."""
    hidden = ".nfs" + "0123456789abcdef01234567"
    put_warm(tmp_path, hidden, DATA, age=5000)
    old = space(put_warm(tmp_path, "old.bin", DATA, age=3000))
    async with open_core(tmp_path, warm_quota=1, demote_min_size="1MiB",
                         demote_interval=3600) as c:
        assert await c.fs.demoter.enforce_quota() == old  # old.bin only
        assert c.stub(b"old.bin") is not None and c.stub(hidden.encode()) is None
        outcome = await c.fs.demoter.demote(hidden.encode())
        assert not outcome.done and "remove" in outcome.why
        assert len(c.objects()) == 1


@core_test
async def test_recovery_keeps_the_object_of_a_stub_moved_for_a_file_with_its_number(
        tmp_path: Path) -> None:
    """A crash after the swap; another node moves the stub and writes a new file at the path,
    which gets the freed inode number (file systems reuse them at once): not the file that
    was uploaded, so the object, which the moved stub names, stays."""
    old = put_warm(tmp_path, "big.bin", DATA)
    mtime = old.stat().st_mtime_ns
    store = await crash_at(tmp_path, "swapped", b"big.bin")
    os.rename(old, tmp_path / "warm" / "moved.bin")
    put_warm(tmp_path, "big.bin", DATA)  # (same size, and its mtime set as cp -p would)
    os.utime(old, ns=(mtime, mtime))
    new = old.stat()
    index = Index(tmp_path / "hot" / "index")
    try:  # the record as if the new file had the uploaded one's number
        with index.env.begin(db=index.dbs["meta"], write=True) as txn:
            for key, value in list(txn.cursor()):
                if key.startswith(b"demoting/"):
                    record = json.loads(value)
                    record.update(dev=new.st_dev, ino=new.st_ino)
                    txn.put(key, json.dumps(record).encode())
    finally:
        index.close()
    async with open_core(tmp_path, store=store) as c:
        await c.recover()
        assert await c.read_file(b"moved.bin") == DATA
        assert await c.read_file(b"big.bin") == DATA


@core_test
async def test_a_crash_after_the_swap_keeps_the_inode_number(tmp_path: Path) -> None:
    """The number carried to the stub at the swap was in the batch the crash lost: recovery,
    finding the stub in place, carries it again."""
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "warm" / "big.bin").write_bytes(DATA)
    async with open_core(tmp_path) as c:
        ino = (await c.lookup_path(b"big.bin")).ino
    store = c.store
    async with open_core(tmp_path, store=store) as c:
        reached = trio.Event()

        async def stop(name: str) -> None:
            if name == "swapped":
                reached.set()
                await trio.sleep_forever()

        c.fs.demoter.at_step = stop
        c.nursery.start_soon(c.fs.demoter.demote, b"big.bin")
        await reached.wait()
        c.crash()
    async with open_core(tmp_path, store=store) as c:
        await c.recover()
        assert c.stub(b"big.bin") is not None
        assert await c.read_file(b"big.bin") == DATA
        assert (await c.lookup_path(b"big.bin")).ino == ino
