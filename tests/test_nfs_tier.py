"""The POSIX and model suites again, with the warm tier on an NFS-like network file system
(tests/nfslike.py: sshfs from a server on 127.0.0.1, a round trip of about 1 ms per call,
attributes cached for a few seconds, no extended attributes): tierfs must behave the same where
every warm call is slow and xattrs are missing.

The tests are those of tests/test_posix.py and tests/test_model.py, collected here a second
time: this module's ``mount``, ``shared_mount`` and ``open_mount`` fixtures replace conftest's,
so each test runs against the NFS-like tier.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_model
import test_posix
from conftest import Mount, S3Server, make_mount, read_uncached, running
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from nfslike import missing_tools

if missing_tools():
    pytest.fail(f"{', '.join(missing_tools())} not installed; .ci/run installs them",
                pytrace=False)

#: The NfsLike options of every mount here: about 1 ms per round trip, as managed NFS. One
#: connection: sshfs 3.7.3 with max_conns above 1 dies when a directory holding an open file
#: is renamed (tests/test_warm_limits.py drives several connections without that).
NFS = {"latency": 0.001, "max_conns": 1}
MIB = 1024 * 1024

#: POSIX tests that do not apply to this tier, and why: what sshfs lacks where NFS has it
#: (tierfs passes the warm tier's answers through), xattrs (tested below as refused), and
#: tests that build their own local mount.
NOT_HERE = {
    "test_extended_attributes": "no xattrs on this tier: test_xattrs_are_refused_cleanly",
    "test_deep_path_close_to_path_max": "mounts a local warm tier of its own",
    "test_symlinks_and_hard_links": "SFTP has no link count: sshfs reports 1 for every file",
    "test_fifo_works_and_device_nodes_are_refused": "SFTP has no mknod: sshfs refuses FIFOs",
    "test_rename_over_existing_and_directories":
        "SFTP v3 reports a rename over a non-empty directory as a failure (EPERM)",
    "test_rename_noreplace_and_exchange": "sshfs, as NFS, has no RENAME_EXCHANGE (EINVAL)",
}

for _name, _test in vars(test_posix).items():
    if _name.startswith("test_") and callable(_test) and _name not in NOT_HERE:
        globals()[_name] = _test


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    with running(make_mount(tmp_path, warm_nfs=NFS)) as m:
        yield m


@pytest.fixture
def open_mount() -> Iterator[Mount]:
    """A mount other users may use (allow_other) on a path they can reach."""
    base = Path(tempfile.mkdtemp(prefix="tierfs-shared-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with running(make_mount(base, "--allow-other", warm_nfs=NFS)) as m:
            m.path.chmod(0o777)  # the mount's root is the warm root
            yield m
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with running(make_mount(tmp_path_factory.mktemp("nfsshared"), warm_nfs=NFS)) as m:
        yield m


@pytest.fixture(scope="module")
def nfs_writeback_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with running(make_mount(tmp_path_factory.mktemp("nfswb"), "--durability", "writeback",
                            warm_nfs=NFS)) as m:
        yield m


@pytest.fixture(scope="module")
def nfs_cached_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    with running(make_mount(tmp_path_factory.mktemp("nfscached"), "--cache-warm", "true",
                            "--block-size", "64KiB", warm_nfs=NFS)) as m:
        yield m


def machine_for(mount: Mount, ref: Path, cold: bool = False) -> type[test_model.TreeMachine]:
    """The model without the rules this tier cannot follow (methods that are not rules
    replace them): hard links (SFTP has no link counts: sshfs says 1 for every file) and
    RENAME_EXCHANGE (which NFS lacks as sshfs does: EINVAL)."""
    def skipped(self: test_model.TreeMachine, *args: object) -> None:
        return None

    return type("NfsMachine", (test_model.machine_for(mount, ref, cold),),
                {"link": skipped, "exchange": skipped})


def run_machine(machine: type[test_model.TreeMachine], examples: int) -> None:
    """Fewer examples than tests/test_model.py runs: every step here costs round trips."""
    run_state_machine_as_test(
        machine, settings=settings(
            max_examples=int(os.environ.get("TIERFS_NFS_MODEL_EXAMPLES", examples)),
            stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)))


def test_model_mount_matches_a_plain_directory(shared_mount: Mount, tmp_path: Path) -> None:
    run_machine(machine_for(shared_mount, tmp_path), 10)


@pytest.mark.slow
def test_model_in_write_back_mode(nfs_writeback_mount: Mount, tmp_path: Path) -> None:
    run_machine(machine_for(nfs_writeback_mount, tmp_path), 25)


@pytest.mark.slow
def test_model_with_warm_blocks_cached(nfs_cached_mount: Mount, tmp_path: Path) -> None:
    run_machine(machine_for(nfs_cached_mount, tmp_path), 25)
    assert any(nfs_cached_mount.hot.joinpath("cache").rglob("*")), \
        "no warm block was cached: the test did not test the cache"


@pytest.fixture(scope="module")
def nfs_cold_mount(tmp_path_factory: pytest.TempPathFactory,
                   s3_server: S3Server) -> Iterator[Mount]:
    """Files over 4 KiB cross into a bucket: their stubs live on the NFS-like tier."""
    s3_server.client().create_bucket(Bucket="tierfs-nfs-model")
    with running(make_mount(tmp_path_factory.mktemp("nfscold"), "--bucket",
                            "s3://tierfs-nfs-model/t", "--endpoint-url", s3_server.endpoint,
                            "--addressing-style", "path", "--large-file-threshold",
                            f"{test_model.COLD_THRESHOLD}B", warm_nfs=NFS)) as m:
        yield m


@pytest.mark.slow
def test_model_while_files_cross_tiers(nfs_cold_mount: Mount, tmp_path: Path) -> None:
    run_machine(machine_for(nfs_cold_mount, tmp_path, cold=True), 25)
    assert "streaming" in nfs_cold_mount.log(), \
        "no file crossed into the bucket: the test did not test tiering"


@pytest.fixture
def machine(shared_mount: Mount, tmp_path: Path) -> Iterator[test_model.TreeMachine]:
    m = machine_for(shared_mount, tmp_path)()
    yield m
    m.teardown()


for _name in ("test_regression_rename_open_file_then_write_through_handle",
              "test_regression_unlink_open_file_then_recreate_name",
              # (not test_regression_hard_link_written_through_other_name: no link counts,
              # and sshfs caches attributes by name, so a hard link's other name is stale)
              ):
    globals()[_name] = getattr(test_model, _name)


def test_the_tier_has_no_extended_attributes(mount: Mount) -> None:
    """The premise of this module: xattrs on the warm tier are refused."""
    (mount.warm / "probe").write_text("x")
    with pytest.raises(OSError) as info:
        os.setxattr(mount.warm / "probe", "user.x", b"1")
    assert info.value.errno == errno.EOPNOTSUPP


def test_xattrs_are_refused_cleanly(mount: Mount) -> None:
    """Where the warm tier has no xattrs, tierfs says so (EOPNOTSUPP, as the tier itself
    does) and every other operation on the file goes on working."""
    p = mount.path / "x"
    p.write_text("x")
    with pytest.raises(OSError) as info:
        os.setxattr(p, "user.tier", b"warm")
    assert info.value.errno == errno.EOPNOTSUPP
    for call in (lambda: os.getxattr(p, "user.tier"), lambda: os.removexattr(p, "user.tier")):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno in (errno.EOPNOTSUPP, errno.ENODATA)
    try:
        assert os.listxattr(p) == []
    except OSError as e:
        assert e.errno == errno.EOPNOTSUPP
    with open(p, "a") as f:  # publishing copies the file without its (absent) xattrs
        f.write("more")
    assert p.read_text() == "xmore" and (mount.warm / "x").read_text() == "xmore"


def test_a_file_crosses_into_the_bucket(nfs_cold_mount: Mount) -> None:
    """Written past the threshold: its data goes to the bucket, a stub to the NFS-like tier."""
    data = os.urandom(test_model.COLD_THRESHOLD + 100)
    p = nfs_cold_mount.path / "crossing"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data[:2100])
        os.write(fd, data[2100:])
    finally:
        os.close(fd)
    assert p.read_bytes() == data
    assert os.readlink(nfs_cold_mount.warm / "crossing").startswith("tierfs:")


def test_a_directory_renamed_while_a_file_in_it_is_published(tmp_path: Path) -> None:
    """Write-back publishes by copying into a temp file beside the file, then renames it into
    place; a rename of the directory in between moved the temp file, whose old path the
    rename then missed: the publish failed and left the temp file behind. Slow calls (30 ms
    here) open that window wide."""
    data = os.urandom(200_000)
    with running(make_mount(tmp_path, "--durability", "writeback",
                            warm_nfs={"latency": 0.03, "max_conns": 1})) as m:
        waits = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
        for i, wait in enumerate(waits):
            (m.path / f"d{i}").mkdir()
            (m.path / f"d{i}" / "f").write_bytes(data)  # published in the background
            time.sleep(wait)  # (so that the rename comes while the copy is under way)
            os.rename(m.path / f"d{i}", m.path / f"e{i}")

        def settled() -> bool:
            return all(sorted(os.listdir(m.warm / f"e{i}")) == ["f"]
                       and (m.warm / f"e{i}" / "f").read_bytes() == data
                       for i in range(len(waits)))

        deadline = time.monotonic() + 20
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert settled(), {i: os.listdir(m.warm / f"e{i}") for i in range(len(waits))}
        assert "failed" not in m.log(), m.log()


def _requests(trace: Path, kind: int) -> int:
    """Requests of an SFTP type in the relay's trace so far (3: OPEN, 4: CLOSE)."""
    return sum(1 for line in trace.read_text().splitlines()
               if line.split()[2:4] == ["+", str(kind)])


