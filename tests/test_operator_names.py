"""Operator commands given names that are not plain text: brackets (rich markup), a newline,
bytes that are not UTF-8. Each is a file's name as any user may give it, shown as one line
of text and never taken for anything else. And paths that reach a mount through a symbolic
link, as a shell's do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, make_mount, running

KIB = 1024


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Mount]:
    (tmp_path / "cold").mkdir()
    mm = make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                    "--large-file-threshold", "64KiB", "--block-size", "64KiB",
                    "--cache-warm", "true")
    with running(mm):
        yield mm


def cli(*args: str | bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tierfs", *args], capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_warm_report_shows_names_with_brackets_as_they_are(m: Mount) -> None:
    """rich read "[abc]" as markup: one name lost it, another ("x[/]") ended the command
    with a traceback after the data was fetched."""
    (m.path / "x[").mkdir()
    (m.path / "x[" / "]").write_bytes(os.urandom(200 * KIB))
    (m.path / "img[abc].png").write_bytes(b"x" * 1000)
    for name, args in ((b"x[/]", ("warm", str(m.path / "x[" / "]"))),
                       (b"img[abc].png", ("warm", "--check", str(m.path / "img[abc].png")))):
        r = cli(*args)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
        assert name in r.stdout, r.stdout


def test_pin_shows_a_name_with_a_newline_on_one_line(m: Mount) -> None:
    (m.path / "a\nb").write_bytes(os.urandom(200 * KIB))
    for cmd in ("pin", "unpin"):
        r = cli(cmd, str(m.path / "a\nb"))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [r.stdout.strip()] and b"a\\x0ab" in r.stdout


def test_pin_of_a_name_that_is_not_utf8(m: Mount) -> None:
    """The pin's label was encoded as UTF-8: the request failed with a traceback in the
    mount's log (the fixture fails on it), after pinning part of a directory."""
    path = os.path.join(os.fsencode(m.path), b"x\xff y")
    with open(path, "wb") as f:
        f.write(os.urandom(200 * KIB))
    for cmd in (b"pin", b"unpin"):
        r = cli(cmd, path)
        assert r.returncode == 0, r.stderr
        assert b"x\\xff y" in r.stdout


def test_paths_through_a_link_reach_the_mount(m: Mount, tmp_path: Path) -> None:
    """A link to a folder of the mount, and to the mount itself: refused as "not inside a
    running tierfs mount", and scan walked the mount through FUSE as if it were a warm tier
    (a file in the bucket counted as a large file on the warm tier)."""
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_bytes(os.urandom(200 * KIB))  # in the bucket (past 64 KiB)
    (tmp_path / "to-d").symlink_to(m.path / "d")
    (tmp_path / "to-mnt").symlink_to(m.path)
    r = cli("where", "--json", str(tmp_path / "to-d" / "f"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["tier"] == "cold"
    r = cli("scan", "--json", str(tmp_path / "to-mnt"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["count"] == 0


def test_relative_paths_in_a_mount_named_through_a_link(tmp_path: Path) -> None:
    """The mount point given as lnk/mnt, lnk a link: a shell's working directory inside the
    mount is the resolved path, so no relative path was ever found in the mount."""
    (tmp_path / "real" / "mnt").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "real")
    (tmp_path / "cold").mkdir()
    mm = make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}")
    mm.path = tmp_path / "lnk" / "mnt"
    with running(mm):
        (mm.path / "f").write_bytes(b"x" * 1000)
        r = subprocess.run([sys.executable, "-m", "tierfs", "where", "--json", "f"],
                           capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, cwd=mm.path)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)[0]["size"] == 1000
