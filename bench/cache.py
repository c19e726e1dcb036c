"""Block-cache benchmark, in one run:

(a) hot read: a file whose blocks are on the hot tier, read through the mount with the page
    cache dropped, against a plain sequential read of the same block files on the hot tier's
    directory (same bytes, same disk; best of three runs each, alternating);
(b) cold read: a file read through the mount from the bucket, against boto3's download_file
    of the same object;
(c) epochs over a dataset twice the cache's capacity: hit ratio and throughput per epoch, in
    the same order every epoch and shuffled, with the default policy and with LRU.

    sudo .venv/bin/python bench/cache.py [--size-mib 256] [--epoch-mib 256]

The bucket is moto's S3 server on 127.0.0.1; moto reads a whole object for every ranged GET,
so the epoch dataset uses small objects. Compare ratios within one run: the machine is noisy.
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
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

from common import MIB, TIERFS, drop_caches, moto_server, mounted, read_all

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tierfs.cache.entries import cold_source_id  # noqa: E402
from tierfs.cache.counters import load_saved  # noqa: E402


def timed_read(path: Path) -> float:
    drop_caches()
    start = time.perf_counter()
    read_all(path)
    return time.perf_counter() - start


def saved(hot: Path) -> dict[str, int]:
    time.sleep(1.2)  # counters reach the index once per second
    snap = load_saved(hot)
    assert snap is not None
    return dict(snap["counters"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--epoch-mib", type=int, default=256,
                        help="dataset size for the epochs; the cache gets half of it")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.epoch_mib < 128:
        parser.error("--epoch-mib: at least 128 (the cache gets half of it, and the smallest "
                     "hot_capacity is 64MiB)")
    with moto_server() as endpoint:
        return run(args, endpoint)


def run(args: argparse.Namespace, endpoint: str) -> int:
    base = Path(tempfile.mkdtemp(prefix="tierfs-cache-bench-", dir="/var/tmp"))
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="bench")
    size = args.size_mib * MIB
    transfer = TransferConfig(multipart_chunksize=8 * MIB, max_concurrency=10)
    rows: list[tuple[str, float, float, str]] = []
    try:
        common = ["--bucket", "s3://bench/tierfs", "--endpoint-url", endpoint,
                  "--addressing-style", "path"]
        # -- (a) and (b) ------------------------------------------------------------------
        source = base / "source.bin"
        source.write_bytes(os.urandom(size))
        s3.upload_file(str(source), "bench", "tierfs/src/big.bin", Config=transfer)
        s3.upload_file(str(source), "bench", "tierfs/src/big2.bin", Config=transfer)
        hot, warm, mnt = base / "hot", base / "warm", base / "mnt"
        for d in (hot, warm, mnt):
            d.mkdir()
        tiers = ["--hot", str(hot), "--warm", str(warm)]
        subprocess.run([*TIERFS, "import", "s3://bench/tierfs/src", "data", *tiers, *common],
                       check=True, stdout=subprocess.DEVNULL)
        with mounted(mnt, *tiers, *common):
            ours_cold = timed_read(mnt / "data" / "big.bin")
            subprocess.run([*TIERFS, "warm", str(mnt / "data" / "big2.bin")], check=True)
        etag = s3.head_object(Bucket="bench", Key="tierfs/src/big2.bin")["ETag"].strip('"')
        source_id = cold_source_id("s3://bench/tierfs", "tierfs/src/big2.bin", etag,
                                   size).hex()
        blocks = sorted(p for p in (hot / "cache" / "v1").rglob(source_id + "*"))
        assert blocks, "the warmed file's blocks are not where the bench expects them"
        ours_hot = raw_hot = float("inf")
        for _ in range(3):
            with mounted(mnt, *tiers, *common):  # a new process: the blocks are on disk only
                ours_hot = min(ours_hot, timed_read(mnt / "data" / "big2.bin"))
            drop_caches()
            start = time.perf_counter()
            for block in blocks:
                read_all(block)
            raw_hot = min(raw_hot, time.perf_counter() - start)
        drop_caches()
        start = time.perf_counter()
        s3.download_file("bench", "tierfs/src/big.bin", str(base / "dl.bin"), Config=transfer)
        boto_cold = time.perf_counter() - start
        mb = size / MIB
        rows.append(("(a) hot read (MB/s)", mb / ours_hot, mb / raw_hot, "raw hot dir"))
        rows.append(("(b) cold read (MB/s)", mb / ours_cold, mb / boto_cold, "boto3"))

        # -- (c) epochs -------------------------------------------------------------------
        object_size = 2 * MIB
        count = args.epoch_mib * MIB // object_size
        payload = os.urandom(object_size)
        for i in range(count):
            s3.put_object(Bucket="bench", Key=f"tierfs/epochs/f{i:05d}.bin",
                          Body=i.to_bytes(8, "little") + payload[8:])
        capacity = args.epoch_mib * MIB // 2
        epochs: list[tuple[str, str, int, float, float]] = []
        for policy in ("tinylfu", "lru"):
            for order in ("same order", "shuffled"):
                run_dir = base / f"{policy}-{order.replace(' ', '-')}"
                hot, warm = run_dir / "hot", run_dir / "warm"
                for d in (hot, warm):
                    d.mkdir(parents=True)
                tiers = ["--hot", str(hot), "--warm", str(warm)]
                subprocess.run([*TIERFS, "import", "s3://bench/tierfs/epochs", "epochs",
                                *tiers, *common], check=True, stdout=subprocess.DEVNULL)
                names = [f"f{i:05d}.bin" for i in range(count)]
                rng = random.Random(11)
                with mounted(mnt, *tiers, *common, "--eviction", policy, "--hot-capacity",
                             str(capacity), "--block-size", "1MiB", "--read-memory", "16MiB"):
                    before = saved(hot)
                    for epoch in range(1, args.epochs + 1):
                        if order == "shuffled":
                            rng.shuffle(names)
                        drop_caches()
                        start = time.perf_counter()
                        for name in names:
                            read_all(mnt / "epochs" / name)
                        elapsed = time.perf_counter() - start
                        after = saved(hot)
                        hits = after["hits"] - before["hits"]
                        misses = after["misses"] - before["misses"]
                        before = after
                        epochs.append((policy, order, epoch, hits / max(1, hits + misses),
                                       args.epoch_mib / elapsed))
    finally:
        if os.path.ismount(base / "mnt"):
            subprocess.run([*TIERFS, "unmount", str(base / "mnt")], check=False)
        shutil.rmtree(base, ignore_errors=True)

    print(f"tierfs cache bench: {args.size_mib} MiB file; moto S3 server on 127.0.0.1")
    print(f"{'workload':<26}  {'tierfs':>8}  {'baseline':>8}  {'ratio':>7}  baseline")
    for name, ours, theirs, what in rows:
        print(f"{name:<26}  {ours:8.0f}  {theirs:8.0f}  {ours / theirs:6.2f}x  {what}")
    print(f"\n(c) epochs over {args.epoch_mib} MiB of 2 MiB objects, cache "
          f"{args.epoch_mib // 2} MiB, 1 MiB blocks")
    print(f"{'policy':<8}  {'order':<10}  {'epoch':>5}  {'hit ratio':>9}  {'MB/s':>6}")
    for policy, order, epoch, ratio, rate in epochs:
        print(f"{policy:<8}  {order:<10}  {epoch:>5}  {ratio:9.2f}  {rate:6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