def test_a_cached_file_is_read_again_without_opening_it_on_the_tier(tmp_path: Path) -> None:
    """With warm blocks cached, a file read again through a handle opened from a recent
    lookup is served from the hot tier: no OPEN (nor CLOSE) reaches the NFS-like server."""
    data = os.urandom(5 * 64 * 1024 + 100)
    with running(make_mount(tmp_path, "--cache-warm", "true", "--block-size", "64KiB",
                            warm_nfs={**NFS, "trace": True})) as m:
        assert m.nfs is not None
        trace = m.nfs.base / "trace"
        p = m.path / "f"
        p.write_bytes(data)
        assert read_uncached(p) == data

        def cached() -> int:
            return sum(1 for f in (m.hot / "cache").rglob("*") if f.is_file())

        deadline = time.monotonic() + 10
        while cached() < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cached() >= 6
        for _ in range(3):
            time.sleep(1.2)  # past entry_timeout: the open below follows a fresh lookup
            os.stat(p)
            opens, closes = _requests(trace, 3), _requests(trace, 4)
            assert read_uncached(p) == data
            time.sleep(0.3)  # (the kernel releases a handle after close returns)
            assert (_requests(trace, 3), _requests(trace, 4)) == (opens, closes)


#: SFTP requests one create, 4 KiB write and close may cost through tierfs in sync mode (20
#: counted at the relay: six at create, the temp file's lookup, open and attributes, the
#: write, one SETSTAT for the times, fsync, close, the rename and the lookups after it, and
#: the close of the file the create made; a direct create costs 7). It was 33 when the temp
#: file's attributes were set one by one and the replaced file, still open, was hidden by
#: sshfs under a .fuse_hidden name first.
CREATE_REQUESTS = 22


