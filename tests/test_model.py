"""A hypothesis state machine: random operations applied to the mount and to a plain reference
directory, with the whole tree compared after every step.

Each operation must give the same outcome (success, or the same errno) on both sides. Failures
that hypothesis shrinks are kept at the bottom of this file as named regression tests.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import shutil
import functools
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, invariant, rule,
                                 run_state_machine_as_test)

from conftest import Mount, S3Server, make_mount, renameat2, running
from tierfs.tiers.warm import RENAME_EXCHANGE

PATHS = ["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "e", "e/a"]
paths = st.sampled_from(PATHS)
payloads = st.binary(min_size=0, max_size=3000)
#: Past the 4 KiB thresholds of the mounts below, so every run crosses them (small payloads
#: alone reach them only now and then). Made from a seed: hypothesis draws every byte of a
#: binary() from an 8 KiB buffer per example, and learns to avoid rules that exhaust it.
large_payloads = st.builds(lambda size, seed: random.Random(seed).randbytes(size),
                           st.integers(min_value=4200, max_value=12000),
                           st.integers(min_value=0, max_value=2**32 - 1))
offsets = st.integers(min_value=0, max_value=5000)
modes = st.sampled_from([0o600, 0o644, 0o640, 0o755, 0o700, 0o444])
#: How long the warm tier may take to catch up with closed files (write-back mode).
SETTLE_TIMEOUT = 15.0

_runs = itertools.count()
#: The large-file threshold of the mounts whose files cross into the bucket.
COLD_THRESHOLD = 4096
#: What docs/semantics.md says a cold file may refuse (ENOTSUP and EOPNOTSUPP are one number).
REFUSED_FOR_COLD = {("error", errno.errorcode[errno.EOPNOTSUPP]),
                    ("error", errno.errorcode[errno.EPERM])}


def snapshot(root: Path) -> dict[str, Any]:
    """Names, types, sizes, modes, link counts and contents of a whole tree."""
    tree: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st_ = os.lstat(full)
            kind = stat.S_IFMT(st_.st_mode)
            entry: dict[str, Any] = {"kind": kind, "mode": stat.S_IMODE(st_.st_mode)}
            if kind == stat.S_IFREG:
                with open(full, "rb") as f:
                    entry.update(size=st_.st_size, nlink=st_.st_nlink, data=f.read())
            elif kind == stat.S_IFLNK:
                entry.update(target=os.readlink(full))
                del entry["mode"]  # symlink modes are not meaningful on Linux
            tree[rel] = entry
    return tree


def settling_snapshot(root: Path) -> dict[str, Any] | None:
    """The tree, or None while an entry vanished under the walk: tierfs removes its own temp
    files in the background (a copy made ahead for a file unlinked since, say)."""
    try:
        return snapshot(root)
    except FileNotFoundError:
        return None


def _size(path: Path) -> int:
    """A regular file's size (not following a symlink); -1 for anything else."""
    try:
        st_ = path.lstat()
    except OSError:
        return -1
    return st_.st_size if stat.S_ISREG(st_.st_mode) else -1


