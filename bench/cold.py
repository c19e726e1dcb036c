"""Cold-tier benchmark: a large file written through the mount (it streams to the bucket)
against boto3's upload_file of the same bytes, and a cold sequential read through the mount
against boto3's download_file of the same object, in one run, as ratios.

    sudo .venv/bin/python bench/cold.py [--size-mib 256]

The bucket is moto's S3 server on 127.0.0.1 (no other S3 server can be installed here). moto
reads a whole object for every ranged GET, which penalises every reader of large objects; boto3's
download_file uses ranged GETs too, so the ratio stays a fair comparison, but the absolute
figures say little about AWS.

Both sides first make one smaller upload and download each, untimed: the first multipart
upload a server and a client see pays one-time costs (code paths loaded on both ends), and
whichever side went first would pay them alone. Then the two sides take turns, ``--rounds``
times; each side's best round is its figure (one run on a shared machine varies by a quarter),
and every round is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

from common import MIB, TIERFS, drop_caches, moto_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--upload-window", type=int, default=None,
                        help="passed to tierfs mount (default: tierfs's own default)")
    args = parser.parse_args()
    size = args.size_mib * MIB

    with moto_server() as endpoint:
        return run(args, size, endpoint)


def run(args: argparse.Namespace, size: int, endpoint: str) -> int:
    base = Path(tempfile.mkdtemp(prefix="tierfs-cold-bench-", dir="/var/tmp"))
    mnt = base / "mnt"
    for d in ("hot", "warm", "mnt"):
        (base / d).mkdir()
    threshold = 64 * MIB
    rounds: list[tuple[float, float, float, float]] = []
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        subprocess.run([*TIERFS, "mount", str(mnt), "--hot", str(base / "hot"), "--warm",
                        str(base / "warm"), "--bucket", "s3://bench/tierfs", "--endpoint-url",
                        endpoint, "--addressing-style", "path", "--large-file-threshold",
                        f"{threshold // MIB}MiB", "--part-size", "8MiB",
                        *(["--upload-window", str(args.upload_window)] if args.upload_window
                          else [])], check=True)
        source = base / "source.bin"
        digest = write_source(source, size)
        warmup = base / "warmup.bin"
        write_source(warmup, threshold + 16 * MIB)
        transfer = TransferConfig(multipart_chunksize=8 * MIB, max_concurrency=10)

        # Untimed: one multipart upload and one ranged download by each side.
        shutil.copyfile(warmup, mnt / "warmup.bin")
        s3.upload_file(str(warmup), "bench", "boto3/warmup.bin", Config=transfer)
        subprocess.run([*TIERFS, "evict", str(mnt / "warmup.bin")], check=True,
                       capture_output=True)
        read_through(mnt / "warmup.bin")
        s3.download_file("bench", "boto3/warmup.bin", str(base / "dl.bin"), Config=transfer)

        for i in range(args.rounds):
            name = f"big{i}.bin"
            ours_write = timed(lambda: copy_into(source, mnt / name))
            boto_write = timed(lambda: s3.upload_file(str(source), "bench", f"boto3/{name}",
                                                      Config=transfer))
            # Written files stay hot (staging becomes the object's cached blocks): dropped
            # first, so that the read fetches from the bucket, as boto3's does.
            subprocess.run([*TIERFS, "evict", str(mnt / name)], check=True,
                           capture_output=True)
            got: list[str] = []
            ours_read = timed(lambda: got.append(read_through(mnt / name)))
            assert got == [digest], "the mount returned different bytes"
            boto_read = timed(lambda: s3.download_file("bench", f"boto3/{name}",
                                                       str(base / "dl.bin"), Config=transfer))
            rounds.append((ours_write, boto_write, ours_read, boto_read))
    finally:
        subprocess.run([*TIERFS, "unmount", str(mnt)], check=False)
        shutil.rmtree(base, ignore_errors=True)

    mb = size / MIB
    print(f"tierfs cold bench: {args.size_mib} MiB object, moto S3 server on 127.0.0.1, "
          f"best of {args.rounds} rounds")
    print(f"{'workload':<40}  {'tierfs':>8}  {'boto3':>8}  {'tierfs/boto3':>12}  rounds")
    for name, col in (("large sequential write (MB/s)", 0), ("cold sequential read (MB/s)", 2)):
        ours, theirs = min(r[col] for r in rounds), min(r[col + 1] for r in rounds)
        each = " ".join(f"{r[col + 1] / r[col]:.2f}" for r in rounds)
        print(f"{name:<40}  {mb / ours:8.0f}  {mb / theirs:8.0f}  {theirs / ours:11.2f}x  {each}")
    return 0


def write_source(path: Path, size: int) -> str:
    """Distinct MiBs (each starts with its number), so a misplaced MiB is caught; the
    file's SHA-256."""
    data = os.urandom(MIB)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size // MIB):
            chunk = i.to_bytes(8, "little") + data[8:]
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def copy_into(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, MIB)


def read_through(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            h.update(block)
    return h.hexdigest()


def timed(action: Callable[[], object]) -> float:
    drop_caches()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
