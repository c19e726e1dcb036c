"""The warm tier as an NFS server sees it (tests/nfslike.py counts requests at the server):
``warm_threads`` bounds what tierfs has in flight there, and a stalled server stalls neither
reads of hot-cached data, nor ``tierfs stats``, nor ``tierfs status``, which names it; on a
mount of named roots, a stalled root stalls neither the other roots nor the mount's top."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import make_mount, make_roots_mount, running, tierfs
from nfslike import NfsLike, missing_tools

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
        for i in range(16):  # written at the server: not on the hot tier, so read there
            (m.nfs.export / f"other{i}").write_bytes(b"o" * 1000)
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


def test_a_stalled_root_of_named_roots_stalls_only_what_touches_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount of named roots, ``far`` (listed first: the root the mount's statfs asked)
    on the NFS-like server, ``near`` and ``scratch`` plain directories. With the server
    stalled and ``far``'s warm threads all waiting on it, the other roots' files (a large
    one cold in the bucket, its blocks hot) read promptly, the mount's top answers, and
    ``tierfs stats`` and ``tierfs status`` answer, status naming ``warm far`` as stalled."""
    from click.testing import CliRunner

    from tierfs.cli.inspect import status
    from tierfs.control import registry

    m = make_roots_mount(tmp_path, (), "--warm-threads", "2", "--large-file-threshold",
                         "64KiB")
    m.nfs = NfsLike(tmp_path / "nfs", latency=0.001, max_conns=2)
    m.roots["far"] = m.nfs.path
    for name in ("near", "scratch"):
        m.roots[name] = tmp_path / f"warm-{name}"
        m.roots[name].mkdir()
    with running(m):
        big = os.urandom(1024 * 1024)
        (m.path / "near" / "big.bin").write_bytes(big)
        assert os.readlink(m.roots["near"] / "big.bin").startswith("tierfs:")  # cold
        (m.path / "scratch" / "small").write_bytes(b"s" * 1000)
        for i in range(8):  # written at the server: not on the hot tier, so read there
            (m.nfs.export / f"f{i}").write_bytes(b"f" * 1000)
        # Only this mount answers ``status`` here (the machine's registry may hold others).
        record = registry.mount_for(str(m.path))[0]  # type: ignore[index]
        monkeypatch.setattr(registry, "mounts", lambda: [record])

        def status_of(*args: str) -> tuple[float, int, str]:
            start = time.monotonic()
            result = CliRunner().invoke(status, list(args))
            return time.monotonic() - start, result.exit_code, result.output

        usual = max(timed(lambda: tierfs("stats", str(m.path), "--json")),
                    status_of("--json")[0])
        fd = os.open(m.path / "near" / "big.bin", os.O_RDONLY)
        waiting: list[threading.Thread] = []
        try:
            assert os.pread(fd, len(big), 0) == big  # its blocks are now on the hot tier
            m.nfs.stall(30)  # (resumed below, once checked)
            waiting += [threading.Thread(target=lambda i=i: (m.path / "far" / f"f{i}")
                                         .read_bytes(), daemon=True) for i in range(8)]
            for t in waiting:
                t.start()
            time.sleep(3)
            assert any(t.is_alive() for t in waiting), "the server did not stall"

            def prompt(what: str, fn: Callable[[], object], bound: float) -> object:
                done: list[object] = []
                worker = threading.Thread(target=lambda: done.append(fn()), daemon=True)
                worker.start()
                worker.join(timeout=bound)
                assert done, f"{what} waited for the stalled root"
                return done[0]

            def cached_read() -> None:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # so tierfs answers it
                assert os.pread(fd, len(big), 0) == big

            prompt("a hot-cached read in another root", cached_read, 2.0)
            assert prompt("a read in another root",
                          lambda: (m.path / "scratch" / "small").read_bytes(), 5.0) == b"s" * 1000
            prompt("a write in another root",
                   lambda: (m.path / "scratch" / "new").write_bytes(b"n"), 5.0)
            prompt("stat of the mount's top", lambda: os.stat(m.path), 5.0)
            assert prompt("a listing of the mount's top", lambda: sorted(os.listdir(m.path)),
                          5.0) == ["far", "near", "scratch"]
            prompt("statfs of the mount", lambda: os.statvfs(m.path), 5.0)

            start = time.monotonic()
            stats = json.loads(tierfs("stats", str(m.path), "--json", timeout=20).stdout)
            assert time.monotonic() - start < usual + 5, "stats waited for the stalled root"
            assert sorted(stats["roots"]) == ["far", "near", "scratch"]
            start = time.monotonic()
            shown = tierfs("stats", str(m.path), timeout=20).stdout
            assert time.monotonic() - start < usual + 5, "stats waited for the stalled root"
            assert "warm far" in shown

            took, code, out = status_of("--json")
            assert took < usual + 5, f"status waited {took:.1f} s for the stalled root"
            health = json.loads(out)[0]["health"]
            far = health["warm far"]
            assert not far["ok"] and "stalled" in far["detail"], far
            assert far["path"] == str(m.roots["far"])
            for name in ("near", "scratch"):
                assert health[f"warm {name}"]["ok"], health
            assert health["hot"]["ok"]
            took, code, out = status_of()
            assert took < usual + 5 and code == 1, (took, code, out)
            assert "warm far PROBLEM" in " ".join(out.split()), out
            assert f"{m.roots['far']}: stalled" in out, out
        finally:
            m.nfs.resume()
            os.close(fd)
        for t in waiting:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in waiting)
        assert (m.path / "far" / "f3").read_bytes() == b"f" * 1000
        (m.path / "far" / "after").write_bytes(b"a")
        assert (m.nfs.export / "after").read_bytes() == b"a"
        assert (m.path / "scratch" / "new").read_bytes() == b"n"
        took, code, out = status_of("--json")
        assert code == 0 and all(h["ok"] for h in json.loads(out)[0]["health"].values()), out
        m.stop()


