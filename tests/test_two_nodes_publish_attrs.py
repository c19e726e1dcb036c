"""A file node B writes while node A renames it away or unlinks it: B's close publishes it
back at the name B knows (docs/semantics.md, "What another node sees", rename), and it must
come back with the file's own owner and mode, not owned by the daemon with the staging
file's mode 0600 (its owner would lose access). The owner and mode are the ones B last saw
(``OpenFile.base``)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Mount, make_mount, running

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


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


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
