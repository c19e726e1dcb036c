"""Training libraries end to end through real mounts: a torch DataLoader with worker processes
over an image-folder tree on the warm tier and over tar shards that are stubs in a moto S3
bucket, each item compared with the same item read from a plain directory."""

from __future__ import annotations

import io
import os
import random
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, S3Server, make_mount, running, tierfs

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, Dataset  # noqa: E402

#: Files past this size go to the bucket (the tar shards); the images stay on the warm tier.
THRESHOLD = 64 * 1024
CLASSES = ("cat", "dog", "fish")


class ImageFolder(Dataset):
    """Raw 16x16 RGB images under one folder per class, as an image-folder tree holds them
    (decoded with torch alone: no image library is needed)."""

    def __init__(self, root: Path) -> None:
        self.items = [(str(root / c / name), i) for i, c in enumerate(CLASSES)
                      for name in sorted(os.listdir(root / c))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, object, int]:
        path, label = self.items[index]
        with open(path, "rb") as f:
            data = bytearray(f.read())
        image = torch.frombuffer(data, dtype=torch.uint8).reshape(3, 16, 16)
        return os.path.relpath(path, os.path.dirname(os.path.dirname(path))), image, label


class TarShards(Dataset):
    """Samples inside tar shards, each read by seeking into its shard (random access, as
    a map-style dataset over shards does)."""

    def __init__(self, root: Path) -> None:
        self.items = []
        for shard in sorted(os.listdir(root)):
            with tarfile.open(root / shard) as tar:
                self.items += [(str(root / shard), m.name, m.offset_data, m.size)
                               for m in tar.getmembers()]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, bytes]:
        shard, name, offset, size = self.items[index]
        with open(shard, "rb") as f:
            f.seek(offset)
            return f"{os.path.basename(shard)}/{name}", f.read(size)


def by_key(loader: DataLoader) -> dict[str, tuple]:
    """Every item the loader yields, by its name (workers and shuffling reorder them)."""
    out: dict[str, tuple] = {}
    for batch in loader:
        names, *rest = batch
        for i, name in enumerate(names):
            assert name not in out, f"{name} yielded twice"
            out[name] = tuple(column[i] for column in rest)
    return out


def write_images(root: Path, rng: random.Random) -> None:
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for n in range(20):
            (root / c / f"{n:03}.raw").write_bytes(rng.randbytes(3 * 16 * 16))


def write_shards(root: Path, rng: random.Random) -> None:
    root.mkdir(parents=True)
    for s in range(3):
        with tarfile.open(root / f"shard-{s:02}.tar", "w") as tar:
            for n in range(12):
                data = rng.randbytes(rng.randrange(1000, 20000))
                info = tarfile.TarInfo(f"{s:02}-{n:03}.bin")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def s3_mount(tmp_path: Path, s3_server: S3Server, bucket: str) -> Iterator[Mount]:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path",
                   "--large-file-threshold", f"{THRESHOLD}B")
    with running(m):
        yield m


def test_dataloader_over_an_image_folder_on_the_warm_tier(s3_mount: Mount,
                                                         tmp_path: Path) -> None:
    m = s3_mount
    reference = tmp_path / "reference"
    write_images(reference, random.Random(1))
    write_images(m.path / "images", random.Random(1))
    assert not any(p.is_symlink() for p in (m.warm / "images").rglob("*"))  # all warm
    torch.manual_seed(0)
    got = by_key(DataLoader(ImageFolder(m.path / "images"), batch_size=8, shuffle=True,
                            num_workers=2))
    want = by_key(DataLoader(ImageFolder(reference), batch_size=8))
    assert len(got) == len(want) == 60
    for name, (image, label) in want.items():
        assert torch.equal(got[name][0], image), name
        assert got[name][1] == label, name


