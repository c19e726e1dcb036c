"""A pin is of a path (``tierfs pin PATH``), kept under the version the path held. When the
file is saved again, replaced or removed, the old version's blocks must not stay pinned: no
read reaches them and no eviction takes them, so each save of a pinned checkpoint used to
hold its blocks on the hot tier for good."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, make_mount, running, tierfs

KIB = 1024


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Mount]:
    (tmp_path / "cold").mkdir()
    with running(make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                            "--large-file-threshold", "64KiB", "--block-size", "64KiB",
                            "--cache-warm", "true")) as mm:
        yield mm


def pinned(m: Mount) -> int:
    return json.loads(tierfs("stats", "--json", str(m.path)).stdout)["tiers"]["hot"]["pinned"]


def where(path: Path) -> dict:
    return json.loads(tierfs("where", "--json", str(path)).stdout)[0]


def test_unpin_after_a_rewrite_unpins_the_old_version_too(m: Mount) -> None:
    f = m.path / "ckpt.bin"
    f.write_bytes(os.urandom(512 * KIB))  # in the bucket (past 64 KiB)
    tierfs("pin", str(f))
    assert pinned(m) == 512 * KIB
    f.write_bytes(os.urandom(512 * KIB))  # a new version
    tierfs("unpin", str(f))
    assert pinned(m) == 0 and where(f)["pinned"] is False
    m.restart()
    assert pinned(m) == 0


def test_pin_after_a_rewrite_moves_the_pin(m: Mount) -> None:
    f = m.path / "ckpt.bin"
    f.write_bytes(os.urandom(512 * KIB))
    tierfs("pin", str(f))
    f.write_bytes(os.urandom(256 * KIB))
    tierfs("pin", str(f))
    assert pinned(m) == 256 * KIB and where(f)["pinned"] is True


def test_unpin_of_a_directory_drops_the_pins_of_files_gone_from_it(m: Mount) -> None:
    (m.path / "d").mkdir()
    for name in ("a", "b"):
        (m.path / "d" / name).write_bytes(os.urandom(256 * KIB))
    tierfs("pin", str(m.path / "d"))
    assert pinned(m) == 512 * KIB
    (m.path / "d" / "a").unlink()
    tierfs("unpin", str(m.path / "d"))
    assert pinned(m) == 0


@pytest.mark.slow
def test_a_pin_follows_its_path_when_the_file_is_saved_again(m: Mount) -> None:
    """No pin or unpin after the saves: the mount looks at pinned paths again, a round
    every 30 s, and moves each pin to the version at its path (dropped if none is)."""
    f = m.path / "ckpt.bin"
    f.write_bytes(os.urandom(512 * KIB))
    (m.path / "gone.bin").write_bytes(os.urandom(128 * KIB))
    tierfs("pin", str(f), str(m.path / "gone.bin"))
    assert pinned(m) == 640 * KIB
    for _ in range(3):
        f.write_bytes(os.urandom(512 * KIB))  # each save kept hot as it is written
    (m.path / "gone.bin").unlink()
    deadline = time.monotonic() + 45
    while pinned(m) != 512 * KIB:
        assert time.monotonic() < deadline, f"still {pinned(m)} bytes pinned"
        time.sleep(1)
    assert where(f)["pinned"] is True


@pytest.mark.slow
def test_pin_of_a_pinned_file_not_home_yet_keeps_its_pin(tmp_path: Path) -> None:
    """``tierfs pin f`` while f's new version is written and not home yet (write-back, open)
    dropped the pin f had and made none: nothing of f was pinned once it was published, and
    the background round had no pin to move to it."""
    with running(make_mount(tmp_path, "--durability", "writeback", "--cache-warm", "true",
                            "--block-size", "64KiB")) as m:
        f = m.path / "ckpt.bin"
        f.write_bytes(os.urandom(512 * KIB))
        tierfs("flush", str(m.path))
        tierfs("pin", str(f))
        assert pinned(m) == 512 * KIB and where(f)["pinned"] is True
        with open(f, "wb") as h:  # saved again; open: not published before its close
            h.write(os.urandom(256 * KIB))
            h.flush()
            tierfs("pin", str(f))
        tierfs("flush", str(m.path))
        deadline = time.monotonic() + 45  # (the round moves the pin to the new version)
        while not where(f)["pinned"]:
            assert time.monotonic() < deadline, "the pin was lost"
            time.sleep(1)
        assert pinned(m) <= 256 * KIB  # (the old version's blocks are not)


@pytest.mark.slow
def test_a_pin_goes_when_its_path_holds_a_file_never_cached(tmp_path: Path) -> None:
    """A pinned file in the bucket saved again small, a warm file, which a mount not caching
    warm files keeps no blocks of: the background round kept the old version's pin."""
    (tmp_path / "cold").mkdir()
    with running(make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                            "--large-file-threshold", "64KiB", "--block-size", "64KiB",
                            "--cache-warm", "false")) as m:
        f = m.path / "ckpt.bin"
        f.write_bytes(os.urandom(512 * KIB))  # in the bucket
        tierfs("pin", str(f))
        assert pinned(m) == 512 * KIB
        f.write_bytes(b"small now")
        assert where(f)["tier"] == "warm"
        deadline = time.monotonic() + 45
        while pinned(m) != 0:
            assert time.monotonic() < deadline, f"still {pinned(m)} bytes pinned"
            time.sleep(1)
