"""Unmount and flush say what they could not publish: the data stays staged for the next
mount (or the next try), and the command exits non-zero naming each file."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import make_mount, running, tierfs
from test_durability import set_immutable


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for path in made:
        if path.exists():
            set_immutable(path, False)


def test_unmount_names_what_it_could_not_publish_and_the_next_mount_publishes_it(
        tmp_path: Path, immutable: list[Path]) -> None:
    m = make_mount(tmp_path, "--durability", "sync")
    data = os.urandom(100_000)
    with running(m):
        (m.path / "d").mkdir()
        f = open(m.path / "d" / "g", "wb")
        f.write(data)
        f.flush()
        set_immutable(m.warm / "d", True)
        immutable.append(m.warm / "d")
        with pytest.raises(OSError):
            f.close()
        result = tierfs("unmount", str(m.path), check=False)
        assert result.returncode != 0, result.stdout + result.stderr
        assert "d/g" in result.stderr
        assert not os.path.ismount(m.path)
        set_immutable(m.warm / "d", False)
        m.start()
        assert (m.path / "d" / "g").read_bytes() == data
        result = tierfs("unmount", str(m.path), check=False)
        assert result.returncode == 0 and "not published" not in result.stderr
        m.start()  # (for the fixture's own clean-up)


def test_flush_names_what_it_could_not_publish(tmp_path: Path, immutable: list[Path]) -> None:
    m = make_mount(tmp_path, "--durability", "writeback")
    data = os.urandom(100_000)
    with running(m):
        (m.path / "d").mkdir()
        (m.path / "d" / "g").write_bytes(b"")
        set_immutable(m.warm / "d", True)
        immutable.append(m.warm / "d")
        (m.path / "d" / "g").write_bytes(data)  # write-back: the close returns
        result = tierfs("flush", str(m.path), check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "d/g" in result.stderr and "internal error" not in result.stderr
        set_immutable(m.warm / "d", False)
        deadline = time.monotonic() + 30
        while tierfs("flush", str(m.path), check=False).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert (m.warm / "d" / "g").read_bytes() == data
