"""Names another node changes under a file this node knows (two mounts sharing one warm tree
and a local-folder bucket, as in test_two_nodes.py).

- A hard-linked file: node A removes, replaces or moves one of its names, and node B, which
  had looked up both, must go on using the names the file still has. B built the file's path
  from the first name it had found, so it opened nothing, read another file's bytes, or
  published its writes over the new file A had made at that name (``InodeTable._confirm``:
  the name a lookup just found comes first, and a file found with a single name has no
  other).
- A file B writes while A renames it away or unlinks it: B's close publishes it back at the
  name B knows (docs/semantics.md, "What another node sees", rename), and it must come back
  with the file's own owner and mode (the ones B last saw, ``OpenFile.base``), not owned by
  the daemon with the staging file's mode 0600 (its owner would lose access).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Mount, make_mount, read_uncached, running
from test_two_nodes import _eventually, _write

SETTLE = 1.6


def _pair(tmp_path: Path) -> tuple[Mount, Mount]:
    warm, cold = tmp_path / "shared-warm", tmp_path / "cold"
    warm.mkdir()
    cold.mkdir()
    nodes = []
    for n in ("a", "b"):
        m = make_mount(tmp_path / n, "--bucket", f"file://{cold}", "--large-file-threshold",
                       "16KiB", "--part-size", "5MiB")
        m.warm = warm
        nodes.append(m)
    return nodes[0], nodes[1]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Mount, Mount]]:
    a, b = _pair(tmp_path)
    with running(a), running(b):
        yield a, b


def _read_or_error(path: Path) -> bytes | OSError:
    try:
        return read_uncached(path)
    except OSError as e:
        return e


def test_hard_link_survivor_opens_on_b_after_a_unlinks_the_other_name(
        nodes: tuple[Mount, Mount]) -> None:
    """B looked up both names of a hard-linked file (made on A); A unlinks the first one.
    The other name is still there (B lists it) and must open on B within the timeouts; it
    fails with ENOENT for as long as B's kernel keeps the inode."""
    a, b = nodes
    data = os.urandom(5000)
    _write(a.path / "f", data)
    os.link(a.path / "f", a.path / "g")
    time.sleep(SETTLE)
    assert (b.path / "f").stat().st_ino == (b.path / "g").stat().st_ino
    os.unlink(a.path / "f")
    time.sleep(SETTLE)
    assert os.listdir(b.path) == ["g"]
    got = _eventually(lambda: (lambda r: r if isinstance(r, bytes) else None)(
        _read_or_error(b.path / "g")))
    assert got == data, _read_or_error(b.path / "g")


def test_hard_link_survivor_on_b_after_a_replaces_the_other_name(
        nodes: tuple[Mount, Mount]) -> None:
    """As above, then A makes a new file at the removed name: B reading g must get g's
    bytes, never the new file f's."""
    a, b = nodes
    data, other = b"g" * 5000, b"F" * 3000
    _write(a.path / "f", data)
    os.link(a.path / "f", a.path / "g")
    time.sleep(SETTLE)
    assert (b.path / "f").stat().st_ino == (b.path / "g").stat().st_ino
    os.unlink(a.path / "f")
    _write(a.path / "f", other)
    time.sleep(SETTLE)
    seen = []
    for _ in range(20):
        got = _read_or_error(b.path / "g")
        seen.append(got if isinstance(got, OSError) else got[:1])
        assert not (isinstance(got, bytes) and got == other), "g read as the new f"
        if got == data:
            break
        time.sleep(0.2)
    assert read_uncached(b.path / "g") == data, seen
    assert read_uncached(b.path / "f") == other


def test_hard_link_survivor_written_on_b_after_a_replaces_the_other_name(
        nodes: tuple[Mount, Mount]) -> None:
    """B writes g after A replaced the other name f by a new file: B's data must go to g,
    and A's new f must keep its content."""
    a, b = nodes
    _write(a.path / "f", b"g" * 5000)
    os.link(a.path / "f", a.path / "g")
    time.sleep(SETTLE)
    assert (b.path / "f").stat().st_ino == (b.path / "g").stat().st_ino
    os.unlink(a.path / "f")
    _write(a.path / "f", b"F" * 3000)
    time.sleep(SETTLE)
    try:
        _write(b.path / "g", b"written on b")
    except OSError:
        pass  # (a failed write is B's to see: what matters is that f is untouched)
    time.sleep(SETTLE)
    assert (a.warm / "f").read_bytes() == b"F" * 3000, "A's new file was overwritten"
    assert (a.warm / "g").read_bytes() == b"written on b"


def test_hard_link_survivor_after_a_renames_the_other_name(nodes: tuple[Mount, Mount]) -> None:
    a, b = nodes
    _write(a.path / "f", b"data")
    os.link(a.path / "f", a.path / "g")
    time.sleep(SETTLE)
    assert (b.path / "f").stat().st_ino == (b.path / "g").stat().st_ino
    (a.path / "sub").mkdir()
    os.rename(a.path / "f", a.path / "sub" / "f")
    _write(a.path / "f", b"another file")
    time.sleep(SETTLE)
    got = _eventually(lambda: _read_or_error(b.path / "g") == b"data")
    assert got, _read_or_error(b.path / "g")  # (ESTALE for as long as B keeps the inode)


def test_b_writes_a_hard_link_whose_other_name_a_unlinks_meanwhile(
        nodes: tuple[Mount, Mount]) -> None:
    """B has g open for writing (f and g one file, made on A); A unlinks f; B's close must
    publish to g (the name B opened), not bring back f with B's data and leave g old."""
    a, b = nodes
    _write(a.path / "f", b"old content")
    os.link(a.path / "f", a.path / "g")
    time.sleep(SETTLE)
    assert (b.path / "f").stat().st_ino == (b.path / "g").stat().st_ino
    with open(b.path / "g", "r+b", buffering=0) as fh:
        fh.write(b"NEW")
        os.unlink(a.path / "f")
        time.sleep(SETTLE)
    time.sleep(SETTLE)
    assert sorted(os.listdir(a.warm)) == ["g"], os.listdir(a.warm)
    assert (a.warm / "g").read_bytes() == b"NEW content"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("how", ["rename", "unlink"])
def test_a_publish_after_another_node_took_the_name_keeps_owner_and_mode(
        nodes: tuple[Mount, Mount], how: str) -> None:
    a, b = nodes
    _write(a.path / "w", os.urandom(1000))
    os.chown(a.path / "w", 1234, 1234)
    os.chmod(a.path / "w", 0o640)
    time.sleep(SETTLE)
    with open(b.path / "w", "r+b", buffering=0) as f:
        f.write(b"XY")
        if how == "rename":
            os.rename(a.path / "w", a.path / "w2")
        else:
            os.unlink(a.path / "w")
        time.sleep(SETTLE)
    time.sleep(SETTLE)
    st = os.lstat(a.warm / "w")  # (B's close put it back at the name B knows)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 1234, 0o640)
