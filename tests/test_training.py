"""Training libraries end to end through real mounts: a torch DataLoader with worker processes
over an image-folder tree on the warm tier and over tar shards that are stubs in a moto S3
bucket, each item compared with the same item read from a plain directory."""

from __future__ import annotations

import io
import os
import random
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