def logged(rule_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Keep each step the machine takes: a failure that depends on timing (write-back runs in
    the background) may not replay, and hypothesis then cannot show its steps."""

    @functools.wraps(rule_fn)
    def step(self: TreeMachine, *args: Any, **kwargs: Any) -> Any:
        shown = [f"<{len(v)} bytes>" if isinstance(v, bytes) else repr(v)
                 for v in [*args, *kwargs.values()]]
        self.steps.append(f"{rule_fn.__name__}({', '.join(shown)})")
        return rule_fn(self, *args, **kwargs)

    return step


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except OSError as e:
        return ("error", errno.errorcode.get(e.errno, e.errno))


class TreeMachine(RuleBasedStateMachine):
    """Subclassed per test so that the mount and reference roots are known."""

    mount_root: Path
    ref_root: Path
    #: Set when the mount has a small large-file threshold: files cross into the bucket, and
    #: the refusals documented for cold files (EOPNOTSUPP, EPERM) are accepted for them.
    warm_root: Path | None = None
    #: Set for mounts whose files all stay on the warm tier: once every handle is closed (and,
    #: in write-back mode, the background uploads are done), the warm directory itself, what
    #: other machines see, must hold the reference tree.
    settle_root: Path | None = None

    handles = Bundle("handles")
    #: Read-only handles: no writer, so a writer's close elsewhere publishes under them.
    readers = Bundle("readers")

    def __init__(self) -> None:
        super().__init__()
        n = next(_runs)
        self.m = self.mount_root / f"run{n}"
        self.r = self.ref_root / f"run{n}"
        self.m.mkdir()
        self.r.mkdir()
        self.open_fds: list[int] = []
        self.steps: list[str] = []

    def is_cold(self, path: str) -> bool:
        """Whether ``path`` is, or is a symlink (chain) to, a stub on the warm tier."""
        if self.warm_root is None:
            return False
        where = self.warm_root / self.m.name / path
        for _ in range(8):
            if not where.is_symlink():
                return False
            target = os.readlink(where)
            if target.startswith("tierfs:"):
                return True
            where = where.parent / target
        return False

    def both(self, fn: Callable[[Path], Any], *paths: str, refusable: bool = False) -> Any:
        """``fn`` on the mount and on the reference, with the same outcome; a refusal
        documented for cold files is accepted for ``paths`` that are cold (or ``refusable``)."""
        cold = refusable or any(self.is_cold(p) for p in paths)
        got = outcome(lambda: fn(self.m))
        # In write-back mode a closed file becomes a stub when its upload completes in the
        # background; an open for writing waits for that, so the file may be cold only now.
        cold = cold or any(self.is_cold(p) for p in paths)
        if cold and got in REFUSED_FOR_COLD:
            return got  # refused for a cold file, as documented; the reference is not changed
        ref = outcome(lambda: fn(self.r))
        assert got == ref, (f"mount gave {got}, reference gave {ref}, after:\n"
                            + "\n".join(self.steps))
        return got

    # -- rules --------------------------------------------------------------------------

    @rule(path=paths, data=payloads, offset=offsets, mode=modes)
    @logged
    def write_at(self, path: str, data: bytes, offset: int, mode: int) -> None:
        def op(root: Path) -> None:
            fd = os.open(root / path, os.O_WRONLY | os.O_CREAT, mode)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
        self.both(op, path)

    @rule(path=paths, data=payloads, mode=modes)
    @logged
    def create_truncating(self, path: str, data: bytes, mode: int) -> None:
        def op(root: Path) -> None:
            fd = os.open(root / path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        self.both(op, path)

    @rule(path=paths, data=large_payloads, mode=modes)
    @logged
    def write_large(self, path: str, data: bytes, mode: int) -> None:
        def op(root: Path) -> None:
            fd = os.open(root / path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            try:
                half = len(data) // 2
                os.write(fd, data[:half])  # two writes: the file crosses between them
                os.write(fd, data[half:])
            finally:
                os.close(fd)
        self.both(op, path)

    @rule(path=paths, data=payloads)
    @logged
    def append(self, path: str, data: bytes) -> None:
        def op(root: Path) -> None:
            fd = os.open(root / path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        self.both(op, path)

    @rule(path=paths, size=st.integers(min_value=0, max_value=6000))
    @logged
    def truncate(self, path: str, size: int) -> None:
        self.both(lambda root: os.truncate(root / path, size), path)

    @rule(src=paths, dst=paths)
    @logged
    def rename(self, src: str, dst: str) -> None:
        self.both(lambda root: os.rename(root / src, root / dst))

    @rule(path=paths)
    @logged
    def unlink(self, path: str) -> None:
        self.both(lambda root: os.unlink(root / path))

    @rule(path=paths)
    @logged
    def mkdir(self, path: str) -> None:
        self.both(lambda root: os.mkdir(root / path))

    @rule(path=paths)
    @logged
    def rmdir(self, path: str) -> None:
        self.both(lambda root: os.rmdir(root / path))

    @rule(to=paths, path=paths)
    @logged
    def symlink(self, to: str, path: str) -> None:
        depth = path.count("/")
        self.both(lambda root: os.symlink("../" * depth + to, root / path))

    @rule(src=paths, dst=paths)
    @logged
    def link(self, src: str, dst: str) -> None:
        # A file past the threshold that is not a stub yet is streaming to the bucket (a
        # handle is still open on it): refused, as for a stub.
        streaming = self.warm_root is not None and _size(self.r / src) >= COLD_THRESHOLD
        self.both(lambda root: os.link(root / src, root / dst, follow_symlinks=False), src,
                  refusable=streaming)

    @rule(src=paths, dst=paths)
    @logged
    def exchange(self, src: str, dst: str) -> None:
        self.both(lambda root: renameat2(root / src, root / dst, RENAME_EXCHANGE))

    @rule(path=paths, mode=modes)
    @logged
    def chmod(self, path: str, mode: int) -> None:
        self.both(lambda root: os.chmod(root / path, mode))

    @rule(target=handles, path=paths)
    @logged
    def open_handle(self, path: str) -> tuple[int, int] | None:
        cold = self.is_cold(path)
        got = outcome(lambda: os.open(self.m / path, os.O_RDWR))
        cold = cold or self.is_cold(path)  # (see ``both``)
        if cold and got in REFUSED_FOR_COLD:
            return None  # cold files cannot be opened for writing in place
        return self.kept(got, outcome(lambda: os.open(self.r / path, os.O_RDWR)))

    def kept(self, got: tuple[str, Any], ref: tuple[str, Any]) -> tuple[int, int] | None:
        """A handle pair if both opens succeeded; else both outcomes must agree."""
        if ref[0] != "ok" or got[0] != "ok":
            for kind, fd in (ref, got):
                if kind == "ok":
                    os.close(fd)
            assert got == ref, f"mount gave {got}, reference gave {ref}"
            return None
        self.open_fds += [ref[1], got[1]]
        return (ref[1], got[1])

    @rule(handle=handles, data=payloads, offset=offsets)
    @logged
    def write_handle(self, handle: tuple[int, int] | None, data: bytes, offset: int) -> None:
        if handle is None or handle[0] not in self.open_fds:
            return
        ref_fd, got_fd = handle
        assert os.pwrite(got_fd, data, offset) == os.pwrite(ref_fd, data, offset)
        size = os.fstat(ref_fd).st_size
        assert os.fstat(got_fd).st_size == size
        assert os.pread(got_fd, size + 10, 0) == os.pread(ref_fd, size + 10, 0)

    @rule(handle=handles)
    @logged
    def fsync_handle(self, handle: tuple[int, int] | None) -> None:
        if handle is None or handle[0] not in self.open_fds:
            return
        ref_fd, got_fd = handle
        assert outcome(lambda: os.fsync(got_fd)) == outcome(lambda: os.fsync(ref_fd))

    @rule(handle=handles, size=st.integers(min_value=0, max_value=6000))
    @logged
    def truncate_handle(self, handle: tuple[int, int] | None, size: int) -> None:
        if handle is None or handle[0] not in self.open_fds:
            return
        ref_fd, got_fd = handle
        assert outcome(lambda: os.ftruncate(got_fd, size)) == outcome(
            lambda: os.ftruncate(ref_fd, size))
        assert os.pread(got_fd, size + 10, 0) == os.pread(ref_fd, size + 10, 0)

    @rule(target=readers, path=paths)
    @logged
    def open_reader(self, path: str) -> tuple[int, int] | None:
        return self.kept(outcome(lambda: os.open(self.m / path, os.O_RDONLY)),
                         outcome(lambda: os.open(self.r / path, os.O_RDONLY)))

    def read_both(self, handle: tuple[int, int] | None) -> None:
        """Read through a handle kept open while other steps changed, published, moved or
        unlinked its file: it must read what the same handle reads on the reference."""
        if handle is None or handle[0] not in self.open_fds:
            return
        ref_fd, got_fd = handle
        ref_st = os.fstat(ref_fd)
        size = ref_st.st_size if stat.S_ISREG(ref_st.st_mode) else 0
        if stat.S_ISREG(ref_st.st_mode):
            os.posix_fadvise(got_fd, 0, 0, os.POSIX_FADV_DONTNEED)  # so tierfs answers
            got_st = os.fstat(got_fd)
            assert (got_st.st_size, stat.S_IMODE(got_st.st_mode), got_st.st_nlink) == \
                (size, stat.S_IMODE(ref_st.st_mode), ref_st.st_nlink), \
                "after:\n" + "\n".join(self.steps)
        got = outcome(lambda: os.pread(got_fd, size + 10, 0))
        assert got == outcome(lambda: os.pread(ref_fd, size + 10, 0)), \
            "after:\n" + "\n".join(self.steps)

    @rule(handle=readers)
    @logged
    def read_reader(self, handle: tuple[int, int] | None) -> None:
        self.read_both(handle)

    @rule(handle=handles)
    @logged
    def read_handle(self, handle: tuple[int, int] | None) -> None:
        self.read_both(handle)

    def close_both(self, handle: tuple[int, int] | None) -> None:
        if handle is None or handle[0] not in self.open_fds:
            return
        for fd in handle:
            self.open_fds.remove(fd)
            os.close(fd)

    @rule(handle=consumes(readers))
    @logged
    def close_reader(self, handle: tuple[int, int] | None) -> None:
        self.close_both(handle)

    @rule(handle=consumes(handles))
    @logged
    def close_handle(self, handle: tuple[int, int] | None) -> None:
        self.close_both(handle)

    @invariant()
    def trees_match(self) -> None:
        try:
            mounted = snapshot(self.m)
        except OSError as e:
            raise AssertionError(f"{e!r} after:\n" + "\n".join(self.steps)) from e
        assert mounted == snapshot(self.r), "after:\n" + "\n".join(self.steps)

    def settled(self) -> None:
        """Every handle closed: the warm tier holds the reference tree (in write-back mode,
        once the uploads started by the closes are done)."""
        assert self.settle_root is not None
        warm, want = self.settle_root / self.m.name, snapshot(self.r)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while (found := settling_snapshot(warm)) != want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found == want, ("the warm tier does not hold what was written through the "
                               "mount, after:\n" + "\n".join(self.steps))

    def teardown(self) -> None:
        for fd in self.open_fds:
            os.close(fd)
        self.open_fds = []
        try:
            if self.settle_root is not None:
                self.settled()
        finally:
            shutil.rmtree(self.m, ignore_errors=True)
            shutil.rmtree(self.r, ignore_errors=True)


def machine_for(mount: Mount, ref: Path, cold: bool = False) -> type[TreeMachine]:
    return type("Machine", (TreeMachine,), {"mount_root": mount.path, "ref_root": ref,
                                             "warm_root": mount.warm if cold else None,
                                             "settle_root": None if cold else mount.warm})


def run_machine(machine: type[TreeMachine]) -> None:
    run_state_machine_as_test(
        machine, settings=settings(max_examples=int(os.environ.get("TIERFS_MODEL_EXAMPLES", "40")),
                                   stateful_step_count=40, deadline=None,
                                   suppress_health_check=list(HealthCheck)))


def tiny_threshold(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, name: str,
                   *extra: str) -> Mount:
    """A mount whose files over 4 KiB go to bucket ``name`` on moto's S3 server."""
    s3_server.client().create_bucket(Bucket=name)
    return make_mount(tmp_path_factory.mktemp(name), "--bucket", f"s3://{name}/t",
                      "--endpoint-url", s3_server.endpoint, "--addressing-style", "path",
                      "--large-file-threshold", f"{COLD_THRESHOLD}B", *extra)


@pytest.fixture(scope="module")
def tiny_threshold_mount(tmp_path_factory: pytest.TempPathFactory,
                         s3_server: S3Server) -> Iterator[Mount]:
    """Files cross into the bucket mid-run."""
    with running(tiny_threshold(tmp_path_factory, s3_server, "tierfs-model")) as m:
        yield m


def test_mount_matches_a_plain_directory_while_files_cross_tiers(
        tiny_threshold_mount: Mount, tmp_path: Path) -> None:
    run_machine(machine_for(tiny_threshold_mount, tmp_path, cold=True))
    assert any(True for _ in tiny_threshold_mount.log().splitlines() if "streaming" in _), \
        "no file crossed into the bucket: the test did not test tiering\n" + tiny_threshold_mount.log()[-3000:]


def test_mount_matches_a_plain_directory(shared_mount: Mount, tmp_path: Path) -> None:
    run_machine(machine_for(shared_mount, tmp_path))


@pytest.fixture(scope="module")
def writeback_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """close returns once the data is staged; publishing runs in the background, racing the
    namespace operations that follow."""
    with running(make_mount(tmp_path_factory.mktemp("writeback"), "--durability",
                            "writeback")) as m:
        yield m


def test_mount_matches_a_plain_directory_in_write_back_mode(writeback_mount: Mount,
                                                            tmp_path: Path) -> None:
    run_machine(machine_for(writeback_mount, tmp_path))


@pytest.fixture(scope="module")
def tiny_threshold_writeback_mount(tmp_path_factory: pytest.TempPathFactory,
                                   s3_server: S3Server) -> Iterator[Mount]:
    """Files cross into the bucket, and uploads complete in the background after close,
    racing the renames, truncates and rewrites that follow."""
    with running(tiny_threshold(tmp_path_factory, s3_server, "tierfs-model-wb",
                                "--durability", "writeback")) as m:
        yield m


def test_mount_matches_a_plain_directory_while_files_cross_tiers_in_write_back_mode(
        tiny_threshold_writeback_mount: Mount, tmp_path: Path) -> None:
    run_machine(machine_for(tiny_threshold_writeback_mount, tmp_path, cold=True))
    assert "streaming" in tiny_threshold_writeback_mount.log(), \
        "no file crossed into the bucket: the test did not test tiering"


@pytest.fixture(scope="module")
def ahead_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """Files are copied to the warm tier every 4 KiB while written (docs/semantics.md): the
    warm tier has a file system of its own, as an NFS tier would, so publishing copies (the
    other machines run with the tiers on one file system, where staging files are renamed)."""
    with running(make_mount(tmp_path_factory.mktemp("ahead"), "--publish-ahead", "4KiB",
                            "--log-level", "debug", warm_apart=True)) as m:
        yield m


def test_mount_matches_a_plain_directory_while_publishing_ahead(ahead_mount: Mount,
                                                                  tmp_path: Path) -> None:
    run_machine(machine_for(ahead_mount, tmp_path))
    assert "ahead to the warm tier" in ahead_mount.log(), \
        "no file was copied ahead: the test did not test publishing ahead"


@pytest.fixture(scope="module")
def warm_cached_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """As on NFS: the warm tier is a file system of its own and reads of warm files go
    through the hot tier's block cache."""
    with running(make_mount(tmp_path_factory.mktemp("warmcached"), "--cache-warm", "true",
                            "--block-size", "64KiB", warm_apart=True)) as m:
        yield m


def test_mount_matches_a_plain_directory_with_warm_blocks_cached(warm_cached_mount: Mount,
                                                                 tmp_path: Path) -> None:
    run_machine(machine_for(warm_cached_mount, tmp_path))
    assert any(warm_cached_mount.hot.joinpath("cache").rglob("*")), \
        "no warm block was cached: the test did not test the cache"


# -- regression tests: shrunk failures of the machines above, kept by name ---------------------


@pytest.fixture
def cold_machine(tiny_threshold_mount: Mount, tmp_path: Path) -> Iterator[TreeMachine]:
    m = machine_for(tiny_threshold_mount, tmp_path, cold=True)()
    yield m
    m.teardown()


def test_regression_append_to_cold_file_through_a_symlink(cold_machine: TreeMachine) -> None:
    """Writing through a user's symlink into a cold file is refused as for the file itself."""
    cold_machine.symlink("a", "b")
    cold_machine.write_at("a", b"\0\0", 4094, 0o600)  # b reaches the threshold: cold
    cold_machine.trees_match()
    cold_machine.append("a", b"")
    cold_machine.trees_match()


@pytest.fixture
def machine(shared_mount: Mount, tmp_path: Path) -> Iterator[TreeMachine]:
    m = machine_for(shared_mount, tmp_path)()
    yield m
    m.teardown()


def test_regression_rename_open_file_then_write_through_handle(machine: TreeMachine) -> None:
    machine.write_at("a", b"xyz", 2, 0o644)
    h = machine.open_handle("a")
    machine.rename("a", "b")
    machine.write_handle(h, b"Q", 0)
    machine.trees_match()
    machine.close_handle(h)
    machine.trees_match()


def test_regression_unlink_open_file_then_recreate_name(machine: TreeMachine) -> None:
    machine.write_at("a", b"old", 0, 0o644)
    h = machine.open_handle("a")
    machine.unlink("a")
    machine.write_at("a", b"new", 0, 0o600)
    machine.write_handle(h, b"OLDER", 0)
    machine.trees_match()
    machine.close_handle(h)
    machine.trees_match()


def test_regression_hard_link_written_through_other_name(machine: TreeMachine) -> None:
    machine.write_at("a", b"one", 0, 0o644)
    machine.link("a", "b")
    machine.append("b", b"two")
    machine.truncate("a", 4)
    machine.trees_match()


def test_regression_cold_file_rewritten_past_the_threshold_keeps_its_mode(
        cold_machine: TreeMachine) -> None:
    cold_machine.write_at("b", b"\0" * 4, 4092, 0o600)  # 4 KiB: into the bucket
    cold_machine.trees_match()
    # Truncated and written past the threshold again: the new object and stub took the mode of
    # the old stub's symlink (0777).
    cold_machine.write_large("b", b"\0" * 4200, 0o600)
    cold_machine.trees_match()


def test_regression_chmod_of_a_cold_file_being_rewritten(cold_machine: TreeMachine) -> None:
    cold_machine.write_large("a", b"x" * 5000, 0o644)
    assert cold_machine.is_cold("a")

    def rewrite(root: Path) -> None:
        fd = os.open(root / "a", os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b"y" * 100)
            os.chmod(root / "a", 0o640)  # chmod followed the stub's symlink: ENOENT
            os.write(fd, b"z" * 5000)
        finally:
            os.close(fd)

    cold_machine.both(rewrite, "a")
    cold_machine.trees_match()



@pytest.fixture
def cold_writeback_machine(tiny_threshold_writeback_mount: Mount, tmp_path: Path
                           ) -> Iterator[TreeMachine]:
    m = machine_for(tiny_threshold_writeback_mount, tmp_path, cold=True)()
    yield m
    m.teardown()


@pytest.mark.parametrize("which", ["cold_machine", "cold_writeback_machine"])
def test_regression_reader_of_a_cold_file_unlinked_under_it(
        which: str, request: pytest.FixtureRequest) -> None:
    machine: TreeMachine = request.getfixturevalue(which)
    machine.write_large("a", random.Random(0).randbytes(4200), 0o600)
    machine.write_large("b", random.Random(1).randbytes(5000), 0o644)
    machine.write_at("c", b"warm", 0, 0o644)
    machine.trees_match()
    readers = [machine.open_reader("a"), machine.open_reader("b")]
    machine.unlink("a")  # fstat through the reader said ENOENT
    machine.rename("c", "b")  # the same, for a cold file renamed over
    machine.trees_match()
    for reader in readers:
        machine.read_reader(reader)
        machine.close_reader(reader)
    machine.trees_match()


def test_regression_file_going_cold_after_losing_a_hard_link_keeps_its_mode(
        cold_machine: TreeMachine) -> None:
    cold_machine.create_truncating("b", b"", 0o600)
    cold_machine.link("b", "e")
    reader = cold_machine.open_reader("b")  # keeps the open-file state across the unlink
    cold_machine.unlink("e")  # (the state forgot its attributes: the link count changed)
    # The object and stub took mode 0644, a default, instead of the file's 0600.
    cold_machine.write_large("b", random.Random(0).randbytes(4200), 0o600)
    cold_machine.trees_match()
    cold_machine.close_reader(reader)


def test_regression_hard_linked_file_renamed_under_a_reader_stays_warm(
        cold_machine: TreeMachine) -> None:
    cold_machine.create_truncating("b", b"", 0o600)
    cold_machine.link("b", "e")
    reader = cold_machine.open_reader("b")
    cold_machine.rename("b", "a")
    # Past the threshold, but hard-linked: a stub under one name would leave the other name
    # with the old content.
    cold_machine.write_large("a", random.Random(0).randbytes(4200), 0o600)
    cold_machine.trees_match()
    cold_machine.close_reader(reader)