def test_a_small_file_costs_few_requests(tmp_path: Path) -> None:
    data = os.urandom(4096)
    with running(make_mount(tmp_path, warm_nfs=NFS)) as m:
        assert m.nfs is not None
        (m.path / "d").mkdir()

        def create(name: str, mode: int) -> None:
            fd = os.open(m.path / "d" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        def settled() -> int:
            """The requests so far, once none is in flight (a release's CLOSE comes after
            close() returns)."""
            last = -1
            while True:
                time.sleep(0.2)
                total, in_flight = m.nfs.stats()[:2]  # type: ignore[union-attr]
                if in_flight == 0 and total == last:
                    return total
                last = total

        create("first", 0o644)  # (tierfs learns the owner the tier gives new files)
        settled()
        m.nfs.reset_stats()
        n = 10
        for i in range(n):
            create(f"f{i}", 0o640 if i % 2 else 0o644)
        per_create = settled() / n
        assert per_create <= CREATE_REQUESTS, per_create
        for i in range(n):
            st = os.stat(m.warm / "d" / f"f{i}")
            assert (st.st_size, st.st_mode & 0o7777) == (4096, 0o640 if i % 2 else 0o644)
            assert (m.path / "d" / f"f{i}").read_bytes() == data
        assert sorted(os.listdir(m.warm / "d")) == sorted(["first"] + [f"f{i}" for i in range(n)])


def test_the_head_start_copy_catches_up_after_the_last_write(tmp_path: Path) -> None:
    """A checkpoint is staged at disk speed, far faster than the tier takes it: the writer has
    often written its last byte before the first step of its head-start copy is done, and the
    copy goes on to what was written meanwhile by itself (no later write comes to start it),
    so close finds only the tail left and the network is not idle until then."""
    data = os.urandom(12 * MIB)
    slow = {**NFS, "latency": 0.005}
    with running(make_mount(tmp_path, "--publish-ahead", "1MiB", warm_nfs=slow)) as m:
        fd = os.open(m.path / "ckpt.pt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            deadline = time.monotonic() + 30
            while True:
                temps = [p for p in m.warm.iterdir() if p.name.startswith(".tierfs-")]
                # (Less than a step may be left for close: the copy goes on while a step's
                # worth waits. The code before stopped at the first step.)
                if temps and temps[0].stat().st_size > len(data) - MIB:
                    break
                assert time.monotonic() < deadline, [p.stat().st_size for p in temps]
                time.sleep(0.05)
        finally:
            os.close(fd)
        assert (m.warm / "ckpt.pt").read_bytes() == data
