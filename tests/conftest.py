"""Fixtures that mount tierfs for real: the CLI starts a daemon, teardown unmounts lazily and
stops the daemon by its pid, whatever the test did."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nfslike import NfsLike
from s3proxy import FaultProxy

from tierfs import mounting


def tierfs(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the tierfs command line as a user would (this interpreter, this checkout)."""
    result = subprocess.run([sys.executable, "-m", "tierfs", *args], capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"tierfs {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result


@dataclass
class Mount:
    path: Path
    hot: Path
    warm: Path
    extra: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    #: File systems mounted for this mount (unmounted by force_cleanup).
    own_fs: list[Path] = field(default_factory=list)
    #: Named warm roots (NAME to directory); none: ``warm`` is the mount's top level.
    roots: dict[str, Path] = field(default_factory=dict)
    #: The NFS-like server the warm tier is mounted from (stopped by force_cleanup).
    nfs: NfsLike | None = None

    def start(self) -> None:
        if self.nfs is not None and self.nfs.sshd is None:
            self.nfs.start()
        warm = [a for name, path in self.roots.items() for a in ("--warm", f"{name}={path}")]
        tierfs("mount", str(self.path), "--hot", str(self.hot),
               *(warm or ["--warm", str(self.warm)]), *self.extra)
        assert os.path.ismount(self.path)
        self.pids = mounting.daemon_pids(str(self.path))
        assert self.pids, "no daemon process found for the mount"

    def stop(self) -> None:
        """Clean unmount through the CLI (publishes, waits for the daemon)."""
        tierfs("unmount", str(self.path))
        assert not os.path.ismount(self.path)

    def restart(self) -> None:
        self.stop()
        self.start()

    def force_cleanup(self) -> None:
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        for pid in self.pids + mounting.daemon_pids(str(self.path)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            if not wait_for_exit(pid, 10):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for path in self.own_fs:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        if self.nfs is not None:
            self.nfs.stop()

    def log(self) -> str:
        log = self.hot / "tierfs.log"
        return log.read_text() if log.exists() else ""


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` is gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@contextmanager
def running(m: Mount) -> Iterator[Mount]:
    """Mount for the duration; always clean up, and fail on any traceback in the log."""
    try:
        m.start()  # (a mount that fails to start still leaves file systems to clean up)
        yield m
    finally:
        m.force_cleanup()
    assert "Traceback" not in m.log(), m.log()


def make_mount(base: Path, *extra: str, warm_apart: bool = False,
               warm_nfs: dict[str, object] | None = None) -> Mount:
    """A mount's directories under ``base``: hot and warm share its file system (staging
    files are renamed into place), or, with ``warm_apart``, the warm tier gets a file system
    of its own (a tmpfs), as an NFS tier would be: published files are copied. With
    ``warm_nfs`` (NfsLike's options), the warm tier is an sshfs mount from a server on
    127.0.0.1 (tests/nfslike.py), started with the mount: slow calls and no xattrs."""
    for d in ("mnt", "hot", "warm"):
        (base / d).mkdir(parents=True, exist_ok=True)
    m = Mount(base / "mnt", base / "hot", base / "warm", list(extra))
    if warm_nfs is not None:
        m.nfs = NfsLike(base / "nfs", **warm_nfs)  # type: ignore[arg-type]
        m.warm = m.nfs.path
    if warm_apart:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(m.warm)],
                       check=True)
        m.own_fs.append(m.warm)
    return m


def make_roots_mount(base: Path, names: tuple[str, ...], *extra: str,
                     bucket: str | None = None) -> Mount:
    """A mount of named warm roots, each a directory ``warm-NAME`` under ``base``, with the
    bucket given or a local-folder bucket of its own (``base/cold``)."""
    if bucket is None:
        bucket = f"file://{base / 'cold'}"
        (base / "cold").mkdir(parents=True, exist_ok=True)
    m = make_mount(base, "--bucket", bucket, *extra)
    for name in names:
        m.roots[name] = base / f"warm-{name}"
        m.roots[name].mkdir(exist_ok=True)
    return m


def renameat2(src: Path, dst: Path, flags: int) -> None:
    """rename(2) with flags (RENAME_NOREPLACE, RENAME_EXCHANGE), which os.rename lacks."""
    at_fdcwd = -100
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mount]:
    with running(make_mount(tmp_path)) as m:
        yield m


@pytest.fixture
def roots_mount(tmp_path: Path) -> Iterator[Mount]:
    """Three named roots: cluster, user and shared."""
    with running(make_roots_mount(tmp_path, ("cluster", "user", "shared"))) as m:
        yield m


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One mount for many examples (hypothesis); each example works in a fresh directory."""
    with running(make_mount(tmp_path_factory.mktemp("shared"))) as m:
        yield m


@dataclass
class S3Server:
    endpoint: str
    pid: int

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in its own process on 127.0.0.1; tierfs reaches it over HTTP through
    boto3 exactly as it would reach AWS. Stopped by its pid at the end of the session."""
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    try:
        yield S3Server(endpoint, proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"tierfs-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A loopback proxy in front of the S3 server: counts requests, injects faults."""
    p = FaultProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    try:
        yield p
    finally:
        p.close()


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at ``path`` (a small hot tier that fills up), unmounted after."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed; .ci/run installs it")


@pytest.fixture
def ray_temp_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Ray temp directory of the test's own: a cluster started in the default one is
    recorded there as the machine's current cluster, which any ray.init() on this machine
    would then join. Short, as Ray's socket paths under it must be. Ray's default one is
    pointed there too (RAY_TMPDIR): ``cluster_utils`` records the address of its cluster in
    ``<default>/ray`` whatever the nodes' own, and fails where that folder does not exist."""
    import tempfile

    path = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.mkdir(os.path.join(path, "ray"))
    monkeypatch.setenv("RAY_TMPDIR", path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_uncached(path: Path) -> bytes:
    """Read a file through a new handle with its page cache dropped first, so every read
    reaches tierfs (its block cache, or the warm tier), as after ``echo 3 >
    /proc/sys/vm/drop_caches`` without dropping the whole machine's."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        out = bytearray()
        while chunk := os.read(fd, 1 << 20):
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)
