"""``tierfs flush`` right after a close that failed (sync mode, the bucket down): the file's
release tries its publish again in the caller's task, and only once that fails too does the
file wait in write-back. Meanwhile flush found nothing pending and said all was home."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_uncached, running
from s3proxy import FaultProxy
from test_durability import s3_mount

MIB = 1024 * 1024


def test_flush_right_after_a_failed_close_waits_for_the_file(
        tmp_path: Path, proxy: FaultProxy, bucket: str) -> None:
    m = s3_mount(tmp_path, proxy.endpoint, bucket)
    data = os.urandom(12 * MIB + 1)  # (streamed to the bucket: its close completes it)
    with running(m):
        fd = os.open(m.path / "f.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        proxy.fail("POST", "503")  # the completion, and every try of it until healed
        with pytest.raises(OSError) as failed:
            os.close(fd)
        assert failed.value.errno == errno.EIO
        flush = subprocess.Popen([sys.executable, "-m", "tierfs", "flush", str(m.path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 3
            while flush.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proxy.heal()  # (the release's tries, or flush's own, then get through)
            out, _ = flush.communicate(timeout=300)
            home = (m.warm / "f.bin").is_symlink()  # (as flush returned: before, within 3 s)
        finally:
            proxy.heal()
            if flush.poll() is None:
                flush.kill()
        assert flush.returncode == 0, out
        assert home, f"flush said all was home while the file was staged only: {out}"
        assert hashlib.sha256(read_uncached(m.path / "f.bin")).digest() == \
            hashlib.sha256(data).digest()
