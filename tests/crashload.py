"""A writing workload for the crash tests, run as its own process until it is killed.

    python crashload.py DIR MANIFEST KIND SEED

It writes files under DIR (through the mount) and, each time a close or an fsync has returned,
appends ``path sha256 size`` to MANIFEST (outside the mount) and fsyncs it: the manifest is
what tierfs promised. KIND is ``small`` (many small files, some fsynced before close),
``large`` (files past the test's large-file threshold, streamed to the bucket) or ``mixed``.
Every file's content is fresh random bytes, so a partial file can never pass for a whole one.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from collections.abc import Iterator


def plan(directory: str, kind: str, seed: int) -> Iterator[tuple[str, bytes, bool]]:
    """The files the workload writes, in order: (path, content, fsync before close). The
    same seed gives the same files, so a test can tell a whole file from a partial one."""
    rng = random.Random(seed)
    for i in range(100_000):
        if kind == "small" or (kind == "mixed" and i % 4 != 3):
            size = rng.choice([0, 1, 100, 4096, 70_000])
            sub = os.path.join(directory, f"d{i % 7}")
        else:
            size = rng.randint(9, 20) * 1024 * 1024 + rng.randint(0, 4095)
            sub = os.path.join(directory, "big")
        yield os.path.join(sub, f"f{i:05d}.bin"), rng.randbytes(size), rng.random() < 0.3


def main() -> None:
    directory, manifest, kind, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    log = os.open(manifest, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def promise(path: str, data: bytes) -> None:
        line = f"{path} {hashlib.sha256(data).hexdigest()} {len(data)}\n"
        os.write(log, line.encode())
        os.fsync(log)

    for path, data, sync_first in plan(directory, kind, seed):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:1 << 20]):]
        if sync_first:
            os.fsync(fd)
            promise(path, data)
        os.close(fd)
        promise(path, data)


if __name__ == "__main__":
    main()
