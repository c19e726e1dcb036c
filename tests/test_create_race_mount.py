"""Through a real mount: ``open(O_CREAT | O_TRUNC)`` of a name that another node made between
the kernel's lookup (absent) and its create opens and truncates that file, as on a local disk,
instead of failing with EEXIST (tests/core/test_create_race.py has the daemon's half: the
create answers ESTALE, and the kernel looks the name up again and opens it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_a_name_made_after_the_lookup_is_opened_and_truncated(tmp_path: Path) -> None:
    hot, warm, mnt = tmp_path / "hot", tmp_path / "warm", tmp_path / "mnt"
    for d in (hot, warm, mnt):
        d.mkdir()
    (warm / "ckpt.pt").write_bytes(b"another node's save, longer than ours")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "racing_lookup.py"), "ckpt.pt", str(mnt),
         "--hot", str(hot), "--warm", str(warm), "--durability", "writeback"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "tierfs did not mount"
            time.sleep(0.05)
        fd = os.open(mnt / "ckpt.pt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"ours")
        finally:
            os.close(fd)
        assert (mnt / "ckpt.pt").read_bytes() == b"ours"
        subprocess.run([sys.executable, "-m", "tierfs", "flush", str(mnt)], check=True,
                       capture_output=True, timeout=60)
        assert (warm / "ckpt.pt").read_bytes() == b"ours"
        with open(mnt / "ckpt.pt", "rb") as f:
            assert f.read() == b"ours"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
