"""A write-back mount whose saves return before their names are made on the warm tier
(``core.naming``), through the kernel, on the NFS-like tier (every warm call a round trip):
a sharded save's names are all on the tier once each close returns, as another node sees
them; what is read, listed, renamed or stat'ed right after a create is what a plain
directory gives."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import Mount, make_mount, running, tierfs
from nfslike import missing_tools

if missing_tools():
    pytest.fail(f"{', '.join(missing_tools())} not installed; .ci/run installs them",
                pytrace=False)

NFS = {"latency": 0.001, "max_conns": 1}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def wb_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with running(make_mount(tmp_path_factory.mktemp("namedlater"), "--durability",
                            "writeback", warm_nfs=NFS)) as m:
        yield m


def shard(i: int) -> bytes:
    return bytes([i]) * (MIB + i)


def test_each_shard_is_named_on_the_tier_once_its_close_returns(wb_mount: Mount) -> None:
    d = wb_mount.path / "ckpt"
    d.mkdir()
    for i in range(16):
        with open(d / f"shard-{i:02d}.pt", "wb") as f:
            f.write(shard(i))
        # Another node sees the name at once after the close (close-to-open).
        assert (wb_mount.warm / "ckpt" / f"shard-{i:02d}.pt").exists()
    listed = {p.name: p.stat().st_size for p in d.iterdir()}
    assert listed == {f"shard-{i:02d}.pt": MIB + i for i in range(16)}
    tierfs("flush", str(wb_mount.path))
    for i in range(16):
        assert (wb_mount.warm / "ckpt" / f"shard-{i:02d}.pt").read_bytes() == shard(i)
    assert "could not make the name" not in wb_mount.log()


def test_what_a_program_does_right_after_its_create(wb_mount: Mount) -> None:
    d = wb_mount.path / "after"
    d.mkdir()
    (d / "first").write_bytes(b"1")
    # Read back through the same descriptor (a database's file, h5py).
    with open(d / "rw", "w+b") as f:
        f.write(b"abc" * 1000)
        f.seek(0)
        assert f.read() == b"abc" * 1000
        assert os.fstat(f.fileno()).st_size == 3000
    # Renamed, listed and removed while still open.
    f = open(d / "tmp", "wb")
    f.write(b"partial")
    os.rename(d / "tmp", d / "final")
    assert sorted(os.listdir(d)) == ["final", "first", "rw"]
    f.write(b" and the rest")
    f.close()
    g = open(d / "gone", "wb")
    g.write(b"never published")
    os.unlink(d / "gone")
    g.close()
    # Attributes set right after the create.
    with open(d / "mode", "wb") as h:
        os.fchmod(h.fileno(), 0o600)
        h.write(b"x")
    tierfs("flush", str(wb_mount.path))
    warm = wb_mount.warm / "after"
    assert sorted(os.listdir(warm)) == ["final", "first", "mode", "rw"]
    assert (warm / "final").read_bytes() == b"partial and the rest"
    assert (warm / "rw").read_bytes() == b"abc" * 1000
    assert (warm / "mode").stat().st_mode & 0o777 == 0o600
    assert (d / "final").read_bytes() == b"partial and the rest"
