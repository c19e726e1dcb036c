"""Training-job benchmark, in one run against moto's S3 server:

(a) shards that fit in the block cache (three quarters of it) written through the mount into
    the bucket, then the first epoch over them through the same mount: how much of what was
    just written the hot tier serves (the target: a hit ratio of at least 0.95); they are then
    evicted and removed, so the cache starts empty again;
(b) the dataset's shards (twice the block cache) written through the mount, and the first
    epoch over them; then epochs over the dataset: in the order written, shuffled without a
    plan, and shuffled with the epoch's order handed to the mount first
    (``tierfs.prefetch``): hit ratio and throughput of each;
(c) a checkpoint: torch.save of a state dict of a few hundred MiB into the mount, and
    torch.load of it with the page cache dropped: where its size puts it (``ckpt``: the warm
    tier), and in the bucket (``ckpt-cold``, by a rule). moto reads a whole object for every
    ranged GET, so a load from the bucket reads the object once per block here.

The writing of the dataset, its first epoch and (c) reach moto directly. For (a) and the other
epochs of (b) the same hot tier is mounted with every GET held ``--get-latency-ms`` (30) by a
proxy in front of moto (tests/s3proxy.py), for an object store's time to first byte: on
loopback moto answers in a millisecond, and an epoch would measure the disk and the CPU rather
than what the hot tier or fetching ahead hides.

    sudo .venv/bin/python bench/training.py [--dataset-mib 256] [--shard-mib 2] [--fit-mib 96]

One reader reads the shards one after another, whole, as a loader worker does; the page cache
is dropped before each epoch. A shuffled epoch with the plan can at best hit on half its
blocks (the cache holds half the dataset when it starts, and blocks the plan fetches count as
misses); the targets are a hit ratio of at least 0.45 and twice the throughput without it,
judged on the median of the shuffled epochs of each kind (``--epochs``, 3 by default: one
epoch slowed by another job on the machine does not decide it). moto reads a whole object
for every ranged GET, so shards are small; compare ratios within one run: the machine is
noisy.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from common import MIB, TIERFS, drop_caches, moto_server, mounted, read_all

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3proxy import FaultProxy

import tierfs


def counts(mnt: Path) -> tuple[int, int]:
    hot = tierfs.stats(mnt)["tiers"]["hot"]
    return int(hot["hits"]), int(hot["misses"])


def epoch(mnt: Path, names: list[str], plan: bool, fetches: int | None = None,
          folder: str = "shards") -> tuple[float, float]:
    """One pass over ``names`` in ``folder`` (hit ratio, MB/s)."""
    paths = [mnt / folder / name for name in names]
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


def write_shards(folder: Path, names: list[str], shard: int) -> float:
    """Write ``names`` into ``folder``, each ``shard`` bytes (different from one another); the
    MB/s."""
    folder.mkdir()
    payload = os.urandom(shard)
    start = time.perf_counter()
    for i, name in enumerate(names):
        with open(folder / name, "wb") as f:
            f.write(i.to_bytes(8, "little") + payload[8:])
    return len(names) * shard / MIB / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-mib", type=int, default=256,
                        help="the dataset; the block cache gets half of it (at least 128)")
    parser.add_argument("--shard-mib", type=int, default=2)
    parser.add_argument("--fit-mib", type=int, default=None,
                        help="the shards written and read back in (a), which fit in the "
                        "block cache (default: three quarters of it)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs of each kind (the shuffled ones are judged on their "
                        "median)")
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
    if args.fit_mib is None:
        args.fit_mib = args.dataset_mib * 3 // 8
    if not args.shard_mib <= args.fit_mib <= args.dataset_mib // 2:
        parser.error("--fit-mib: at least a shard, at most the block cache (--dataset-mib / 2)")
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
               "fit/**=cold", "--rules", "ckpt-cold/**=cold",
               "--hot-capacity", str(args.dataset_mib * MIB // 2),
               "--block-size", "1MiB", "--read-memory", "16MiB"]
    names = [f"shard-{i:05d}.bin" for i in range(count)]
    fit = names[:args.fit_mib // args.shard_mib]
    try:
        # (a) Shards that fit, written and read back through one mount (misses cost a GET's
        # latency, as in the epochs below); then gone, blocks and files, for what follows.
        with mounted(mnt, *options, "--endpoint-url", slow_endpoint):
            kept = int(tierfs.stats(mnt)["tiers"]["hot"]["kept_written"])
            rows.append(("write shards that fit", None, write_shards(mnt / "fit", fit, shard)))
            fit_first = epoch(mnt, fit, plan=False, folder="fit")
            rows.append(("first epoch after writing", *fit_first))
            kept = int(tierfs.stats(mnt)["tiers"]["hot"]["kept_written"]) - kept
            subprocess.run([*TIERFS, "evict", str(mnt / "fit")], check=True,
                           stdout=subprocess.DEVNULL)
            shutil.rmtree(mnt / "fit")

        with mounted(mnt, *options, "--endpoint-url", endpoint):
            rows.append(("write shards (2x cache)", None,
                         write_shards(mnt / "shards", names, shard)))
            rows.append(("first epoch after, 2x cache", *epoch(mnt, names, plan=False)))

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
          f"moto S3 server on 127.0.0.1, GETs held {args.get_latency_ms} ms; shards that "
          f"fit: {len(fit)} ({len(fit) * args.shard_mib} MiB)")
    print(f"{'phase':<30}  {'hit ratio':>9}  {'MB/s':>7}")
    for name, ratio, rate in rows:
        shown = f"{ratio:9.2f}" if ratio is not None else f"{'':9}"
        print(f"{name:<30}  {shown}  {rate:7.1f}")
    print(f"\nfirst epoch after writing {len(fit) * args.shard_mib} MiB that fit: hit ratio "
          f"{fit_first[0]:.2f} ({'met' if fit_first[0] >= 0.95 else 'missed'}: >= 0.95), "
          f"{fit_first[1]:.1f} MB/s; {kept / MIB:.0f} MiB kept hot at their publish")
    plain, planned = (tuple(statistics.median(r[i] for r in shuffled[plan]) for i in (0, 1))
                      for plan in (False, True))
    print(f"shuffled, median of {args.epochs} epochs: hit ratio {planned[0]:.2f} with the plan "
          f"({'met' if planned[0] >= 0.45 else 'missed'}: >= 0.45), {plain[0]:.2f} without; "
          f"throughput {planned[1] / plain[1]:.2f}x "
          f"({'met' if planned[1] >= 2 * plain[1] else 'missed'}: >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
