"""Path rules in a mount of named roots: patterns are relative to the mount's root
(docs/configuration.md), whose top directory holds the roots, so ``b/keep/*`` names files
under the root ``b`` alone. Each root's placement matched its own root-relative paths, so
such a rule was ignored by writes, demotion and promotion, and ``keep/*`` held in every
root."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import make_roots_mount, running, tierfs
from tierfs.stubs import looks_like_stub

MIB = 1024 * 1024


def is_stub(path: Path) -> bool:
    return path.is_symlink() and looks_like_stub(os.readlink(path).encode())


def test_rules_name_a_root_as_the_mount_shows_it(tmp_path: Path) -> None:
    m = make_roots_mount(tmp_path, ("a", "b"), "--large-file-threshold", "64MiB",
                         "--part-size", "5MiB", "--attr-timeout", "0", "--entry-timeout", "0",
                         "--rules", "b/keep/*=warm", "--rules", "a/cold/*=cold")
    data = os.urandom(2 * MIB)
    for root in ("a", "b"):
        for d in ("keep", "cold"):
            (m.roots[root] / d).mkdir()
            (m.roots[root] / d / "x.bin").write_bytes(data)
    with running(m):
        out = tierfs("demote", str(m.path / "b" / "keep" / "x.bin"), check=False).stdout
        assert "a rule keeps it" in out and not is_stub(m.roots["b"] / "keep" / "x.bin")
        # The same name in the other root is no rule's.
        tierfs("demote", str(m.path / "a" / "keep" / "x.bin"))
        assert is_stub(m.roots["a"] / "keep" / "x.bin")
        tierfs("demote", str(m.path / "a" / "cold" / "x.bin"))
        tierfs("promote", str(m.path / "a" / "cold" / "x.bin"), check=False)
        assert is_stub(m.roots["a"] / "cold" / "x.bin")
        (m.path / "a" / "cold" / "small.bin").write_bytes(b"z" * 1000)
        assert is_stub(m.roots["a"] / "cold" / "small.bin")
        (m.path / "b" / "cold" / "small.bin").write_bytes(b"z" * 1000)
        assert not is_stub(m.roots["b"] / "cold" / "small.bin")
        assert (m.path / "a" / "cold" / "small.bin").read_bytes() == b"z" * 1000
