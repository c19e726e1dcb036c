"""What a write into a staging file costs on the event loop, and what its trip to a hot-tier
worker thread adds: the measurement behind ``tierfs.tiers.hot.INLINE_WRITE``.

The brief lets a local hot-tier call run inline only where the hand-off costs more than the
call. Each size is written ``--count`` times into a file on the hot tier's disk, once inline
and once through ``tierfs.tiers.workers.Workers`` (as tierfs's writes over ``INLINE_WRITE``
go), alternating, twice each; it prints microseconds per call and the hand-off's cost as a
ratio of the call's.

    .venv/bin/python bench/handoff.py [--dir /var/tmp] [--count 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tierfs.tiers.workers import Workers  # noqa: E402

SIZES = (64 * 1024, 128 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024)


async def per_call(workers: Workers, path: Path, size: int, count: int, inline: bool
                   ) -> float:
    """Seconds per pwrite of ``size`` bytes, ``count`` of them in order into a new file."""
    buf = os.urandom(size)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        for i in range(count):
            if inline:
                os.pwrite(fd, buf, i * size)
            else:
                await workers.run(os.pwrite, fd, buf, i * size)
        return (time.perf_counter() - start) / count
    finally:
        os.close(fd)
        os.unlink(path)


async def main(args: argparse.Namespace) -> None:
    workers = Workers("hot", 4)
    path = Path(tempfile.mkdtemp(prefix="handoff-", dir=args.dir)) / "staging"
    try:
        print(f"{'size':>9} {'inline us':>10} {'thread us':>10} {'hand-off us':>12} "
              f"{'hand-off/call':>14}")
        for size in SIZES:
            inline, thread = [], []
            for _ in range(2):
                inline.append(await per_call(workers, path, size, args.count, True))
                thread.append(await per_call(workers, path, size, args.count, False))
            call, through = min(inline), min(thread)
            print(f"{size // 1024:>6} KiB {call * 1e6:>10.1f} {through * 1e6:>10.1f} "
                  f"{(through - call) * 1e6:>12.1f} {(through - call) / call:>13.2f}x")
    finally:
        workers.close()
        path.parent.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/var/tmp",
                        help="a directory on the hot tier's disk (default /var/tmp)")
    parser.add_argument("--count", type=int, default=256)
    trio.run(main, parser.parse_args())
