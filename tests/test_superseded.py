"""Staged data that a failed publish left behind never comes back over newer state: a later
successful write, an unlink or a rename of the file supersedes it, through remounts too.

Each test makes a sync-mode close fail (the warm directory refuses the publish: immutable), so
that the close gets EIO and its data stays staged and journaled for another try, then lets
the directory accept changes again and changes the file through the mount."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, make_mount, running, tierfs
from test_durability import set_immutable


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Directories made immutable by a test, made mutable again afterwards (if still there:
    a warm tier of its own is unmounted first)."""
    made: list[Path] = []
    yield made
    for path in made:
        if path.exists():
            set_immutable(path, False)


def failed_write(m: Mount, immutable: list[Path], name: str, data: bytes) -> None:
    """Write ``d/<name>`` and close it while the warm directory refuses the publish."""
    set_immutable(m.warm / "d", True)
    immutable.append(m.warm / "d")
    before = m.log().count("failed at release")
    f = open(m.path / "d" / name, "wb")
    f.write(data)
    with pytest.raises(OSError):
        f.close()
    # The kernel's release comes after close returns, and tries once more: wait for it.
    deadline = time.monotonic() + 10
    while m.log().count("failed at release") == before:
        assert time.monotonic() < deadline, "the release never tried to publish"
        time.sleep(0.05)
    set_immutable(m.warm / "d", False)


@pytest.mark.parametrize("warm_apart", [False, True], ids=["by-rename", "by-copy"])
def test_a_later_write_supersedes_data_a_failed_publish_kept(
        tmp_path: Path, immutable: list[Path], warm_apart: bool) -> None:
    m = make_mount(tmp_path, "--durability", "sync", warm_apart=warm_apart)
    with running(m):
        (m.path / "d").mkdir()
        (m.path / "d" / "g").write_bytes(b"v0")
        failed_write(m, immutable, "g", b"OLD")
        (m.path / "d" / "g").write_bytes(b"NEW")
        assert (m.path / "d" / "g").read_bytes() == b"NEW"
        m.restart()
        assert (m.path / "d" / "g").read_bytes() == b"NEW"
        assert (m.warm / "d" / "g").read_bytes() == b"NEW"


def test_an_unlink_supersedes_data_a_failed_publish_kept(
        tmp_path: Path, immutable: list[Path]) -> None:
    m = make_mount(tmp_path, "--durability", "sync")
    with running(m):
        (m.path / "d").mkdir()
        (m.path / "d" / "g").write_bytes(b"v0")
        failed_write(m, immutable, "g", b"OLD")
        (m.path / "d" / "g").unlink()
        m.restart()
        assert not (m.path / "d" / "g").exists()
        assert not (m.warm / "d" / "g").exists()


def test_data_a_failed_publish_kept_follows_its_file_through_a_rename(
        tmp_path: Path, immutable: list[Path]) -> None:
    """The kept data is the file's: the background retry publishes it under the name the
    file has by then, and the old name is not brought back, through a remount too. (Kept
    data that is still not home at unmount goes to its new name at the next mount's
    recovery: tests/core/test_recovery.py.)"""
    m = make_mount(tmp_path, "--durability", "sync")
    with running(m):
        (m.path / "d").mkdir()
        (m.path / "d" / "f9").write_bytes(b"v0")
        failed_write(m, immutable, "f9", b"OLD")
        (m.path / "d" / "f9").rename(m.path / "d" / "g9")
        assert (m.path / "d" / "g9").read_bytes() == b"OLD"
        deadline = time.monotonic() + 30
        while not ((m.warm / "d" / "g9").exists()
                   and (m.warm / "d" / "g9").read_bytes() == b"OLD"):
            assert time.monotonic() < deadline, "the kept data was never published"
            time.sleep(0.1)
        assert not (m.warm / "d" / "f9").exists()
        result = tierfs("unmount", str(m.path), check=False)
        assert result.returncode == 0, result.stderr
        m.start()
        assert not (m.path / "d" / "f9").exists()
        assert (m.path / "d" / "g9").read_bytes() == b"OLD"
        assert not (m.warm / "d" / "f9").exists()
