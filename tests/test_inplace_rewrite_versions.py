"""Another node rewrites a warm file in place, keeping its size and putting its mtime back
(``cp -p``, ``rsync -t --inplace``): only its ctime tells. Bytes a handle reads after that
are served, as any open file's, but never cached under the old version's name, where an
open answered from memory (the old attributes, fresh for ``attr_timeout``) would read them
beside the old version's blocks."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import make_mount, running

BLOCK = 64 * 1024


def pread_uncached(fd: int, size: int, offset: int) -> bytes:
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # so tierfs answers it
    return os.pread(fd, size, offset)


def test_a_rewrite_keeping_size_and_mtime_is_not_cached_as_the_old_version(
        tmp_path: Path) -> None:
    m = make_mount(tmp_path, "--cache-warm", "true", "--block-size", "64KiB")
    old = b"A" * BLOCK + b"a" * BLOCK + b"C" * BLOCK
    new = b"B" * BLOCK + b"b" * BLOCK + b"D" * BLOCK
    with running(m):
        warm = m.warm / "f"
        warm.write_bytes(old)
        path = m.path / "f"
        os.stat(path)  # the old version's attributes, fresh for attr_timeout (1 s)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # (no kernel read-ahead)
            assert pread_uncached(fd, 4096, 2 * BLOCK) == old[2 * BLOCK:2 * BLOCK + 4096]
            st = os.stat(warm)
            with open(warm, "r+b") as f:  # another node, in place
                f.write(new)
            os.utime(warm, ns=(st.st_atime_ns, st.st_mtime_ns))
            assert pread_uncached(fd, 4096, 0) == new[:4096]  # (blocks 0 and 1 fetched)
        finally:
            os.close(fd)
        fd = os.open(path, os.O_RDONLY)  # answered from memory: the old version
        try:
            got = pread_uncached(fd, 3 * BLOCK, 0)
        except OSError as e:
            got = repr(e).encode()
        finally:
            os.close(fd)
        assert got in (old, new) or b"Stale" in got, \
            (got[:1], got[BLOCK:BLOCK + 1], got[2 * BLOCK:2 * BLOCK + 1], len(got))