def test_dataloader_over_tar_shards_in_the_bucket(s3_mount: Mount, tmp_path: Path) -> None:
    m = s3_mount
    reference = tmp_path / "reference"
    write_shards(reference, random.Random(2))
    write_shards(m.path / "shards", random.Random(2))
    for shard in (m.warm / "shards").iterdir():  # stubs: the data is in the bucket
        assert shard.is_symlink() and os.readlink(shard).startswith("tierfs:"), shard
    tierfs("evict", str(m.path / "shards"))  # read from the bucket, not from cached blocks
    got = by_key(DataLoader(TarShards(m.path / "shards"), batch_size=5, shuffle=True,
                            num_workers=2, collate_fn=lambda b: list(zip(*b))))
    want = by_key(DataLoader(TarShards(reference), batch_size=5,
                             collate_fn=lambda b: list(zip(*b))))
    assert len(got) == len(want) == 36
    for name, (data,) in want.items():
        assert got[name][0] == data, name


def empty_folders(root: Path) -> list[str]:
    """Folders under ``root`` (itself excluded) with nothing in them."""
    return sorted(os.path.relpath(d, root) for d, dirs, files in os.walk(root)
                  if not dirs and not files and d != str(root))


@pytest.fixture
def ray_local(ray_temp_dir: str) -> Iterator[object]:
    """A one-node Ray cluster of the test's own (a new one, never one already running here)
    kept small: two CPUs, a 100 MB object store, no dashboard; shut down after the test."""
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    # The workers cannot import this test module: functions from it travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024 * 1024,
             include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=ray_temp_dir)
    try:
        yield ray
    finally:
        ray.shutdown()


def _train_loop(config: dict) -> None:
    """Each worker steps a tiny model; rank 0 saves it with torch.save into the checkpoint
    directory it reports. A run that finds a checkpoint continues from its epoch."""
    import tempfile

    import ray.train
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)  # 16 KiB of weights: past the threshold, so cold
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "model.pt"))
        model.load_state_dict(state["model"])
        start = state["epoch"] + 1
    for epoch in range(start, config["epochs"]):
        loss = model(torch.ones(4, 64)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with tempfile.TemporaryDirectory() as tmp:
            saved = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save({"model": model.state_dict(), "epoch": epoch},
                           os.path.join(tmp, "model.pt"))
                saved = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({"epoch": epoch, "start": start}, checkpoint=saved)


@pytest.mark.ray
def test_ray_train_checkpoints_resume_and_prune_on_a_mount(ray_local: object,
                                                           tmp_path: Path) -> None:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cold = tmp_path / "cold"
    cold.mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{cold}", "--large-file-threshold",
                   "4KiB")
    with running(m):
        storage = str(m.path / "ray_results")

        def fit(epochs: int) -> object:
            trainer = TorchTrainer(
                _train_loop, train_loop_config={"epochs": epochs},
                scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                run_config=RunConfig(name="run", storage_path=storage,
                                     checkpoint_config=CheckpointConfig(num_to_keep=2)))
            return trainer.fit()

        first = fit(3)
        assert first.error is None and first.metrics["epoch"] == 2
        resumed = fit(5)  # same name and storage: continues from the latest checkpoint
        assert resumed.error is None
        assert resumed.metrics == {**resumed.metrics, "epoch": 4, "start": 3}
        with resumed.checkpoint.as_directory() as d:
            assert torch.load(os.path.join(d, "model.pt"))["epoch"] == 4

        run = m.path / "ray_results" / "run"
        kept = sorted(p.name for p in run.iterdir()
                      if p.is_dir() and p.name.startswith("checkpoint_"))
        assert len(kept) == 2, kept  # num_to_keep: the other three were pruned
        for name in kept:
            stub = m.warm / "ray_results" / "run" / name / "model.pt"
            assert stub.is_symlink() and os.readlink(stub).startswith("tierfs:"), stub
        objects = sorted(os.path.relpath(os.path.join(d, f), cold)
                         for d, _, files in os.walk(cold) if ".tierfs-uploads" not in d
                         for f in files)
        assert len(objects) == 2 and all(any(k in o for k in kept) for o in objects), objects
        assert empty_folders(m.warm / "ray_results") == []
        assert empty_folders(m.path / "ray_results") == []
    assert [f for f in empty_folders(cold) if not f.startswith(".tierfs-uploads")] == []
