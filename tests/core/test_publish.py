"""Publishing staged data to the warm tier: by rename (tiers on one file system) and by copy,
in place for hard-linked files, with attributes and times kept, and to wherever the file's
name is at the time (or nowhere, once it has none)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import ROOT, SetAttr, core_test, open_core

BOTH = pytest.mark.parametrize("by_rename", [True, False], ids=["rename", "copy"])


def content(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


@BOTH
@core_test
async def test_new_file_is_published_whole(tmp_path: Path, by_rename: bool) -> None:
    data = content(300_000)
    async with open_core(tmp_path, by_rename=by_rename) as core:
        await core.write_file(b"f", data, chunk=70_000)
        assert core.warm_path(b"f").read_bytes() == data
        assert core.staged() == [] and core.journal() == {}
        assert core.warm_temps() == [] and core.objects() == {}
        assert await core.read_file(b"f") == data


@BOTH
@core_test
async def test_rewrite_replaces_the_warm_file(tmp_path: Path, by_rename: bool) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        await core.write_file(b"f", content(5000))
        before = core.warm_path(b"f").stat().st_ino
        await core.write_file(b"f", b"short")
        assert core.warm_path(b"f").read_bytes() == b"short"
        assert core.warm_path(b"f").stat().st_ino != before  # a new file renamed into place
        assert core.warm_temps() == [] and core.staged() == []


@core_test
async def test_publish_by_rename_moves_the_staging_file(tmp_path: Path) -> None:
    async with open_core(tmp_path, by_rename=True) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, b"abc")
        (sid,) = core.staged()
        staged_ino = core.staging_path(sid).stat().st_ino
        await core.close(fh)
        assert core.warm_path(b"f").stat().st_ino == staged_ino
        assert core.staged() == []


@core_test
async def test_publish_by_copy_leaves_staging_until_release(tmp_path: Path) -> None:
    async with open_core(tmp_path, by_rename=False) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, b"abc")
        (sid,) = core.staged()
        await core.fs.flush(fh)
        assert core.warm_path(b"f").read_bytes() == b"abc"
        assert core.staged() == [sid]  # the open file still reads from it
        await core.fs.release(fh)
        assert core.staged() == []


@BOTH
@core_test
async def test_hard_linked_file_is_written_in_place(tmp_path: Path, by_rename: bool) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        await core.write_file(b"a", b"old content")
        a = await core.lookup_path(b"a")
        await core.fs.link(a.ino, ROOT, b"b")
        ino = core.warm_path(b"a").stat().st_ino
        fh, _, _ = await core.fs.open(a.ino, os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"new")
        await core.close(fh)
        for name in ("a", "b"):
            st = (core.warm / name).stat()
            assert st.st_ino == ino and st.st_nlink == 2
            assert (core.warm / name).read_bytes() == b"new"
        assert await core.read_file(b"b") == b"new"
        assert core.warm_temps() == [] and core.staged() == []


@BOTH
@core_test
async def test_mode_owner_and_xattrs_of_the_replaced_file_are_kept(tmp_path: Path,
                                                                    by_rename: bool) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        await core.write_file(b"f", b"one", mode=0o640)
        f = await core.lookup_path(b"f")
        await core.fs.setxattr(f.ino, b"user.tag", b"blue")
        await core.fs.setattr(f.ino, SetAttr(mode=0o100600))
        await core.write_file(b"f", b"two")
        p = core.warm_path(b"f")
        assert p.read_bytes() == b"two"
        assert p.stat().st_mode & 0o7777 == 0o600
        assert os.getxattr(p, "user.tag") == b"blue"
        assert (await core.fs.getattr(f.ino)).mode & 0o7777 == 0o600


@BOTH
@core_test
async def test_times_set_while_staged_are_published(tmp_path: Path, by_rename: bool) -> None:
    when = 1_600_000_000_123_456_789
    async with open_core(tmp_path, by_rename=by_rename) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, b"data")
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(atime_ns=when, mtime_ns=when + 1))
        await core.close(fh)
        st = core.warm_path(b"f").stat()
        assert (st.st_atime_ns, st.st_mtime_ns) == (when, when + 1)
        attrs = await core.fs.getattr(f.ino)
        assert attrs.mtime_ns == when + 1


@core_test
async def test_mtime_of_a_write_is_published(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", b"x")
        f = await core.lookup_path(b"f")
        old = 1_500_000_000_000_000_000
        await core.fs.setattr(f.ino, SetAttr(mtime_ns=old))
        assert core.warm_path(b"f").stat().st_mtime_ns == old
        fh = await core.open(b"f", os.O_WRONLY)
        await core.write_all(fh, b"y", offset=1)
        await core.close(fh)
        assert core.warm_path(b"f").stat().st_mtime_ns > old
        assert core.warm_path(b"f").read_bytes() == b"xy"


@BOTH
@core_test
async def test_publish_after_rename_goes_to_the_new_name(tmp_path: Path, by_rename: bool
                                                         ) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        d = await core.mkdirs(b"d")
        fh = await core.create(b"a")
        await core.write_all(fh, b"moved data")
        await core.fs.rename(ROOT, b"a", d, b"b", 0)
        assert core.journal()[core.staged()[0]].path == b"d/b"
        await core.close(fh)
        assert core.warm_names() == ["d"]
        assert core.warm_path(b"d/b").read_bytes() == b"moved data"
        assert await core.read_file(b"d/b") == b"moved data"
        assert core.warm_temps() == []


@core_test
async def test_publish_after_rename_over_another_file(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"target", b"to be replaced")
        fh = await core.create(b"tmp")
        await core.write_all(fh, b"replacement")
        await core.fs.rename(ROOT, b"tmp", ROOT, b"target", 0)
        await core.close(fh)
        assert core.warm_names() == ["target"]
        assert core.warm_path(b"target").read_bytes() == b"replacement"


@core_test
async def test_publish_after_folder_rename_follows_the_folder(tmp_path: Path) -> None:
    async with open_core(tmp_path, by_rename=False) as core:
        await core.mkdirs(b"x/y")
        fh = await core.create(b"x/y/f")
        await core.write_all(fh, b"deep")
        await core.fs.rename(ROOT, b"x", ROOT, b"z", 0)
        await core.close(fh)
        assert core.warm_path(b"z/y/f").read_bytes() == b"deep"
        assert not (core.warm / "x").exists()


@BOTH
@core_test
async def test_publish_after_unlink_goes_nowhere(tmp_path: Path, by_rename: bool) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        fh = await core.create(b"gone", flags=os.O_RDWR)
        await core.write_all(fh, b"nobody sees this")
        await core.fs.unlink(ROOT, b"gone")
        entry = next(iter(core.journal().values()))
        assert entry.path == b"" and not entry.closed
        assert await core.fs.read(fh, 0, 100) == b"nobody sees this"
        await core.close(fh)
        assert core.warm_names() == [] and core.staged() == [] and core.journal() == {}


@core_test
async def test_unlink_of_an_existing_file_while_rewritten(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", b"old")
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"new")
        await core.fs.unlink(ROOT, b"f")
        await core.close(fh)
        assert core.warm_names() == [] and core.staged() == []


@core_test
async def test_partial_overwrite_and_append_keep_the_rest(tmp_path: Path) -> None:
    base = content(200_000)
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", base)
        fh = await core.open(b"f", os.O_WRONLY)
        await core.write_all(fh, b"PATCH", offset=100_000)
        await core.close(fh)
        fh = await core.open(b"f", os.O_WRONLY | os.O_APPEND)
        await core.fs.write(fh, 0, b"TAIL")  # O_APPEND: at the end whatever the offset
        await core.close(fh)
        expect = base[:100_000] + b"PATCH" + base[100_005:] + b"TAIL"
        assert core.warm_path(b"f").read_bytes() == expect
        assert await core.read_file(b"f") == expect


@core_test
async def test_reads_see_staged_writes_before_close(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", b"0123456789")
        fh = await core.open(b"f", os.O_RDWR)
        await core.write_all(fh, b"AB", offset=3)
        assert await core.fs.read(fh, 0, 100) == b"012AB56789"
        assert core.warm_path(b"f").read_bytes() == b"0123456789"  # not yet published
        f = await core.lookup_path(b"f")
        await core.fs.write(fh, 20, b"Z")
        assert (await core.fs.getattr(f.ino)).size == 21
        await core.close(fh)
        assert core.warm_path(b"f").read_bytes() == b"012AB56789" + bytes(10) + b"Z"


@core_test
async def test_fsync_publishes_while_still_open(tmp_path: Path) -> None:
    async with open_core(tmp_path, by_rename=False) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, b"durable")
        await core.fs.fsync(fh)
        assert core.warm_path(b"f").read_bytes() == b"durable"
        assert core.journal() == {} or not any(e.closed for e in core.journal().values())
        await core.write_all(fh, b"!", offset=7)
        await core.close(fh)
        assert core.warm_path(b"f").read_bytes() == b"durable!"


@core_test
async def test_empty_file_needs_no_staging(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        fh = await core.create(b"empty", mode=0o600)
        assert core.staged() == []
        await core.close(fh)
        p = core.warm_path(b"empty")
        assert p.stat().st_size == 0 and p.stat().st_mode & 0o777 == 0o600


@core_test
async def test_truncate_by_path_of_a_closed_file(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", content(10_000))
        f = await core.lookup_path(b"f")
        attrs = await core.fs.setattr(f.ino, SetAttr(size=1234))
        assert attrs.size == 1234
        assert core.warm_path(b"f").read_bytes() == content(1234)
        assert core.staged() == []


@core_test
async def test_two_writers_both_land(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", bytes(10))
        one = await core.open(b"f", os.O_WRONLY)
        two = await core.open(b"f", os.O_WRONLY)
        await core.write_all(one, b"AAA", offset=0)
        await core.write_all(two, b"BBB", offset=5)
        await core.close(one)
        await core.write_all(two, b"C", offset=9)
        await core.close(two)
        assert core.warm_path(b"f").read_bytes() == b"AAA\0\0BBB\0C"
        assert core.staged() == [] and core.journal() == {}


@core_test
async def test_journal_tracks_the_staged_file_until_published(tmp_path: Path) -> None:
    async with open_core(tmp_path, by_rename=False) as core:
        fh = await core.create(b"f")
        await core.write_all(fh, b"12345")
        (sid,) = core.staged()
        entry = core.journal()[sid]
        assert entry.path == b"f" and not entry.closed and entry.upload is None
        await core.close(fh)
        assert core.journal() == {}
        await core.sync_journal()
        assert core.stored_journal() == {}


@core_test
async def test_writes_during_publishes_all_land(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", bytes(64))
        one = await core.open(b"f", os.O_WRONLY)
        two = await core.open(b"f", os.O_WRONLY)

        async def writer(fh: int, first: int, letter: bytes) -> None:
            for i in range(first, 64, 2):
                await core.fs.write(fh, i, letter)
                if i % 8 == first:
                    await core.fs.fsync(fh)  # a publish while the other one writes

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, one, 0, b"a")
            nursery.start_soon(writer, two, 1, b"b")
        await core.close(one)
        await core.close(two)
        assert core.warm_path(b"f").read_bytes() == b"ab" * 32
        assert core.staged() == [] and core.journal() == {}


@core_test
async def test_writeback_fsync_publishes_now(tmp_path: Path) -> None:
    async with open_core(tmp_path, durability="writeback") as core:
        fh = await core.create(b"f")
        await core.write_all(fh, b"fsynced")
        await core.fs.fsync(fh)
        assert core.warm_path(b"f").read_bytes() == b"fsynced"
        await core.close(fh)


AHEAD: dict[str, Any] = {"by_rename": False, "publish_ahead": "64KiB"}


@core_test
async def test_copy_ahead_publishes_exactly_the_content_at_close(tmp_path: Path) -> None:
    data = bytearray(content(1_000_000))
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await core.create(b"f")
        for offset in range(0, 600_000, 50_000):
            await core.fs.write(fh, offset, bytes(data[offset:offset + 50_000]))
            await trio.sleep(0.01)  # let the copy ahead run
        assert core.warm_temps() != []  # the head-start copy is on its way
        await core.fs.write(fh, 1000, b"REWRITE")  # behind what was copied
        data[1000:1007] = b"REWRITE"
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=300_000))
        await core.write_all(fh, bytes(data[300_000:1_000_000]), offset=300_000)
        await core.close(fh)
        assert core.warm_path(b"f").read_bytes() == bytes(data)
        assert core.warm_temps() == []


@core_test
async def test_copy_ahead_follows_a_rename_and_a_link(tmp_path: Path) -> None:
    data = content(800_000)
    async with open_core(tmp_path, **AHEAD) as core:
        d = await core.mkdirs(b"d")
        fh = await core.create(b"a")
        for offset in range(0, 400_000, 50_000):
            await core.fs.write(fh, offset, data[offset:offset + 50_000])
            await trio.sleep(0.01)
        await core.fs.rename(ROOT, b"a", d, b"b", 0)
        b = await core.lookup_path(b"d/b")
        await core.fs.link(b.ino, ROOT, b"c")
        await core.write_all(fh, data[400_000:], offset=400_000)
        await core.close(fh)
        assert core.warm_path(b"d/b").read_bytes() == data
        assert core.warm_path(b"c").read_bytes() == data
        assert core.warm_path(b"c").stat().st_ino == core.warm_path(b"d/b").stat().st_ino
        assert core.warm_temps() == []


@core_test
async def test_copy_ahead_left_by_a_crash_is_purged(tmp_path: Path) -> None:
    data = content(500_000)
    async with open_core(tmp_path, **AHEAD) as core:
        await core.write_file(b"f", b"before")
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        for offset in range(0, len(data), 50_000):
            await core.fs.write(fh, offset, data[offset:offset + 50_000])
            await trio.sleep(0.01)
        assert core.warm_temps() != []
        await core.sync_journal()
        core.crash()
    async with open_core(tmp_path, **AHEAD) as again:
        assert (await again.recover()).discarded == 1
        assert await again.purge_temps() >= 1
        assert again.warm_temps() == []
        assert again.warm_path(b"f").read_bytes() == b"before"


@BOTH
@core_test
async def test_last_close_wins_over_another_nodes_replacement(tmp_path: Path, by_rename: bool
                                                             ) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        await core.write_file(b"f", b"first")
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"ours")
        other = core.warm / "other-node-temp"
        other.write_bytes(b"theirs")
        os.rename(other, core.warm_path(b"f"))
        await core.close(fh)
        assert core.warm_path(b"f").read_bytes() == b"ours"
        assert core.warm_names() == ["f"]


@BOTH
@core_test
async def test_file_removed_by_another_node_while_open_is_published_again(
        tmp_path: Path, by_rename: bool) -> None:
    async with open_core(tmp_path, by_rename=by_rename) as core:
        await core.write_file(b"f", b"first")
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"ours")
        core.warm_path(b"f").unlink()
        await core.close(fh)
        assert core.warm_path(b"f").read_bytes() == b"ours"
        assert core.warm_temps() == []


def warm_files_held_open(core: Any) -> list[str]:
    """The warm-tier files this process holds a descriptor of (by the path /proc shows)."""
    warm = str(core.warm)
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(warm + "/"):
            held.append(target[len(warm) + 1:])
    return held


@core_test
async def test_a_created_file_is_closed_on_the_warm_tier_before_its_publish(
        tmp_path: Path) -> None:
    """A publish by copy renames a new file over the one the create made: that one's
    descriptor is closed first, so that a network file system's client need not keep it
    under a hidden name (NFS's silly rename, sshfs's .fuse_hidden) and remove it at close.
    The open file goes on working from staging."""
    async with open_core(tmp_path, by_rename=False) as core:
        fh = await core.create(b"f", mode=0o640)
        assert warm_files_held_open(core) == ["f"]  # (the test sees the descriptor)
        await core.write_all(fh, b"abc")
        await core.fs.fsync(fh)
        assert core.warm_path(b"f").read_bytes() == b"abc"
        assert warm_files_held_open(core) == []  # nothing replaced is held: no " (deleted)"
        await core.write_all(fh, b"defg", offset=3)
        assert await core.read_all(fh) == b"abcdefg"
        await core.close(fh)
        p = core.warm_path(b"f")
        assert p.read_bytes() == b"abcdefg" and p.stat().st_mode & 0o7777 == 0o640
        assert core.warm_temps() == [] and core.staged() == []


@core_test
async def test_a_created_file_unlinked_after_its_publish_still_answers(tmp_path: Path) -> None:
    """Renamed (which makes its attributes stale) and then unlinked while open, after a
    publish closed its warm file: its handle still reads, writes and stats it, from staging
    and memory, and nothing is published at close."""
    async with open_core(tmp_path, by_rename=False) as core:
        fh = await core.create(b"f", mode=0o604)
        ino = (await core.lookup_path(b"f")).ino
        await core.write_all(fh, b"abc")
        await core.fs.fsync(fh)
        await core.fs.rename(ROOT, b"f", ROOT, b"g", 0)
        await core.fs.unlink(ROOT, b"g")
        attrs = await core.fs.getattr(ino)
        assert (attrs.size, attrs.nlink, attrs.mode & 0o7777) == (3, 0, 0o604)
        await core.write_all(fh, b"de", offset=3)
        assert await core.read_all(fh) == b"abcde"
        assert (await core.fs.getattr(ino)).size == 5
        await core.close(fh)
        assert core.warm_names() == [] and core.warm_temps() == [] and core.staged() == []


@core_test
async def test_a_created_file_unlinked_before_its_publish_still_answers(
        tmp_path: Path) -> None:
    """Unlinked before any publish: the create's warm descriptor is kept, as for any file
    unlinked while open."""
    async with open_core(tmp_path, by_rename=False) as core:
        fh = await core.create(b"f", mode=0o600)
        ino = (await core.lookup_path(b"f")).ino
        await core.write_all(fh, b"abc")
        await core.fs.unlink(ROOT, b"f")
        assert (await core.fs.getattr(ino)).nlink == 0
        await core.fs.fsync(fh)  # nothing to publish: no name
        assert await core.read_all(fh) == b"abc"
        assert (await core.fs.getattr(ino)).size == 3
        await core.close(fh)
        assert core.warm_names() == [] and core.warm_temps() == [] and core.staged() == []


def count_warm_setattrs(core: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the fchmod, fchown and ftruncate calls made on warm-tier files (on a
    network file system, each a round trip or two that a sync close waits for)."""
    warm = str(core.warm) + "/"
    calls: list[str] = []
    for name in ("fchmod", "fchown", "ftruncate"):
        inner = getattr(os, name)

        def counted(fd: int, *args: Any, _inner: Any = inner, _name: str = name) -> Any:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(warm):
                calls.append(_name)
            return _inner(fd, *args)

        monkeypatch.setattr(os, name, counted)
    return calls


