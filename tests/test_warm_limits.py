"""The warm tier as an NFS server sees it (tests/nfslike.py counts requests at the server):
``warm_threads`` bounds what tierfs has in flight there, and a stalled server stalls neither
reads of hot-cached data, nor ``tierfs stats``, nor ``tierfs status``, which names it."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import make_mount, running, tierfs
from nfslike import missing_tools

if missing_tools():
    pytest.fail(f"{', '.join(missing_tools())} not installed; .ci/run installs them",
                pytrace=False)

#: Every call reaches the server (no attribute cache), writes and reads wait for their
#: replies (no write-behind, no speculative read-ahead), and four connections, so that sshfs
#: itself does not cap what is in flight below tierfs's limit.
UNCACHED = {"latency": 0.002, "max_conns": 4, "cache_timeout": 0,
            "options": ["sshfs_sync", "no_readahead"]}
CLIENTS = 24


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def in_parallel(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # (reported below, in the test's thread)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def most_in_flight(base: Path, warm_threads: int) -> int:
    """The most requests in flight at the server while CLIENTS threads look up, read and
    create small files through a mount with ``warm_threads``, but for what the kernel's
    asynchronous releases send (nfslike.SharedStats): CLOSEs, and REMOVEs of files libfuse
    hid while open (a publish renames over the file tierfs holds open; nothing is unlinked
    here)."""
    with running(make_mount(base, "--warm-threads", str(warm_threads),
                            warm_nfs=UNCACHED)) as m:
        assert m.nfs is not None
        for c in range(CLIENTS):  # written at the server: no request through the mount
            (m.nfs.export / f"c{c}").mkdir()
            for i in range(20):
                (m.nfs.export / f"c{c}" / f"f{i}").write_bytes(b"x" * 3000)
        m.nfs.reset_stats()

        def client(c: int) -> None:
            d = m.path / f"c{c}"
            for i in range(20):
                os.stat(d / f"f{i}")
                assert (d / f"f{i}").read_bytes() == b"x" * 3000
                (d / f"new{i}").write_bytes(b"y" * 100)

        in_parallel(CLIENTS, client)
        requests, _, _, _, most = m.nfs.stats()
        assert requests > CLIENTS * 20 * 3, "the work did not reach the server"
        return most


def test_warm_threads_bound_the_requests_in_flight_at_the_server(tmp_path: Path) -> None:
    # Each warm-tier thread makes one blocking call at a time, and each call has at most two
    # requests in flight: one, but for an open, whose OPEN sshfs sends with an LSTAT beside
    # it (writes and reads wait for their replies: sshfs_sync, no_readahead).
    limited = most_in_flight(tmp_path / "limited", 2)
    assert 1 <= limited <= 2 * 2, limited
    # The same work with a larger limit puts more in flight: the bound above is tierfs's.
    wide = most_in_flight(tmp_path / "wide", 16)
    assert wide > 2 * 2, f"with 16 threads at most {wide} in flight: the test shows nothing"


def test_a_stalled_warm_tier_stalls_neither_cached_reads_nor_stats_nor_status(
        tmp_path: Path) -> None:
    with running(make_mount(tmp_path, "--cache-warm", "true", "--warm-threads", "4",
                            warm_nfs={"latency": 0.001, "max_conns": 2})) as m:
        assert m.nfs is not None
        data = os.urandom(2 * 1024 * 1024)
        (m.path / "cached").write_bytes(data)
        for i in range(16):
            (m.path / f"other{i}").write_bytes(b"o" * 1000)
        # How long the commands take with the tier answering (the machine may be busy).
        usual = max(timed(lambda: tierfs("stats", str(m.path), "--json")),
                    timed(lambda: tierfs("status", "--json")))
        fd = os.open(m.path / "cached", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # (pages kept from the write)
            assert os.pread(fd, len(data), 0) == data  # its blocks are now on the hot tier
            m.nfs.stall(30)  # (resumed below, once checked)
            # Readers of files not cached take every warm thread and wait for the server.
            waiting = [threading.Thread(target=lambda i=i: (m.path / f"other{i}").read_bytes(),
                                        daemon=True) for i in range(16)]
            for t in waiting:
                t.start()
            time.sleep(3)
            assert any(t.is_alive() for t in waiting), "the server did not stall"

            start = time.monotonic()
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # so tierfs answers the read
            assert os.pread(fd, len(data), 0) == data
            assert time.monotonic() - start < 1.0, "a cached read waited for the warm tier"

            start = time.monotonic()
            stats = json.loads(tierfs("stats", str(m.path), "--json", timeout=20).stdout)
            assert time.monotonic() - start < usual + 2.5, "stats waited for the warm tier"
            assert stats["tiers"]["hot"]

            start = time.monotonic()
            status = tierfs("status", "--json", timeout=20)
            assert time.monotonic() - start < usual + 2.5, "status waited for the warm tier"
            mine = [s for s in json.loads(status.stdout) if s["mountpoint"] == str(m.path)]
            warm = mine[0]["health"]["warm"]
            assert not warm["ok"] and "stalled" in warm["detail"], warm
            assert warm["oldest_call_seconds"] >= 2.0
            assert mine[0]["health"]["hot"]["ok"]
            said = tierfs("status", check=False, timeout=20)
            assert said.returncode == 1
            assert f"warm  PROBLEM  {m.warm}: stalled" in said.stdout, said.stdout
        finally:
            m.nfs.resume()
            os.close(fd)
        for t in waiting:
            t.join(timeout=30)
        status = tierfs("status", "--json", timeout=30)
        mine = [s for s in json.loads(status.stdout) if s["mountpoint"] == str(m.path)]
        assert mine[0]["health"]["warm"]["ok"], mine
