"""Training-job benchmark, in one run against moto's S3 server:

(a) shards written through the mount (the dataset is twice the block cache), then the first
    epoch over them: how much of what was just written the hot tier still serves;
(b) epochs over the dataset: in the order written, shuffled without a plan, and shuffled with
    the epoch's order handed to the mount first (``tierfs.prefetch``): hit ratio and
    throughput of each;
(c) a checkpoint: torch.save of a state dict of a few hundred MiB into the mount, and
    torch.load of it with the page cache dropped: where its size puts it (``ckpt``: the warm
    tier), and in the bucket (``ckpt-cold``, by a rule). moto reads a whole object for every
    ranged GET, so a load from the bucket reads the object once per block here.

(a) and (c) reach moto directly. For (b) the same hot tier is mounted again with every GET
held ``--get-latency-ms`` (30) by a proxy in front of moto (tests/s3proxy.py), for an object
store's time to first byte: on loopback moto answers in a millisecond, and an epoch would
measure the disk and the CPU rather than what fetching ahead hides.

    sudo .venv/bin/python bench/training.py [--dataset-mib 256] [--shard-mib 2]

One reader reads the shards one after another, whole, as a loader worker does; the page cache
is dropped before each epoch. A shuffled epoch with the plan can at best hit on half its
blocks (the cache holds half the dataset when it starts, and blocks the plan fetches count as
misses); the targets are a hit ratio of at least 0.45 and twice the throughput without it.
moto reads a whole object for every ranged GET, so shards are small; compare ratios within
one run: the machine is noisy.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import boto3
from common import MIB, drop_caches, moto_server, mounted, read_all

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3proxy import FaultProxy

import tierfs


def counts(mnt: Path) -> tuple[int, int]:
    hot = tierfs.stats(mnt)["tiers"]["hot"]
    return int(hot["hits"]), int(hot["misses"])


def epoch(mnt: Path, names: list[str], plan: bool, fetches: int | None = None
          ) -> tuple[float, float]:
    """One pass over ``names`` (hit ratio, MB/s)."""
    paths = [mnt / "shards" / name for name in names]
    drop_caches()
    hits, misses = counts(mnt)
    start = time.perf_counter()
    if plan:
        tierfs.prefetch(paths, fetches=fetches)
    total = sum(read_all(path) for path in paths)
    elapsed = time.perf_counter() - start
    hits2, misses2 = counts(mnt)
    got = hits2 - hits + misses2 - misses
    return (hits2 - hits) / max(1, got), total / MIB / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-mib", type=int, default=256,
                        help="the dataset; the block cache gets half of it (at least 128)")
    parser.add_argument("--shard-mib", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each kind")
    parser.add_argument("--checkpoint-mib", type=int, default=256)
    parser.add_argument("--plan-fetches", type=int, default=None,
                        help="GETs at once for the plan (default: the mount's, its "
                        "cold_threads)")
    parser.add_argument("--get-latency-ms", type=int, default=30,
                        help="added to every GET by a proxy in front of moto (an object "
                        "store's time to first byte; 0: none)")
    args = parser.parse_args()
    if args.dataset_mib < 128:
        parser.error("--dataset-mib: at least 128 (the smallest hot_capacity is 64MiB)")
    with moto_server() as endpoint:
        proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1]))
        if args.get_latency_ms:
            proxy.delay = args.get_latency_ms / 1000
            proxy.fail("GET", "delay")
        try:
            return run(args, endpoint, proxy.endpoint)
        finally:
            proxy.close()


def run(args: argparse.Namespace, endpoint: str, slow_endpoint: str) -> int:
    import torch

    base = Path(tempfile.mkdtemp(prefix="tierfs-training-bench-", dir="/var/tmp"))
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    hot, warm, mnt = base / "hot", base / "warm", base / "mnt"
    for d in (hot, warm, mnt):
        d.mkdir()
    count = args.dataset_mib // args.shard_mib
    shard = args.shard_mib * MIB
    rows: list[tuple[str, float | None, float]] = []
    options = ["--hot", str(hot), "--warm", str(warm), "--bucket", "s3://bench/tierfs",
               "--addressing-style", "path", "--rules", "shards/**=cold", "--rules",
               "ckpt-cold/**=cold", "--hot-capacity", str(args.dataset_mib * MIB // 2),
               "--block-size", "1MiB", "--read-memory", "16MiB"]
    names = [f"shard-{i:05d}.bin" for i in range(count)]
    try:
        with mounted(mnt, *options, "--endpoint-url", endpoint):
            (mnt / "shards").mkdir()
            payload = os.urandom(shard)
            start = time.perf_counter()
            for i, name in enumerate(names):
                with open(mnt / "shards" / name, "wb") as f:
                    f.write(i.to_bytes(8, "little") + payload[8:])
            rows.append(("write shards", None,
                         args.dataset_mib / (time.perf_counter() - start)))
            rows.append(("first epoch after writing", *epoch(mnt, names, plan=False)))

            for where, label in (("ckpt", "checkpoint (warm)"),
                                 ("ckpt-cold", "checkpoint (bucket)")):
                (mnt / where).mkdir()
                state = {f"layer{i}": torch.randn(args.checkpoint_mib * MIB // 4 // 10)
                         for i in range(10)}
                start = time.perf_counter()
                torch.save(state, mnt / where / "model.pt")
                rows.append((f"{label} torch.save", None,
                             args.checkpoint_mib / (time.perf_counter() - start)))
                drop_caches()
                start = time.perf_counter()
                loaded = torch.load(mnt / where / "model.pt")
                rows.append((f"{label} torch.load", None,
                             args.checkpoint_mib / (time.perf_counter() - start)))
                assert all(torch.equal(loaded[k], v) for k, v in state.items())
                del state, loaded
                os.unlink(mnt / where / "model.pt")

        # The epochs: the same hot tier, mounted again with its GETs through the proxy.
        with mounted(mnt, *options, "--endpoint-url", slow_endpoint):
            for n in range(args.epochs):
                rows.append((f"in order, epoch {n + 1}", *epoch(mnt, names, plan=False)))
            rng = random.Random(7)
            shuffled: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for plan in (False, True):
                for n in range(args.epochs):
                    order = names[:]
                    rng.shuffle(order)
                    result = epoch(mnt, order, plan=plan, fetches=args.plan_fetches)
                    shuffled[plan].append(result)
                    label = "with plan" if plan else "no plan"
                    rows.append((f"shuffled, {label}, epoch {n + 1}", *result))
            tierfs.stop_prefetch(mnt)
    finally:
        if os.path.ismount(mnt):
            os.system(f"{sys.executable} -m tierfs unmount {mnt}")
        shutil.rmtree(base, ignore_errors=True)

    print(f"tierfs training bench: {count} shards of {args.shard_mib} MiB "
          f"({args.dataset_mib} MiB), block cache {args.dataset_mib // 2} MiB, 1 MiB blocks; "
          f"moto S3 server on 127.0.0.1, GETs held {args.get_latency_ms} ms")
    print(f"{'phase':<30}  {'hit ratio':>9}  {'MB/s':>7}")
    for name, ratio, rate in rows:
        shown = f"{ratio:9.2f}" if ratio is not None else f"{'':9}"
        print(f"{name:<30}  {shown}  {rate:7.1f}")
    plain, planned = shuffled[False][-1], shuffled[True][-1]
    print(f"\nshuffled, last epoch: hit ratio {planned[0]:.2f} with the plan "
          f"({'met' if planned[0] >= 0.45 else 'missed'}: >= 0.45), {plain[0]:.2f} without; "
          f"throughput {planned[1] / plain[1]:.2f}x "
          f"({'met' if planned[1] >= 2 * plain[1] else 'missed'}: >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
