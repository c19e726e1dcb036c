"""Written files stay hot, through a real mount and moto's S3 server (GETs counted by the
loopback proxy): a file written past the large-file threshold and closed reads back from the
hot tier with no GET; a hot capacity too small for it is respected; a rewrite never reads the
old version's blocks; a daemon killed right after a write-back close reads right after
remounting."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import Mount, S3Server, make_mount, running, tierfs, wait_for_exit
from s3proxy import FaultProxy

MIB = 1024 * 1024


def write_file(path: Path, size: int, seed: int) -> str:
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    with open(path, "wb") as f:
        for i in range(size // MIB):
            chunk = i.to_bytes(8, "little") + block[8:]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def read_digest(path: Path) -> str:
    """The file's SHA-256, read with O_DIRECT so that every byte comes from tierfs (not from
    the kernel's page cache of the mount)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        import mmap
        buf = mmap.mmap(-1, MIB)
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            digest.update(buf[:n])
    finally:
        os.close(fd)
    return digest.hexdigest()


def stats(m: Mount) -> dict:
    return json.loads(tierfs("stats", "--json", str(m.path)).stdout)


def cold_mount(tmp_path: Path, proxy: FaultProxy, bucket: str, *extra: str) -> Mount:
    return make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                      proxy.endpoint, "--addressing-style", "path", "--large-file-threshold",
                      "8MiB", "--part-size", "5MiB", *extra)


def test_a_file_written_to_the_bucket_reads_back_with_no_get(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    m = cold_mount(tmp_path, proxy, bucket)
    with running(m):
        size = 40 * MIB
        digest = write_file(m.path / "shard-0.bin", size, seed=1)
        assert (m.warm / "shard-0.bin").is_symlink(), "a large file must end as a stub"
        before, gets = stats(m), proxy.requests["GET"]
        assert before["tiers"]["hot"]["kept_written"] == size
        assert read_digest(m.path / "shard-0.bin") == digest
        after = stats(m)
        assert proxy.requests["GET"] == gets  # not one GET: every block was hot
        hits = after["tiers"]["hot"]["hits"] - before["tiers"]["hot"]["hits"]
        misses = after["tiers"]["hot"]["misses"] - before["tiers"]["hot"]["misses"]
        assert hits > 0 and hits / (hits + misses) >= 0.95
        assert after["tiers"]["cold"]["fetches"] == before["tiers"]["cold"]["fetches"]
        assert after["tiers"]["hot"]["used"] <= after["tiers"]["hot"]["capacity"]
        assert os.listdir(m.hot / "staging") == []


def test_a_hot_capacity_too_small_for_the_file_is_respected(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    m = cold_mount(tmp_path, proxy, bucket, "--hot-capacity", "64MiB")
    with running(m):
        size = 100 * MIB
        digest = write_file(m.path / "ckpt.pt", size, seed=2)
        first = stats(m)
        hot = first["tiers"]["hot"]
        assert 0 < hot["used"] <= hot["capacity"] == 64 * MIB
        assert first["counters"]["bytes_kept_written"] == hot["used"]
        gets = proxy.requests["GET"]
        assert read_digest(m.path / "ckpt.pt") == digest
        assert proxy.requests["GET"] > gets  # what was not kept comes from the bucket
        hot = stats(m)["tiers"]["hot"]
        assert hot["used"] <= hot["capacity"]


def test_a_rewrite_never_reads_the_old_versions_blocks(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    m = cold_mount(tmp_path, proxy, bucket)
    with running(m):
        size = 20 * MIB
        first = write_file(m.path / "ckpt.pt", size, seed=3)
        assert read_digest(m.path / "ckpt.pt") == first
        old = os.readlink(m.warm / "ckpt.pt")
        second = write_file(m.path / "ckpt.pt", size, seed=4)  # same key, same size
        assert os.readlink(m.warm / "ckpt.pt") != old
        gets = proxy.requests["GET"]
        assert read_digest(m.path / "ckpt.pt") == second != first
        assert proxy.requests["GET"] == gets


def test_killed_right_after_a_writeback_close_reads_right_after_remount(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    m = cold_mount(tmp_path, proxy, bucket, "--durability", "writeback")
    with running(m):
        size = 30 * MIB
        digest = write_file(m.path / "ckpt.pt", size, seed=5)
        for pid in m.pids:  # right after close: the publish may be anywhere, or not begun
            os.kill(pid, signal.SIGKILL)
            assert wait_for_exit(pid, 10)
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
        m.start()  # recovery publishes what the journal holds
        assert read_digest(m.path / "ckpt.pt") == digest
        assert (m.warm / "ckpt.pt").is_symlink()
        m.stop()
        m.start()
        assert read_digest(m.path / "ckpt.pt") == digest


def test_a_warm_file_written_with_warm_caching_reads_back_hot(tmp_path: Path) -> None:
    """The warm tier on a file system of its own (as NFS would be): published by copy, and
    its staged bytes kept as the blocks of the warm file's version."""
    m = make_mount(tmp_path, "--cache-warm", "true", warm_apart=True)
    with running(m):
        size = 20 * MIB
        digest = write_file(m.path / "shard.bin", size, seed=6)
        assert not (m.warm / "shard.bin").is_symlink()
        # Kept when the kernel's release (sent after close returns) retires the file's state.
        deadline = time.monotonic() + 10
        while (before := stats(m))["tiers"]["hot"]["kept_written"] < size:
            assert time.monotonic() < deadline, before["tiers"]["hot"]
            time.sleep(0.1)
        assert before["tiers"]["hot"]["kept_written"] == size
        assert read_digest(m.path / "shard.bin") == digest
        after = stats(m)
        hits = after["tiers"]["hot"]["hits"] - before["tiers"]["hot"]["hits"]
        misses = after["tiers"]["hot"]["misses"] - before["tiers"]["hot"]["misses"]
        assert hits > 0 and misses == 0
        assert after["tiers"]["warm"]["fetches"] == before["tiers"]["warm"]["fetches"]