@core_test
async def test_copy_ahead_leaves_no_owner_or_size_to_set_at_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The head-start temp file keeps the owner it was made with where that is the file's,
    and is of the file's size once the tail is copied: close gives it the file's mode (it is
    made private, 0600, until then), sets its times and fsyncs it; no chown, no truncate."""
    data = content(600_000)
    async with open_core(tmp_path, **AHEAD) as core:
        await core.close(await core.create(b"first", mode=0o640))  # (the tier's owner known)
        fh = await core.create(b"f", mode=0o640)
        calls = count_warm_setattrs(core, monkeypatch)
        for offset in range(0, len(data), 50_000):
            await core.fs.write(fh, offset, data[offset:offset + 50_000])
            await trio.sleep(0.01)  # let the copy ahead run
        assert core.warm_temps() != []  # the head start is there (else nothing is tested)
        await core.close(fh)
        p = core.warm_path(b"f")
        assert p.read_bytes() == data and p.stat().st_mode & 0o7777 == 0o640
        assert calls == ["fchmod"]


@core_test
async def test_copy_ahead_of_a_file_cut_short_still_takes_its_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = content(600_000)
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await core.create(b"f", mode=0o604)
        for offset in range(0, len(data), 50_000):
            await core.fs.write(fh, offset, data[offset:offset + 50_000])
            await trio.sleep(0.01)
        f = await core.lookup_path(b"f")
        await core.fs.setattr(f.ino, SetAttr(size=100_000))  # behind what was copied
        await core.close(fh)
        p = core.warm_path(b"f")
        assert p.read_bytes() == data[:100_000] and p.stat().st_mode & 0o7777 == 0o604


@core_test
async def test_the_purge_after_a_crash_spares_the_temp_files_of_the_mount_it_runs_in(
        tmp_path: Path) -> None:
    # The purge runs in the background while the mount serves: a publish by copy it started
    # meanwhile writes a temp file of the same node, which must not vanish under it.
    async with open_core(tmp_path) as core:
        old = core.warm / os.fsdecode(core.fs.warm.temp_name())
        old.write_bytes(b"left by the run that crashed")
        core.crash()
    async with open_core(tmp_path) as again:
        await again.recover()
        mine = again.warm / os.fsdecode(again.fs.warm.temp_name())
        mine.write_bytes(b"a publish of this mount, under way")
        assert await again.purge_temps() == 1
        assert not old.exists() and mine.exists()
        mine.unlink()


RENAME_FAILS = b"t" * 70_000


@pytest.mark.parametrize("durability", ["writeback", "sync"])
@core_test
async def test_a_failed_rename_leaves_no_temp_file_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str) -> None:
    async with open_core(tmp_path, durability=durability, by_rename=False) as core:
        await core.recover()
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", b"before")
        assert await core.publish_all() == []
        warm_cls = type(core.fs.warm)
        real = warm_cls.rename

        def rename(self: Any, rel: bytes, new_rel: bytes, flags: int = 0) -> None:
            if new_rel == b"f":
                raise OSError(errno.EIO, "the warm tier did not answer")
            real(self, rel, new_rel, flags)

        monkeypatch.setattr(warm_cls, "rename", rename)
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, RENAME_FAILS)
        if durability == "sync":
            with pytest.raises(OSError):
                await core.close(fh)  # its publish fails, and the release's try too
        else:
            await core.close(fh)
            for _ in range(3):  # the background retries (tierfs flush here)
                assert await core.publish_all() != []
        assert core.warm_temps() == [], "a whole copy left on the warm tier per failed try"
        monkeypatch.setattr(warm_cls, "rename", real)


@core_test
async def test_a_publish_by_rename_whose_directory_goes_after_its_rename_keeps_no_closed_fd(
        tmp_path: Path) -> None:
    """The rename over the name was made, then the directory's attributes could not be read
    (another node renamed it): the publish failed with the replaced file's descriptor closed
    and its number still the open file's ``warm_fd``, which the next open in the process got,
    and the last close then closed that other file's descriptor. Renamed is published now."""
    old = b"o" * 50_000
    async with open_core(tmp_path, by_rename=True) as core:
        d = await core.mkdirs(b"d")
        await core.write_file(b"d/f", old)
        w = await core.open(b"d/f", os.O_RDWR)  # the warm file opened: warm_fd
        await core.fs.write(w, 0, b"NEW")  # staged
        inode = await core.lookup_path(b"d/f")
        data = inode.data
        warm_fd = data.warm_fd
        assert warm_fd is not None
        warm = core.fs.warm
        real_adopt, real_lstat = warm.adopt, warm.lstat
        armed: list[bool] = []

        def adopt(*args: Any) -> Any:
            armed.append(True)
            try:
                return real_adopt(*args)
            finally:
                armed.clear()

        def lstat(rel: bytes) -> os.stat_result:
            if armed and rel == b"d":
                # Another node renames the directory just as the rename into it is done.
                os.rename(tmp_path / "warm" / "d", tmp_path / "warm" / "d2")
            return real_lstat(rel)

        warm.adopt = adopt  # type: ignore[method-assign]
        warm.lstat = lstat  # type: ignore[method-assign]
        try:
            await core.fs.fsync(w)  # (renamed: published, though the directory went)
        finally:
            warm.adopt = real_adopt  # type: ignore[method-assign]
            warm.lstat = real_lstat  # type: ignore[method-assign]
        os.rename(tmp_path / "warm" / "d2", tmp_path / "warm" / "d")  # (and back again)

        # Another open in the process (a reader's, the cache's, the index's) takes the
        # number adopt closed (opened until one does: lower numbers may be free too).
        g_path = tmp_path / "hot" / "someone-elses-file"
        held = data.warm_fd
        spare: list[int] = []
        g = os.open(g_path, os.O_CREAT | os.O_RDWR, 0o600)
        while held is not None and g < held:
            spare.append(g)
            g = os.open(g_path, os.O_RDWR)
        for fd in spare:
            os.close(fd)
        try:
            named = os.readlink(f"/proc/self/fd/{held}") if held is not None else None
        finally:
            # The name goes, then the last close retires the state, which closes warm_fd:
            # here that is g, which tierfs does not own.
            await core.fs.unlink(d, b"f")
            try:
                await core.close(w)
            except OSError:
                pass
            try:
                os.fstat(g)
                g_open = True
            except OSError:
                g_open = False
            if g_open:
                os.close(g)
        # The open file must not hold a number that is another file's now, and its retire
        # must not close a descriptor that is not its own.
        assert (named, g_open) == (None, True) or (named != str(g_path) and g_open), (
            f"data.warm_fd={held} (was {warm_fd}) named {named} after the failed publish; "
            f"g still open after the retire: {g_open}")
