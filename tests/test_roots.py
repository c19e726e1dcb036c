"""Named warm roots in one mount: the top directory, each root's own warm directory and
bucket prefix, EXDEV between roots, the control commands and recovery per root."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from conftest import Mount, tierfs


def test_top_level_lists_the_roots(roots_mount: Mount) -> None:
    m = roots_mount
    assert sorted(os.listdir(m.path)) == ["cluster", "shared", "user"]
    st = os.stat(m.path)
    assert st.st_mode & 0o777 == 0o555
    for name in ("cluster", "user", "shared"):
        assert os.path.isdir(m.path / name)
        assert os.listdir(m.path / name) == []


def test_files_land_in_their_roots_warm_directory(roots_mount: Mount) -> None:
    m = roots_mount
    for name in ("cluster", "user", "shared"):
        (m.path / name / "d").mkdir()
        (m.path / name / "d" / "f").write_bytes(name.encode())
        os.rename(m.path / name / "d" / "f", m.path / name / "d" / "g")
    for name in ("cluster", "user", "shared"):
        assert (m.roots[name] / "d" / "g").read_bytes() == name.encode()
        assert not (m.roots[name] / "d" / "f").exists()
        assert (m.path / name / "d" / "g").read_bytes() == name.encode()
    assert sorted(os.listdir(m.roots["user"])) == ["d"]
