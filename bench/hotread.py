"""How fast the hot disk gives back whole cached blocks, read the ways a block cache could read
them, against a plain sequential read of the same block files, in one run.

The block cache (tierfs/cache/store.py) reads each 8 MiB block file into a reused buffer in
steps of ``READ_STEP``; this measures that choice against the alternatives on the disk at
hand: one read of the whole block, ``O_DIRECT``, and mapping the file with ``MAP_POPULATE``,
each from one thread and from four (the cache loads a few blocks at once).

    sudo .venv/bin/python bench/hotread.py [--dir /path/on/the/hot/disk] [--blocks 32]

Root is needed to drop the page cache before every pass. Best of three passes each.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import MIB, drop_caches

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tierfs.cache.store import READ_STEP, read_steps  # noqa: E402

BLOCK = 8 * MIB
_buffers = threading.local()


def buffer() -> mmap.mmap:
    """One reused, page-aligned buffer per thread (as the cache's pool gives)."""
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = mmap.mmap(-1, BLOCK)
    return buf


def plain(path: str) -> int:
    """What `cat` does: 1 MiB reads in order."""
    fd = os.open(path, os.O_RDONLY)
    try:
        total = 0
        while chunk := os.read(fd, MIB):
            total += len(chunk)
        return total
    finally:
        os.close(fd)


def in_steps(path: str) -> int:
    """What the block cache does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        done = read_steps(fd, buffer(), BLOCK)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return done
    finally:
        os.close(fd)


def whole(path: str, flags: int = 0) -> int:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        return os.preadv(fd, [buffer()], 0)
    finally:
        os.close(fd)


def direct(path: str) -> int:
    return whole(path, os.O_DIRECT)


def mapped(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, BLOCK, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                       prot=mmap.PROT_READ) as m:
            return len(m)
    finally:
        os.close(fd)


def rate(fn: Callable[[str], int], files: list[str], threads: int) -> float:
    """MB/s, best of three passes with the page cache dropped before each."""
    best = float("inf")
    for _ in range(3):
        drop_caches()
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            total = sum(pool.map(fn, files))
        assert total == BLOCK * len(files), f"{fn.__name__} read {total} bytes"
        best = min(best, time.perf_counter() - start)
    return BLOCK * len(files) / MIB / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="a directory on the hot tier's disk (default: under /var/tmp)")
    parser.add_argument("--blocks", type=int, default=32)
    args = parser.parse_args()
    if not drop_caches():
        print("bench/hotread.py needs root to drop the page cache", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="tierfs-hotread-", dir=args.dir or "/var/tmp"))
    try:
        files = []
        for i in range(args.blocks):
            path = base / f"block-{i:04d}"
            path.write_bytes(os.urandom(BLOCK))
            files.append(str(path))
        baseline = rate(plain, files, 1)
        print(f"tierfs hot-read bench: {args.blocks} block files of 8 MiB; baseline = 1 MiB "
              f"reads in order, one file after another: {baseline:.0f} MB/s")
        print(f"{'read':<36} {'threads':>7} {'MB/s':>7} {'/baseline':>9}")
        ways = [(f"in {READ_STEP // 1024} KiB steps (tierfs)", in_steps),
                ("one read of the whole block", whole), ("O_DIRECT, whole block", direct),
                ("mmap with MAP_POPULATE", mapped)]
        for name, fn in ways:
            for threads in (1, 4):
                r = rate(fn, files, threads)
                print(f"{name:<36} {threads:>7} {r:7.0f} {r / baseline:8.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
