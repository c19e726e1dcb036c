"""Cold-tier benchmark: a large file written through the mount (it streams to the bucket)
against boto3's upload_file of the same bytes, and a cold sequential read through the mount
against boto3's download_file of the same object, in one run, as ratios.

    sudo .venv/bin/python bench/cold.py [--size-mib 256]

The bucket is moto's S3 server on 127.0.0.1 (no other S3 server can be installed here). moto
reads a whole object for every ranged GET, which penalises every reader of large objects; boto3's
download_file uses ranged GETs too, so the ratio stays a fair comparison, but the absolute
figures say little about AWS.
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
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

from common import MIB, TIERFS, drop_caches, moto_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
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
    tierfs = TIERFS
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        subprocess.run([*tierfs, "mount", str(mnt), "--hot", str(base / "hot"), "--warm",
                        str(base / "warm"), "--bucket", "s3://bench/tierfs", "--endpoint-url",
                        endpoint, "--addressing-style", "path", "--large-file-threshold",
                        "64MiB", "--part-size", "8MiB",
                        *(["--upload-window", str(args.upload_window)] if args.upload_window
                          else [])], check=True)
        data = os.urandom(MIB)
        source = base / "source.bin"
        with open(source, "wb") as f:
            for i in range(size // MIB):
                f.write(i.to_bytes(8, "little") + data[8:])
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        transfer = TransferConfig(multipart_chunksize=8 * MIB, max_concurrency=10)

        drop_caches()
        start = time.perf_counter()
        with open(source, "rb") as src, open(mnt / "big.bin", "wb") as dst:
            shutil.copyfileobj(src, dst, MIB)
        ours_write = time.perf_counter() - start
        drop_caches()
        start = time.perf_counter()
        s3.upload_file(str(source), "bench", "boto3/big.bin", Config=transfer)
        boto_write = time.perf_counter() - start

        drop_caches()
        start = time.perf_counter()
        h = hashlib.sha256()
        with open(mnt / "big.bin", "rb") as f:
            while block := f.read(MIB):
                h.update(block)
        ours_read = time.perf_counter() - start
        assert h.hexdigest() == digest, "the mount returned different bytes"
        target = base / "downloaded.bin"
        drop_caches()
        start = time.perf_counter()
        s3.download_file("bench", "boto3/big.bin", str(target), Config=transfer)
        boto_read = time.perf_counter() - start
    finally:
        subprocess.run([*tierfs, "unmount", str(mnt)], check=False)
        shutil.rmtree(base, ignore_errors=True)

    mb = size / MIB
    print(f"tierfs cold bench: {args.size_mib} MiB object, moto S3 server on 127.0.0.1")
    print(f"{'workload':<40}  {'tierfs':>8}  {'boto3':>8}  {'tierfs/boto3':>12}")
    for name, ours, theirs in (("large sequential write (MB/s)", ours_write, boto_write),
                               ("cold sequential read (MB/s)", ours_read, boto_read)):
        print(f"{name:<40}  {mb / ours:8.0f}  {mb / theirs:8.0f}  {theirs / ours:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
