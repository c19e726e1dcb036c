"""Order-aware prefetch through real mounts against moto's S3 server (behind a proxy that counts
requests): the ``prefetch`` control command and the Python API (``tierfs.prefetch``, ``warm``,
``where``, ``stats``), and ``tierfs.torch.PlannedSampler`` under a DataLoader with workers."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import S3Server, running
from s3proxy import FaultProxy
from test_cache import cold_mount, publish, read_uncached

import tierfs
from tierfs.control import registry

MIB = 1024 * 1024


def hits_and_misses(mnt: Path) -> tuple[int, int]:
    hot = tierfs.stats(mnt)["tiers"]["hot"]
    return hot["hits"], hot["misses"]


def shuffled_epoch(mnt: Path, names: list[str], files: dict[str, bytes], seed: int,
                   plan: bool) -> tuple[float, dict[str, Any] | None]:
    order = names[:]
    random.Random(seed).shuffle(order)
    paths = [mnt / "data" / name for name in order]
    hits, misses = hits_and_misses(mnt)
    status = tierfs.prefetch(paths, fetches=4, window=16 * MIB)[0] if plan else None
    for path, name in zip(paths, order):
        assert read_uncached(path) == files[name], name
    hits2, misses2 = hits_and_misses(mnt)
    return (hits2 - hits) / (hits2 - hits + misses2 - misses), status


def test_a_plan_makes_a_shuffled_epoch_over_twice_the_cache_hit_more(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    """LRU, whose shuffled epochs over twice its size hit least, under the plan's policy: the
    plan keeps what the epoch reads next and fetches ahead within its bounds."""
    m = cold_mount(tmp_path, proxy, bucket, "--hot-capacity", "64MiB", "--eviction", "lru",
                   "--read-memory", "16MiB")
    files = {f"f{i:03}.bin": os.urandom(MIB) for i in range(128)}  # 128 MiB
    publish(m, s3_server, files)
    names = sorted(files)
    with running(m):
        for name in names:  # the cache full of the last half read
            read_uncached(m.path / "data" / name)
        without = [shuffled_epoch(m.path, names, files, seed, plan=False)[0]
                   for seed in (1, 2)]
        gets = proxy.requests["GET"]
        _, misses = hits_and_misses(m.path)
        ratio, status = shuffled_epoch(m.path, names, files, 3, plan=True)
        ratio2, _ = shuffled_epoch(m.path, names, files, 4, plan=True)
        assert status is not None and status["blocks"] == 128
        last = tierfs.stop_prefetch(m.path)
        assert last is not None and last["peak_fetches"] <= 4
        assert last["peak_ahead"] <= 16 * MIB and last["fetched"] > 0
        # Every block read once per epoch, fetched at most once: no GET twice for a block.
        _, misses2 = hits_and_misses(m.path)
        assert proxy.requests["GET"] - gets <= misses2 - misses + 8
        assert min(ratio, ratio2) > max(without) + 0.1, (ratio, ratio2, without)
        assert min(ratio, ratio2) >= 0.4


def test_the_api_finds_mounts_by_path(tmp_path: Path, proxy: FaultProxy, bucket: str,
                                      s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    m = cold_mount(tmp_path, proxy, bucket)
    files = {"a.bin": os.urandom(2 * MIB), "b.bin": os.urandom(3 * MIB)}
    publish(m, s3_server, files)
    with running(m):
        data = m.path / "data"
        before = tierfs.warm([data / "a.bin", data], check=True)
        assert [(s["path"], s["hot"], s["to_fetch"]) for s in before] == [
            ("data/a.bin", 0, 2 * MIB), ("data", 0, 5 * MIB)]
        assert tierfs.warm(data / "a.bin")[0]["hot"] == 2 * MIB
        where = tierfs.where(data)
        assert where["hot"] == 2 * MIB and len(where["entries"]) == 2
        gets = proxy.requests["GET"]
        status = tierfs.prefetch([(data / "b.bin", MIB, MIB), data / "a.bin"])
        assert len(status) == 1 and status[0]["mountpoint"] == str(m.path)
        assert status[0]["blocks"] == 3 and status[0]["hot_at_start"] == 2 * MIB
        for _ in range(100):
            if tierfs.where(data / "b.bin")["hot"] == MIB:
                break
            __import__("time").sleep(0.05)
        assert tierfs.where(data / "b.bin")["hot"] == MIB  # only the range asked for
        assert proxy.requests["GET"] == gets + 1
        # The registry of mounts is read once for a plan, not once per path (an epoch's plan
        # names every file of the dataset).
        looks = []
        real_mounts = registry.mounts
        monkeypatch.setattr(registry, "mounts", lambda: looks.append(1) or real_mounts())
        assert tierfs.prefetch([data / "a.bin", data / "b.bin"] * 50)[0]["files"] == 100
        assert len(looks) == 1
        monkeypatch.undo()
        assert tierfs.stats(m.path)["mountpoint"] == str(m.path)
        with pytest.raises(tierfs.NotInMount):
            tierfs.where(tmp_path)
        with pytest.raises(tierfs.TierfsError, match="not inside a running tierfs mount"):
            tierfs.prefetch([data / "a.bin", tmp_path / "elsewhere"])
        with pytest.raises(tierfs.TierfsError):
            tierfs.stats(tmp_path)


def test_a_planned_sampler_under_a_dataloader_with_workers(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, Dataset, RandomSampler

    from tierfs.torch import PlannedSampler

    m = cold_mount(tmp_path, proxy, bucket)
    classes = ["cat", "dog", "eel"]
    files = {f"{c}/img{i:02}.bin": os.urandom(MIB // 2 + i * 1000)
             for c in classes for i in range(8)}
    publish(m, s3_server, files, dest="train")

    class Folder(Dataset):  # what an ImageFolder holds: (path, class) samples
        def __init__(self, root: Path) -> None:
            self.samples = [(str(root / c / name), k) for k, c in enumerate(classes)
                            for name in sorted(os.listdir(root / c))]

        def __len__(self) -> int:
            return len(self.samples)

        def __getitem__(self, i: int) -> tuple[bytes, int]:
            path, label = self.samples[i]
            with open(path, "rb") as f:
                return f.read(), label

    with running(m):
        dataset = Folder(m.path / "train")
        sampler = PlannedSampler(RandomSampler(dataset), dataset.samples, strict=True)
        loader = DataLoader(dataset, sampler=sampler, num_workers=2, batch_size=4,
                            collate_fn=lambda batch: batch)
        for _ in range(2):
            got = [item for batch in loader for item in batch]
            assert sorted(got) == sorted((data, classes.index(name.split("/")[0]))
                                         for name, data in files.items())
            status = sampler.last_status[0]
            assert status["files"] == len(files) and status["mountpoint"] == str(m.path)
        plain = PlannedSampler(list(range(3)), lambda i: tmp_path / f"x{i}")
        assert list(plain) == [0, 1, 2]  # outside any mount: read on, without a plan
        assert torch.utils.data.get_worker_info() is None
        # The second epoch's plan found every file hot (the first one's fetched them).
        assert status["hot_at_start"] == status["bytes"] == sum(len(d) for d in files.values())


def test_a_plan_over_named_roots_fetches_ahead_in_each_root(tmp_path: Path) -> None:
    """A mount of named roots splits a plan by root (each has its own cache), in order."""
    import time

    from conftest import make_roots_mount, tierfs as cli

    m = make_roots_mount(tmp_path, ("cluster", "user"), "--large-file-threshold", "1MiB")
    files = {f"{root}/f{i}.bin": os.urandom(2 * MIB) for root in ("cluster", "user")
             for i in range(3)}
    with running(m):
        for rel, data in files.items():
            (m.path / rel).write_bytes(data)
        cli("evict", str(m.path))
        assert all(tierfs.where(m.path / rel)["hot"] == 0 for rel in files)
        order = sorted(files, key=lambda rel: rel[-5])  # the roots interleaved
        status = tierfs.prefetch([m.path / rel for rel in order])[0]
        assert set(status["roots"]) == {"cluster", "user"} and status["files"] == 6
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(tierfs.where(m.path / rel)["hot"] == 2 * MIB for rel in files):
                break
            time.sleep(0.2)
        assert all(tierfs.where(m.path / rel)["hot"] == 2 * MIB for rel in files)
        for rel, data in files.items():
            assert (m.path / rel).read_bytes() == data
        stopped = tierfs.stop_prefetch(m.path)
        assert stopped is not None and not stopped["active"]
