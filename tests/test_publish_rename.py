"""Publishing by rename: when the hot and warm tiers share a file system (the zero-config
default on a machine with one disk), a file is published by fsyncing its staging file and
renaming it into place, not by copying it. Readers of the warm tier still never see a
half-written file, and a writer that goes on after a publish never changes the published
file under them."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import time
from pathlib import Path

import pytest
from conftest import Mount, make_mount, running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierfs.tiers.copying import copy_to_new
from tierfs.transfer.streaming import punch_hole

MIB = 1024 * 1024


def staged(m: Mount) -> list[Path]:
    return sorted((m.hot / "staging").iterdir())


def temps(m: Mount) -> list[Path]:
    return list(m.warm.rglob(".tierfs-*.tmp"))


@pytest.fixture
def one_fs(tmp_path: Path) -> Mount:
    return make_mount(tmp_path, "--attr-timeout", "0", "--entry-timeout", "0")


def test_a_closed_file_is_its_staging_file_renamed_into_place(one_fs: Mount) -> None:
    m = one_fs
    new = os.urandom(3 * MIB + 123)
    with running(m):
        (m.path / "ckpt.pt").write_bytes(b"old content")
        os.chmod(m.path / "ckpt.pt", 0o640)
        os.chown(m.path / "ckpt.pt", 1234, 5678)
        with open(m.path / "ckpt.pt", "r+b") as f:
            f.write(new)
            f.flush()
            [staging] = staged(m)
            staging_ino = staging.stat().st_ino
            # Until close, the warm tier keeps the old file whole.
            assert (m.warm / "ckpt.pt").read_bytes() == b"old content"
        published = (m.warm / "ckpt.pt").stat()
        assert published.st_ino == staging_ino  # renamed, not copied
        assert (m.warm / "ckpt.pt").read_bytes() == new
        assert (published.st_mode & 0o7777, published.st_uid, published.st_gid) == \
            (0o640, 1234, 5678)
        assert staged(m) == [] and temps(m) == []
        assert (m.path / "ckpt.pt").read_bytes() == new


def test_a_writer_going_on_after_fsync_never_changes_the_published_file(one_fs: Mount) -> None:
    m = one_fs
    first, second = os.urandom(2 * MIB), os.urandom(MIB)
    with running(m):
        with open(m.path / "db", "w+b") as f, open(m.path / "db", "rb") as reader:
            f.write(first)
            f.flush()
            os.fsync(f.fileno())
            assert (m.warm / "db").read_bytes() == first
            assert staged(m) == []  # the staging file is now the published file
            f.seek(MIB // 2)
            f.write(second)
            f.flush()
            expected = first[:MIB // 2] + second + first[MIB // 2 + MIB:]
            # The published file stays as fsynced: the new write went to a fresh copy.
            assert (m.warm / "db").read_bytes() == first
            assert len(staged(m)) == 1
            f.seek(0)
            assert f.read() == expected  # a handle reads its own writes
            reader.seek(0)
            assert reader.read() == expected  # several handles see one content
        assert (m.warm / "db").read_bytes() == expected
        assert staged(m) == [] and temps(m) == []


def test_a_hard_linked_file_is_still_published_in_place(one_fs: Mount) -> None:
    m = one_fs
    data = os.urandom(MIB)
    with running(m):
        (m.path / "a").write_bytes(b"before")
        os.link(m.path / "a", m.path / "b")
        (m.path / "a").write_bytes(data)
        assert (m.warm / "b").read_bytes() == data  # a rename would have split the links
        assert (m.warm / "a").stat().st_nlink == 2
        assert (m.path / "b").read_bytes() == data


def test_write_back_publishes_by_rename_too(tmp_path: Path) -> None:
    m = make_mount(tmp_path, "--durability", "writeback")
    data = os.urandom(5 * MIB)
    with running(m):
        with open(m.path / "shard", "wb") as f:
            f.write(data)
            f.flush()
            [staging] = staged(m)
            staging_ino = staging.stat().st_ino
        deadline = time.monotonic() + 20
        while staged(m):
            assert time.monotonic() < deadline, "write-back never published the file"
            time.sleep(0.05)
        assert (m.warm / "shard").stat().st_ino == staging_ino
        assert (m.warm / "shard").read_bytes() == data
        assert (m.path / "shard").read_bytes() == data


def test_tiers_on_different_file_systems_publish_by_copy(tmp_path: Path) -> None:
    m = make_mount(tmp_path, warm_apart=True)
    data = os.urandom(2 * MIB)
    with running(m):
        (m.path / "f").write_bytes(b"old")
        with open(m.path / "f", "r+b") as f:
            f.write(data)
            f.flush()
            [staging] = staged(m)
            assert staging.stat().st_dev != m.warm.stat().st_dev
            assert (m.warm / "f").read_bytes() == b"old"
        assert (m.warm / "f").read_bytes() == data
        deadline = time.monotonic() + 10  # the copy path drops staging at release, after close
        while staged(m):
            assert time.monotonic() < deadline, "the staging file stayed after release"
            time.sleep(0.02)
        assert temps(m) == []


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
KPF_DIRTY = 1 << 4


def dirty_pages(path: Path, size: int) -> list[bool]:
    """Per 4 KiB page of ``path[:size]``: whether the page cache holds it dirty (not yet sent
    to disk), from the kernel's page flags (root only). Looking changes nothing, unlike
    ``fadvise``, which would start the write-back itself."""
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    finally:
        os.close(fd)
    try:
        pages = range(addr, addr + size, 4096)
        for page in pages:
            ctypes.string_at(page, 1)  # map the page, so that it has a frame
        with open("/proc/self/pagemap", "rb") as pagemap, \
                open("/proc/kpageflags", "rb") as kpageflags:
            dirty = []
            for page in pages:
                pagemap.seek(page // 4096 * 8)
                entry = int.from_bytes(pagemap.read(8), "little")
                assert entry >> 63, "page not present"
                kpageflags.seek((entry & ((1 << 55) - 1)) * 8)
                dirty.append(bool(int.from_bytes(kpageflags.read(8), "little") & KPF_DIRTY))
            return dirty
    finally:
        _libc.munmap(addr, size)


def test_sync_mode_starts_writing_staged_data_to_disk_while_the_file_grows(
        tmp_path: Path) -> None:
    """So that close's fsync finds little left to write: each step of ``publish_ahead`` that
    an in-order writer completes is sent to the disk at once."""
    m = make_mount(tmp_path, "--publish-ahead", "1MiB")
    data = os.urandom(6 * MIB + 100)
    with running(m):
        with open(m.path / "ckpt", "wb") as f:
            for start in range(0, 5 * MIB, MIB):
                f.write(data[start:start + MIB])
            f.flush()
            [staging] = staged(m)
            deadline = time.monotonic() + 10
            while any(dirty_pages(staging, 4 * MIB)):
                assert time.monotonic() < deadline, "the first steps were never written back"
                time.sleep(0.05)
            f.write(data[5 * MIB:])
            f.seek(100)
            f.write(data[100:200])  # a rewrite in place: published, as any write
        assert (m.warm / "ckpt").read_bytes() == data
        assert (m.path / "ckpt").read_bytes() == data


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_sparse_file_stays_sparse_when_staged_and_when_published_by_copy(
        tmp_path: Path) -> None:
    """A file extended by truncate (a disk image, a preallocated output) takes its whole size
    on neither tier: staging and publishing copy only the ranges that hold data."""
    m = make_mount(tmp_path, warm_apart=True)
    size = 256 * MIB
    with running(m):
        with open(m.path / "image", "wb") as f:
            f.truncate(size)
            f.seek(100 * MIB)
            f.write(b"middle")
            f.seek(size - 3)
            f.write(b"end")
        assert os.stat(m.warm / "image").st_size == size
        assert allocated(m.warm / "image") < MIB
        with open(m.path / "image", "r+b") as f:  # staged again from the sparse warm file
            f.write(b"head")
            f.flush()
            [staging] = staged(m)
            assert allocated(staging) < MIB
            assert staging.stat().st_size == size
        assert allocated(m.warm / "image") < MIB
        with open(m.path / "image", "rb") as f:
            for offset, expect in ((0, b"head"), (100 * MIB, b"middle"), (size - 3, b"end"),
                                   (4, bytes(64)), (100 * MIB - 64, bytes(64)),
                                   (200 * MIB, bytes(MIB))):
                f.seek(offset)
                assert f.read(len(expect)) == expect, offset
            f.seek(0)
            digest = hashlib.sha256(f.read()).digest()
        expect_whole = bytearray(size)
        expect_whole[0:4] = b"head"
        expect_whole[100 * MIB:100 * MIB + 6] = b"middle"
        expect_whole[size - 3:] = b"end"
        assert digest == hashlib.sha256(expect_whole).digest()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.integers(0, 4 * MIB), st.integers(1, 96 * 1024)),
                       max_size=6),
       punches=st.lists(st.tuples(st.integers(0, 4 * MIB), st.integers(1, MIB)), max_size=3),
       length=st.integers(0, 5 * MIB), cut=st.integers(0, 6 * MIB))
def test_copy_to_new_gives_the_same_bytes_and_no_more_blocks(
        tmp_path: Path, writes: list[tuple[int, int]], punches: list[tuple[int, int]],
        length: int, cut: int) -> None:
    """Against the file's bytes read plainly: any pattern of data and holes (written past the
    end, punched out of data, cut by truncate), copied whole, in part or past its end."""
    src_path, dst_path = tmp_path / "src", tmp_path / "dst"
    for p in (src_path, dst_path):
        p.unlink(missing_ok=True)
    src = os.open(src_path, os.O_RDWR | os.O_CREAT, 0o600)
    dst = os.open(dst_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for offset, n in writes:
            os.pwrite(src, os.urandom(n), offset)
        for offset, n in punches:
            punch_hole(src, offset, n)
        os.ftruncate(src, length)
        expect = os.pread(src, length, 0)
        copy_to_new(src, dst, cut)
        assert os.fstat(dst).st_size == cut
        assert os.pread(dst, cut + 1, 0) == (expect + bytes(max(0, cut - length)))[:cut]
        assert os.fstat(dst).st_blocks <= os.fstat(src).st_blocks + 16  # two 4 KiB blocks
    finally:
        os.close(src)
        os.close(dst)
