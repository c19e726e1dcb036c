"""Checkpoint-write benchmark: the writes a training job makes when it saves, through the mount
in both durability modes and straight to the tiers, in one run, as ratios.

Workloads: one 2 GiB file, and a directory of 200 files of 8 MiB, each written in 1 MiB
writes and closed (as torch.save does; no fsync). Baselines, on the same disk:

- raw hot: the same writes to a plain directory on the hot tier's disk (what write-back
  mode waits for: the data staged locally);
- raw home + fsync: the same writes to the warm tier's directory, each file fsynced before
  close (what sync mode waits for: the data durable on its home tier).

    sudo .venv/bin/python bench/checkpoint.py [--big-mib 2048] [--files 200] [--file-mib 8]
                                              [--warm-apart]

By default the tiers and the baselines share one file system, where tierfs publishes a file by
renaming its staging file into place. With --warm-apart the warm tier and the home baseline get
an ext4 file system of their own (an image on the same disk, loop-mounted with direct I/O), as
an NFS tier would be, and tierfs publishes by copying.

Targets: write-back at least 0.8x raw hot; sync at least 0.8x raw home + fsync.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from common import MIB, drop_caches, mounted, own_file_system


def write_file(path: Path, size: int, block: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // len(block)):
            os.write(fd, block)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def big(root: Path, size: int, block: bytes, fsync: bool) -> float:
    drop_caches()
    start = time.perf_counter()
    write_file(root / "model.pt", size, block, fsync)
    return time.perf_counter() - start


def many(root: Path, count: int, size: int, block: bytes, fsync: bool) -> float:
    target = root / "shards"
    target.mkdir(exist_ok=True)
    drop_caches()
    start = time.perf_counter()
    for i in range(count):
        write_file(target / f"shard-{i:04d}.pt", size, block, fsync)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mib", type=int, default=2048)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--file-mib", type=int, default=8)
    parser.add_argument("--warm-apart", action="store_true",
                        help="the warm tier on a file system of its own (publish by copy)")
    args = parser.parse_args()
    block = os.urandom(MIB)
    big_size, file_size = args.big_mib * MIB, args.file_mib * MIB
    base = Path(tempfile.mkdtemp(prefix="tierfs-ckpt-bench-", dir="/var/tmp"))
    results: dict[str, dict[str, float]] = {}
    image_gib = 2 * (big_size + args.files * file_size) // 1024**3 + 2
    apart = own_file_system(base / "apart", image_gib) if args.warm_apart else nullcontext(base)
    try:
        with apart as home:
            run(args, base, home, block, big_size, file_size, results)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    sizes = {"big": big_size, "many": args.files * file_size}
    names = {"big": f"1 file of {args.big_mib} MiB",
             "many": f"{args.files} files of {args.file_mib} MiB"}
    where = ("the warm tier on a file system of its own: publish by copy" if args.warm_apart
             else "hot and warm on one file system: publish by rename")
    print(f"tierfs checkpoint bench (MB/s; one disk; {where})")
    print(f"{'workload':<22} {'raw hot':>8} {'home+fsync':>10} {'writeback':>10} {'sync':>8}"
          f"  {'wb/raw hot':>10} {'sync/home':>9}")
    for key in ("big", "many"):
        rate = {name: sizes[key] / MIB / r[key] for name, r in results.items()}
        print(f"{names[key]:<22} {rate['raw hot']:8.0f} {rate['raw home + fsync']:10.0f} "
              f"{rate['writeback']:10.0f} {rate['sync']:8.0f}  "
              f"{rate['writeback'] / rate['raw hot']:9.2f}x "
              f"{rate['sync'] / rate['raw home + fsync']:8.2f}x")
    return 0


def run(args: argparse.Namespace, base: Path, home: Path, block: bytes, big_size: int,
        file_size: int, results: dict[str, dict[str, float]]) -> None:
    """Every measurement; the home baseline and the warm tiers live under ``home``."""
    raw_hot, raw_home = base / "raw-hot", home / "raw-home"
    raw_hot.mkdir()
    raw_home.mkdir()
    results["raw hot"] = {"big": big(raw_hot, big_size, block, False),
                          "many": many(raw_hot, args.files, file_size, block, False)}
    results["raw home + fsync"] = {
        "big": big(raw_home, big_size, block, True),
        "many": many(raw_home, args.files, file_size, block, True)}
    shutil.rmtree(raw_hot)
    shutil.rmtree(raw_home)
    for mode in ("writeback", "sync"):
        hot, warm, mnt = base / f"{mode}-hot", home / f"{mode}-warm", base / "mnt"
        for d in (hot, warm, mnt):
            d.mkdir(exist_ok=True)
        with mounted(mnt, "--hot", str(hot), "--warm", str(warm), "--durability", mode):
            results[mode] = {"big": big(mnt, big_size, block, False)}
        with mounted(mnt, "--hot", str(hot), "--warm", str(warm), "--durability", mode):
            results[mode]["many"] = many(mnt, args.files, file_size, block, False)
        # The unmounts above waited for every write-back publish: check it landed.
        assert (warm / "model.pt").stat().st_size == big_size
        assert len(list((warm / "shards").iterdir())) == args.files
        shutil.rmtree(hot)
        shutil.rmtree(warm)


if __name__ == "__main__":
    sys.exit(main())
