"""Operator commands over a directory in use: files and folders that come and go while a
command walks and fetches are not failures of the command (each was there when looked at,
and is gone or another file now), and what stays is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from conftest import make_mount, running, tierfs

KIB = 1024


def test_warm_and_pin_of_a_directory_in_use(tmp_path: Path) -> None:
    """They failed with "could not fetch all of it: No such file or directory" (a file
    removed between the walk and its fetch) or "no such file or directory" (a folder
    removed during the walk), in about two runs of three."""
    (tmp_path / "cold").mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                   "--large-file-threshold", "64KiB", "--block-size", "64KiB",
                   "--cache-warm", "true", "--attr-timeout", "0", "--entry-timeout", "0")
    with running(m):
        d = m.path / "d"
        d.mkdir()
        keep = os.urandom(100 * KIB)
        (d / "keep").write_bytes(keep)
        stop = threading.Event()

        def churn() -> None:
            i = 0
            while not stop.is_set():
                sub = d / f"sub{i % 5}"
                sub.mkdir()
                for j in range(4):
                    (sub / f"x{j}").write_bytes(b"y" * 32 * KIB)
                for j in range(4):
                    (sub / f"x{j}").unlink()
                sub.rmdir()
                i += 1

        worker = threading.Thread(target=churn)
        worker.start()
        errors = []
        try:
            for _ in range(12):
                for cmd in ("warm", "where", "pin", "evict"):
                    r = subprocess.run([sys.executable, "-m", "tierfs", cmd, str(d)],
                                       capture_output=True, text=True, timeout=60,
                                       stdin=subprocess.DEVNULL)
                    if r.returncode:
                        errors.append((cmd, r.stderr.strip()))
        finally:
            stop.set()
            worker.join()
        assert not errors, errors[:5]
        tierfs("warm", str(d))
        where = json.loads(tierfs("where", "--json", str(d / "keep")).stdout)[0]
        assert where["hot"] == 100 * KIB and (d / "keep").read_bytes() == keep
