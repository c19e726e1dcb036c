"""Helpers the benchmarks share: dropping the page cache, moto's S3 server, mounting."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIB = 1024 * 1024
TIERFS = [sys.executable, "-m", "tierfs"]


def drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 in its own process; yields its endpoint URL."""
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait()


@contextmanager
def mounted(mnt: Path, *args: str) -> Iterator[Path]:
    subprocess.run([*TIERFS, "mount", str(mnt), *args], check=True)
    try:
        yield mnt
    finally:
        subprocess.run([*TIERFS, "unmount", str(mnt)], check=False)


def read_all(path: Path, chunk: int = MIB) -> int:
    fd = os.open(path, os.O_RDONLY)
    total = 0
    try:
        while data := os.read(fd, chunk):
            total += len(data)
    finally:
        os.close(fd)
    return total


@contextmanager
def own_file_system(path: Path, size_gib: int) -> Iterator[Path]:
    """An ext4 file system of its own at ``path``: an image on the same disk, loop-mounted
    with direct I/O. A warm tier there is apart from the hot tier's file system, as an NFS tier
    is, so tierfs publishes by copying instead of renaming staging files. Needs root."""
    image = path.parent / (path.name + ".img")
    with open(image, "wb") as f:
        f.truncate(size_gib << 30)
    loop = None
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        loop = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(image)],
                              check=True, capture_output=True, text=True).stdout.strip()
        path.mkdir(exist_ok=True)
        subprocess.run(["mount", loop, str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=False)
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        image.unlink()