def test_a_hundred_readers_of_a_stalled_root_stall_no_other_root(tmp_path: Path) -> None:
    """Each request waiting for the stalled root holds one of the mount's FUSE worker tasks:
    with 64 of them, a data loader's 100 workers reading from that root left none for any
    other request, and the other root, the mount's top and statfs stopped answering."""
    readers = 100
    m = make_roots_mount(tmp_path, (), "--warm-threads", "2", "--entry-timeout", "60",
                         "--attr-timeout", "60")
    m.nfs = NfsLike(tmp_path / "nfs", latency=0.001, max_conns=2)
    m.roots["far"] = m.nfs.path
    m.roots["near"] = tmp_path / "warm-near"
    m.roots["near"].mkdir()
    with running(m):
        (m.path / "near" / "small").write_bytes(b"s" * 100)
        for i in range(readers):  # written at the server: read there through the mount
            (m.nfs.export / f"d{i}").mkdir()
            (m.nfs.export / f"d{i}" / "f").write_bytes(b"f" * 100)
        for i in range(readers):  # each directory known to the kernel: no shared lookup
            os.stat(m.path / "far" / f"d{i}")
        m.nfs.stall(60)
        waiting = [threading.Thread(target=lambda i=i: (m.path / "far" / f"d{i}" / "f")
                                    .read_bytes(), daemon=True) for i in range(readers)]
        try:
            for t in waiting:
                t.start()
            time.sleep(4)
            assert all(t.is_alive() for t in waiting), "the server did not stall"
            for what, fn in (("a read in the other root",
                              lambda: (m.path / "near" / "small").read_bytes()),
                             ("a listing of the top", lambda: os.listdir(m.path)),
                             ("statfs", lambda: os.statvfs(m.path))):
                done: list[object] = []
                worker = threading.Thread(target=lambda fn=fn: done.append(fn()), daemon=True)
                worker.start()
                worker.join(timeout=10)
                assert done, f"{what} waited for the stalled root"
        finally:
            m.nfs.resume()
        for t in waiting:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in waiting)


def test_stats_and_status_asked_again_and_again_during_a_stall_keep_answering(
        tmp_path: Path) -> None:
    """Each ask for stats or status looks at the stalled root's disk in a thread that hangs
    there. Forty such threads abandoned used up every thread the mount runs such calls in
    (trio's, shared), and then no control command answered at all; now a look waits for the
    one before it (``Probes``), up to its timeout."""
    from tierfs.control.client import call
    from tierfs.control.registry import mount_for

    m = make_roots_mount(tmp_path, (), "--warm-threads", "2")
    m.nfs = NfsLike(tmp_path / "nfs", latency=0.001, max_conns=2)
    m.roots["far"] = m.nfs.path
    m.roots["near"] = tmp_path / "warm-near"
    m.roots["near"].mkdir()
    with running(m):
        (m.nfs.export / "f").write_bytes(b"f" * 100)
        record = mount_for(str(m.path))[0]  # type: ignore[index]
        m.nfs.stall(120)
        reader = threading.Thread(target=lambda: (m.path / "far" / "f").read_bytes(),
                                  daemon=True)
        try:
            reader.start()
            time.sleep(3)  # (a call to ``far`` is now older than STALLED_AFTER)
            assert reader.is_alive(), "the server did not stall"
            took: list[float] = []

            def ask(i: int) -> None:
                took.append(timed(lambda: call(record, {"cmd": ("stats", "health")[i % 2]},
                                               timeout=30)))

            for _ in range(5):
                in_parallel(18, ask)
            assert max(took) < 10, sorted(took)[-5:]
            start = time.monotonic()
            stats = call(record, {"cmd": "stats"}, timeout=30)
            health = call(record, {"cmd": "health"}, timeout=30)
            assert time.monotonic() - start < 10
            assert sorted(stats["roots"]) == ["far", "near"]
            assert "stalled" in health["warm far"]["detail"], health
            assert health["warm near"]["ok"] and health["hot"]["ok"], health
            (m.path / "near" / "n").write_bytes(b"n")  # and the other root serves
        finally:
            m.nfs.resume()
        reader.join(timeout=30)
        assert (m.path / "near" / "n").read_bytes() == b"n"


def test_the_nfs_like_tier_opens_all_its_connections_at_start(tmp_path: Path) -> None:
    """As an NFS client given ``nconnect`` does at mount: sshfs alone opens them as work
    finds the others busy, and the request that opens one waits for its ssh handshake."""
    server = NfsLike(tmp_path / "nfs", latency=0.001, max_conns=3)
    server.start()
    try:
        assert server.connections() == 3
    finally:
        server.stop()
