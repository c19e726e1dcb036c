"""``tierfs warm --ray`` on a local Ray cluster of two simulated nodes, each with a mount of
its own (one warm tier and one bucket shared, as nodes of a real cluster share them; a hot
tier and a mount point each). Both simulated nodes run on this machine, so each names its
mount point in its environment (TIERFS_MOUNT), as a node whose mount point differs would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, make_mount, running, tierfs

SMALL_STORE = 100 * 1024 * 1024


@pytest.fixture
def two_mounts(tmp_path: Path) -> Iterator[tuple[Mount, Mount]]:
    cold = tmp_path / "cold"
    cold.mkdir()
    extra = ("--bucket", f"file://{cold}", "--large-file-threshold", "4KiB")
    a = make_mount(tmp_path / "a", *extra)
    b = make_mount(tmp_path / "b", *extra)
    b.warm = a.warm  # one shared warm tier
    with running(a), running(b):
        yield a, b


@pytest.fixture
def cluster(two_mounts: tuple[Mount, Mount], ray_temp_dir: str) -> Iterator[object]:
    """Two Ray nodes on this machine, one CPU and a 100 MB object store each, no dashboard;
    each node's environment names its mount. Shut down after the test."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    a, b = two_mounts
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": SMALL_STORE, "include_dashboard": False,
        "temp_dir": ray_temp_dir, "env_vars": {"TIERFS_MOUNT": str(a.path)}})
    try:
        c.add_node(num_cpus=1, object_store_memory=SMALL_STORE, temp_dir=ray_temp_dir,
                   env_vars={"TIERFS_MOUNT": str(b.path)})
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def hot_share(path: Path) -> tuple[int, int]:
    """(bytes hot, bytes in all) of ``path`` in the hot tier of the mount holding it."""
    [report] = json.loads(tierfs("warm", "--check", "--json", str(path)).stdout)
    return report["hot"], report["size"]


@pytest.mark.ray
def test_warm_ray_warms_every_nodes_own_hot_tier(two_mounts: tuple[Mount, Mount],
                                                 cluster: object) -> None:
    a, b = two_mounts
    data = {f"data/part-{i}.bin": os.urandom(200_000 + i) for i in range(3)}
    (a.path / "data").mkdir()
    for rel, payload in data.items():
        (a.path / rel).write_bytes(payload)
    for rel in data:  # stubs: the data is in the bucket
        assert os.readlink(a.warm / rel).startswith("tierfs:")
    tierfs("evict", str(a.path / "data"))
    total = sum(map(len, data.values()))
    assert hot_share(a.path / "data") == (0, total)
    assert hot_share(b.path / "data") == (0, total)

    result = tierfs("warm", "--ray", "--json", "--address", cluster.address,  # type: ignore
                    str(a.path / "data"), timeout=300)
    reports = json.loads(result.stdout)
    assert len({r["node"] for r in reports}) == 2, reports
    assert all(r["hot"] == r["size"] == total and r["to_fetch"] == 0 for r in reports)

    assert hot_share(a.path / "data") == (total, total)
    assert hot_share(b.path / "data") == (total, total)
    for rel, payload in data.items():
        assert (b.path / rel).read_bytes() == payload


@pytest.mark.ray
def test_one_progress_counts_every_nodes_bytes(two_mounts: tuple[Mount, Mount],
                                               cluster: object) -> None:
    """What the one progress bar is fed: bytes fetched and to fetch summed over the nodes,
    ending with every node's bytes fetched."""
    from tierfs.cluster import warm_cluster

    a, b = two_mounts
    (a.path / "big.bin").write_bytes(os.urandom(3_000_000))
    tierfs("evict", str(a.path / "big.bin"))
    seen: list[tuple[int, int]] = []
    nodes, failed = warm_cluster([(str(a.path / "big.bin"), str(a.path))],
                                 cluster.address, check=False,  # type: ignore
                                 on_progress=lambda done, total: seen.append((done, total)))
    assert failed == [] and len(nodes) == 2
    assert sorted(n["mountpoint"] for n in nodes) == sorted([str(a.path), str(b.path)])
    assert seen[-1] == (6_000_000, 6_000_000), seen
    assert all(done <= total <= 6_000_000 for done, total in seen), seen


@pytest.mark.ray
def test_warm_ray_names_a_node_without_its_mount_and_warms_the_others(
        two_mounts: tuple[Mount, Mount], cluster: object) -> None:
    a, b = two_mounts
    (a.path / "f.bin").write_bytes(os.urandom(10_000))
    tierfs("evict", str(a.path / "f.bin"))
    b.stop()  # node b's mount is gone
    result = tierfs("warm", "--ray", "--address", cluster.address,  # type: ignore
                    str(a.path / "f.bin"), check=False, timeout=300)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("tierfs: error: node ") and "not inside a running tierfs mount" in line
    assert str(b.path) in line, line
    assert hot_share(a.path / "f.bin") == (10_000, 10_000)
    assert "f.bin" in result.stdout  # node a's report


def test_a_node_finds_the_path_below_its_own_mount_point() -> None:
    cluster = pytest.importorskip("tierfs.cluster")
    assert cluster.node_path("/mnt/t/data/x", "/mnt/t", None) == "/mnt/t/data/x"
    assert cluster.node_path("/mnt/t/data/x", "/mnt/t", "/nodes/b") == "/nodes/b/data/x"
    assert cluster.node_path("/mnt/t", "/mnt/t", "/nodes/b") == "/nodes/b"
    assert cluster.node_path("/nodes/b/x", None, "/nodes/b/") == "/nodes/b/x"
    with pytest.raises(cluster.ClusterError, match="TIERFS_MOUNT=/nodes/b"):
        cluster.node_path("/elsewhere/x", None, "/nodes/b")


def test_the_command_line_works_without_ray() -> None:
    """Ray is an optional extra: no command imports it unless asked for --ray."""
    result = subprocess.run([sys.executable, "-c", "import sys, tierfs.cli; "
                             "print('ray' in sys.modules)"], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
