"""Publishing ahead (sync mode): a file being written is copied to its warm temp file while the
writer goes on, when the warm tier has a file system of its own (on the hot tier's, the staging
file is renamed into place instead, see test_publish_rename.py). The temp file is only a head
start: whatever the writer does meanwhile (rewrites a copied range, truncates, renames, links,
unlinks, crosses the threshold), what close publishes is exactly what was written, and no temp
file is left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, make_mount, running

MIB = 1024 * 1024


def temps(warm: Path) -> list[Path]:
    return [p for p in warm.rglob(".tierfs-*.tmp")]


def wait_for_temp(warm: Path, at_least: int, timeout: float = 20) -> Path:
    """The head-start temp file once it holds ``at_least`` bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in temps(warm):
            try:
                if p.stat().st_size >= at_least:
                    return p
            except FileNotFoundError:
                continue
        time.sleep(0.01)
    raise AssertionError(f"no temp file of {at_least} bytes appeared on the warm tier")


@pytest.fixture(scope="module")
def ahead(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    bucket = tmp_path_factory.mktemp("bucket")
    with running(make_mount(tmp_path_factory.mktemp("ahead"), "--publish-ahead", "1MiB",
                            "--large-file-threshold", "40MiB",
                            "--bucket", f"file://{bucket}", warm_apart=True)) as m:
        yield m


def chunks(count: int, seed: int) -> list[bytes]:
    return [bytes([seed + i & 0xFF]) * MIB for i in range(count)]


def test_copy_runs_ahead_of_close_and_readers_never_see_it(ahead: Mount) -> None:
    data = chunks(16, 1)
    target = ahead.path / "ckpt.pt"
    (ahead.path / "ckpt.pt").write_bytes(b"old")
    with open(target, "wb") as f:
        for c in data[:12]:
            f.write(c)
        f.flush()
        tmp = wait_for_temp(ahead.warm, 4 * MIB)
        # The old content stays in place until close; the copy is hidden from listings.
        assert (ahead.warm / "ckpt.pt").read_bytes() == b"old"
        assert tmp.name not in os.listdir(ahead.path)
        for c in data[12:]:
            f.write(c)
    assert (ahead.warm / "ckpt.pt").read_bytes() == b"".join(data)
    assert temps(ahead.warm) == []


def test_rewriting_a_copied_range_is_published(ahead: Mount) -> None:
    """A header patched after the body was written (zipfile, numpy.savez)."""
    data = chunks(12, 40)
    target = ahead.path / "archive.npz"
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for c in data:
            os.write(fd, c)
        wait_for_temp(ahead.warm, 6 * MIB)
        os.pwrite(fd, b"HEADER", 0)
        os.pwrite(fd, b"middle", 5 * MIB + 3)
    finally:
        os.close(fd)
    expected = bytearray(b"".join(data))
    expected[0:6] = b"HEADER"
    expected[5 * MIB + 3:5 * MIB + 9] = b"middle"
    assert (ahead.warm / "archive.npz").read_bytes() == bytes(expected)
    assert temps(ahead.warm) == []


def test_truncating_below_the_copied_range_then_growing(ahead: Mount) -> None:
    data = chunks(10, 80)
    target = ahead.path / "shrunk"
    with open(target, "wb") as f:
        for c in data:
            f.write(c)
        f.flush()
        wait_for_temp(ahead.warm, 5 * MIB)
        f.truncate(2 * MIB + 17)
        f.seek(0, os.SEEK_END)
        f.write(b"tail" * 1000)
        f.truncate(9 * MIB)  # a hole after the tail: zeros, not old bytes
    expected = (b"".join(data)[:2 * MIB + 17] + b"tail" * 1000).ljust(9 * MIB, b"\0")
    assert (ahead.warm / "shrunk").read_bytes() == expected
    assert temps(ahead.warm) == []


def test_rename_away_and_remove_the_old_directory_while_writing(ahead: Mount) -> None:
    (ahead.path / "old").mkdir()
    (ahead.path / "new").mkdir()
    data = chunks(8, 120)
    with open(ahead.path / "old" / "f", "wb") as f:
        for c in data[:6]:
            f.write(c)
        f.flush()
        wait_for_temp(ahead.warm / "old", 3 * MIB)
        os.rename(ahead.path / "old" / "f", ahead.path / "new" / "f")
        os.rmdir(ahead.path / "old")  # takes the temp file with it
        for c in data[6:]:
            f.write(c)
    assert (ahead.warm / "new" / "f").read_bytes() == b"".join(data)
    assert not (ahead.warm / "old").exists()
    assert temps(ahead.warm) == []


def test_hard_link_made_while_writing_sees_the_content(ahead: Mount) -> None:
    data = chunks(6, 160)
    with open(ahead.path / "linked", "wb") as f:
        for c in data[:4]:
            f.write(c)
        f.flush()
        wait_for_temp(ahead.warm, 2 * MIB)
        os.link(ahead.path / "linked", ahead.path / "other-name")
        for c in data[4:]:
            f.write(c)
    for name in ("linked", "other-name"):
        assert (ahead.warm / name).read_bytes() == b"".join(data)
    assert os.stat(ahead.warm / "linked").st_ino == os.stat(ahead.warm / "other-name").st_ino
    assert temps(ahead.warm) == []


def test_unlinked_while_writing_leaves_nothing(ahead: Mount) -> None:
    with open(ahead.path / "gone", "wb") as f:
        for c in chunks(6, 200):
            f.write(c)
        f.flush()
        wait_for_temp(ahead.warm, 2 * MIB)
        os.unlink(ahead.path / "gone")
        f.write(b"more")
    assert not (ahead.warm / "gone").exists()
    assert temps(ahead.warm) == []


def test_crossing_the_threshold_drops_the_head_start(ahead: Mount) -> None:
    data = chunks(48, 220)  # past the 40 MiB threshold: the file goes to the bucket
    with open(ahead.path / "big", "wb") as f:
        for c in data[:8]:
            f.write(c)
        f.flush()
        wait_for_temp(ahead.warm, 4 * MIB)
        for c in data[8:]:
            f.write(c)
    assert (ahead.warm / "big").is_symlink()  # a stub: the data is in the bucket
    assert (ahead.path / "big").read_bytes() == b"".join(data)
    assert temps(ahead.warm) == []


def test_rewrites_in_place_are_not_copied_ahead(ahead: Mount) -> None:
    """A database rewriting pages of an existing file: a head-start copy would be undone by
    the next write, so none is made; close publishes the pages."""
    target = ahead.path / "pages.db"
    target.write_bytes(b"".join(chunks(16, 30)))
    fd = os.open(target, os.O_RDWR)
    try:
        for page in range(0, 64):
            os.pwrite(fd, page.to_bytes(4, "big") * 1024, page * 4096 * 7)
        time.sleep(0.5)  # time enough for a background copy to have started
        assert temps(ahead.warm) == []
    finally:
        os.close(fd)
    expected = bytearray(b"".join(chunks(16, 30)))
    for page in range(0, 64):
        expected[page * 4096 * 7:page * 4096 * 7 + 4096] = page.to_bytes(4, "big") * 1024
    assert (ahead.warm / "pages.db").read_bytes() == bytes(expected)
