"""A pinned file (``tierfs pin``: fetched and kept hot, never evicted) is left on the warm tier
by ``tierfs demote`` and by the warm quota: its hot blocks are the warm version's, and the
object it would become starts with none, so a demotion would quietly undo the pin."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import Mount, make_mount, running, tierfs
from tierfs.stubs import looks_like_stub

MIB = 1024 * 1024


def local(base: Path, *extra: str) -> Mount:
    (base / "cold").mkdir(exist_ok=True)
    m = make_mount(base, "--bucket", f"file://{base / 'cold'}", "--large-file-threshold",
                   "64MiB", "--part-size", "5MiB", "--attr-timeout", "0",
                   "--entry-timeout", "0", "--cache-warm", "true", *extra)
    m.warm.mkdir(parents=True, exist_ok=True)
    return m


def is_stub(path: Path) -> bool:
    return path.is_symlink() and looks_like_stub(os.readlink(path).encode())


def where(path: Path) -> dict:
    return json.loads(tierfs("where", "--json", str(path)).stdout)[0]


def test_demote_leaves_a_pinned_file_hot(tmp_path: Path) -> None:
    m = local(tmp_path)
    data = os.urandom(4 * MIB)
    (m.warm / "p.bin").write_bytes(data)
    (m.warm / "q.bin").write_bytes(data)
    with running(m):
        tierfs("pin", str(m.path / "p.bin"))
        out = tierfs("demote", str(m.path / "p.bin"), str(m.path / "q.bin"), check=False).stdout
        assert "pinned" in out and not is_stub(m.warm / "p.bin"), out
        assert is_stub(m.warm / "q.bin"), out  # (the other one goes)
        state = where(m.path / "p.bin")
        assert state["pinned"] is True and state["hot"] == len(data), state
        assert (m.path / "p.bin").read_bytes() == data
        tierfs("unpin", str(m.path / "p.bin"))
        tierfs("demote", str(m.path / "p.bin"))
        assert is_stub(m.warm / "p.bin")
        assert (m.path / "p.bin").read_bytes() == data


def test_the_quota_leaves_a_pinned_file_hot(tmp_path: Path) -> None:
    m = local(tmp_path, "--warm-quota", "6MiB", "--demote-min-size", "1MiB",
              "--demote-interval", "3")
    files = {f"f{i}.bin": os.urandom(4 * MIB) for i in range(2)}
    for i, (name, data) in enumerate(files.items()):
        (m.warm / name).write_bytes(data)
        t = time.time_ns() - (10 - i) * 10**10  # f0 the oldest
        os.utime(m.warm / name, ns=(t, t))
    with running(m):
        tierfs("pin", str(m.path / "f0.bin"))  # (its read makes f0 used now)
        assert not any(is_stub(m.warm / n) for n in files), "(the quota came first)"
        time.sleep(0.05)
        (m.warm / "f1.bin").read_bytes()  # f1 used after: f0 the least recently used
        assert os.stat(m.warm / "f1.bin").st_atime_ns > os.stat(m.warm / "f0.bin").st_atime_ns
        deadline = time.monotonic() + 20
        while not any(is_stub(m.warm / n) for n in files):
            assert time.monotonic() < deadline, "the quota demoted nothing"
            time.sleep(0.1)
        assert not is_stub(m.warm / "f0.bin") and is_stub(m.warm / "f1.bin")
        state = where(m.path / "f0.bin")
        assert state["pinned"] is True and state["hot"] == 4 * MIB, state
        for name, data in files.items():
            assert (m.path / name).read_bytes() == data
