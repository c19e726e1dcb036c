"""tierfs benchmark: the same workloads through the mount and on the plain warm directory, in one
run, printed as figures and as the ratio mount/raw (higher is better for every row).

    sudo .venv/bin/python bench/run.py [--size-mib 1024] [--dir /path/on/the/disk/to/test]

Root is needed to drop the page cache between phases (/proc/sys/vm/drop_caches); without it
the "cold" rows are marked as not measured. The machine is shared and noisy: compare ratios
within one run, not figures across runs.

Two create rows: plain creates (the raw directory promises nothing at close, the mount in its
default sync mode fsyncs every file on the warm tier before close returns), and creates where
each file is durable on both sides (the raw directory fsyncs before close), which compares
like with like.

By default the hot tier, the warm tier and the raw directory share one file system, where
tierfs publishes a file by renaming its staging file into place. With --warm-apart the warm
tier and the raw directory get an ext4 file system of their own (an image on the same disk,
loop-mounted with direct I/O), as an NFS tier would be, and tierfs publishes by copying.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from common import MIB, drop_caches, own_file_system


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def seq_write(path: Path, size: int, block_size: int = MIB) -> None:
    block = os.urandom(block_size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // block_size):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def seq_read(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, MIB):
            pass
    finally:
        os.close(fd)


def random_reads(path: Path, count: int, seed: int = 7) -> None:
    size = path.stat().st_size
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            os.pread(fd, 4096, rng.randrange(0, size - 4096) & ~4095)
    finally:
        os.close(fd)


def create_files(d: Path, count: int, fsync: bool = False) -> None:
    d.mkdir()
    data = os.urandom(4096)
    for i in range(count):
        fd = os.open(d / f"f{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
        os.close(fd)


def stat_files(d: Path, count: int) -> None:
    for i in range(count):
        os.stat(d / f"f{i:05d}")


def ls_l(d: Path) -> None:
    subprocess.run(["ls", "-l", str(d)], stdout=subprocess.DEVNULL, check=True)


def measure(root: Path, size: int, files: int, entries: int, randoms: int,
            can_drop: bool, populate: Callable[[Path, int], None],
            through_mount: bool) -> dict[str, float | None]:
    """Rates for one directory: MB/s for data rows, operations per second for the others."""
    out: dict[str, float | None] = {}
    big = root / "big.bin"
    drop_caches()
    out["seq write 1 file + fsync (MB/s)"] = size / MIB / timed(lambda: seq_write(big, size))
    if can_drop:
        drop_caches()
        out["seq read, page cache dropped (MB/s)"] = size / MIB / timed(lambda: seq_read(big))
    else:
        out["seq read, page cache dropped (MB/s)"] = None
    seq_read(big)
    out["re-read, page cache warm (MB/s)"] = size / MIB / timed(lambda: seq_read(big))
    if can_drop:
        drop_caches()
        out["4 KiB random reads (ops/s)"] = randoms / timed(lambda: random_reads(big, randoms))
    else:
        out["4 KiB random reads (ops/s)"] = None
    big.unlink()
    drop_caches()
    out[f"create {files} files of 4 KiB (files/s)"] = files / timed(
        lambda: create_files(root / "small", files))
    # The same promise on both sides: each file durable before the next. Through the mount in
    # sync mode (the default) close gives it; on the raw directory, fsync before close.
    drop_caches()
    out[f"create {files} files, each durable (files/s)"] = files / timed(
        lambda: create_files(root / "durable", files, fsync=not through_mount))
    drop_caches()
    out[f"stat {files} files (stats/s)"] = files / timed(lambda: stat_files(root / "small",
                                                                             files))
    listing = root / "listing"
    populate(listing, entries)
    drop_caches()
    out[f"ls -l of {entries} entries (entries/s)"] = entries / timed(lambda: ls_l(listing))
    return out


def populate_direct(d: Path, count: int) -> None:
    d.mkdir()
    for i in range(count):
        (d / f"e{i:05d}").write_bytes(b"")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to put the tiers and the raw directory (default: a "
                        "temporary directory under /var/tmp)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--random-reads", type=int, default=2000)
    parser.add_argument("--warm-apart", action="store_true",
                        help="the warm tier on a file system of its own (publish by copy)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="tierfs-bench-", dir=args.dir or "/var/tmp"))
    size = args.size_mib * MIB
    apart = (own_file_system(base / "apart", 2 * args.size_mib // 1024 + 2) if args.warm_apart
             else nullcontext(base))
    try:
        with apart as home:
            hot, mnt, warm, raw = base / "hot", base / "mnt", home / "warm", home / "raw"
            for d in (hot, warm, raw, mnt):
                d.mkdir()
            can_drop = drop_caches()
            tierfs = [sys.executable, "-m", "tierfs"]
            subprocess.run([*tierfs, "mount", str(mnt), "--hot", str(hot), "--warm",
                            str(warm)], check=True)
            try:
                # The ls -l directory is filled on the warm tier directly for the mount too:
                # the row measures listing, not creating.
                ours = measure(mnt, size, args.files, args.entries, args.random_reads,
                               can_drop, lambda d, n: populate_direct(warm / d.name, n),
                               through_mount=True)
                plain = measure(raw, size, args.files, args.entries, args.random_reads,
                                can_drop, populate_direct, through_mount=False)
            finally:
                subprocess.run([*tierfs, "unmount", str(mnt)], check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    where = ("the warm tier and raw on a file system of their own: publish by copy"
             if args.warm_apart else "one file system: publish by rename")
    print(f"tierfs bench: {args.size_mib} MiB file, {args.files} small files, "
          f"{args.entries}-entry directory; raw = plain directory on the warm tier's disk "
          f"({where})")
    width = max(len(k) for k in ours)
    print(f"{'workload'.ljust(width)}  {'tierfs':>10}  {'raw':>10}  {'tierfs/raw':>10}")
    for key, value in ours.items():
        other = plain[key]
        if value is None or other is None:
            print(f"{key.ljust(width)}  {'n/a':>10}  {'n/a':>10}  {'(not root)':>10}")
            continue
        print(f"{key.ljust(width)}  {value:10.0f}  {other:10.0f}  {value / other:10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
