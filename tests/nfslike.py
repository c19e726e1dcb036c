"""An NFS-like network file system on 127.0.0.1, for tests and benchmarks of a warm tier.

sshfs mounts a directory served by an OpenSSH server of our own (its own port, host key,
client key, known-hosts file and sshd_config under a private directory; nothing of the
system's ssh set-up is read or changed). sshd's SFTP subsystem is this module run as a relay
in front of the real sftp-server: it parses the SFTP packets both ways, holds every reply until
``latency`` after its request arrived (a round trip, as to a managed NFS server), counts the
requests, records the most ever in flight at once across all connections (sshfs opens up to
``max_conns``), and holds every reply while a control file says the server is stalled.

sshfs passes no extended attributes through (setxattr fails with EOPNOTSUPP), caches
attributes and names for ``cache_timeout`` seconds as NFS does (acregmin), and makes a request
per operation otherwise.

    python tests/nfslike.py relay --stats FILE --control FILE --latency SECONDS
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SSHD = "/usr/sbin/sshd"
#: SFTP packet types without a request id (the version handshake).
_INIT, _VERSION = 1, 2
_EXTENDED = 200
#: requests; in flight now and most at once; the same without CLOSEs (see SharedStats)
_STATS = struct.Struct("<qqqqq")
#: What the kernel's asynchronous release of a file makes sshfs send, after close() has
#: returned and with nobody waiting for the reply: the handle's CLOSE, and the REMOVE of a
#: file libfuse hid (as .fuse_hidden...) because it was renamed over or unlinked while open.
#: Also left out: READDIR (12), which sshfs keeps several of in flight for one listing
#: (its asynchronous readdir), within one blocking call of its caller.
_RELEASE_TYPES = {4, 13, 12}


# -- the relay (runs as sshd's SFTP subsystem, one per connection) ----------------------------


class SharedStats:
    """Counters in a small file shared by every relay of one server (one per connection),
    updated under an exclusive lock, so the most in flight is across all connections. Also
    counted without CLOSEs, REMOVEs and READDIRs (``_RELEASE_TYPES``): one request or two
    per blocking call of a caller, where nothing is unlinked through the mount."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        #: flock excludes other processes only: both of a relay's threads share its lock.
        self.lock = threading.Lock()

    def _update(self, requests: int, in_flight: int, close: bool) -> None:
        with self.lock:
            self._update_locked(requests, in_flight, close)

    def _update_locked(self, requests: int, in_flight: int, close: bool) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(self.fd, _STATS.size, 0)
            total, now, most, now_awaited, most_awaited = (
                _STATS.unpack(raw) if len(raw) == _STATS.size else (0, 0, 0, 0, 0))
            now += in_flight
            if not close:
                now_awaited += in_flight
            os.pwrite(self.fd, _STATS.pack(total + requests, now, max(most, now), now_awaited,
                                           max(most_awaited, now_awaited)), 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def arrived(self, kind: int) -> None:
        self._update(1, 1, kind in _RELEASE_TYPES)

    def answered(self, kind: int) -> None:
        self._update(0, -1, kind in _RELEASE_TYPES)


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _packets(fd: int) -> Iterator[bytes]:
    """Whole SFTP packets (length prefix included) read from ``fd`` until it closes."""
    while True:
        head = _read_exact(fd, 4)
        if head is None:
            return
        body = _read_exact(fd, struct.unpack(">I", head)[0])
        if body is None:
            return
        yield head + body


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _held_until(control: Path) -> float:
    """The time (time.time()) until which replies are held, from the control file."""
    try:
        return float(control.read_text() or 0)
    except (OSError, ValueError):
        return 0.0


def relay(stats_path: Path, control: Path, latency: float, trace: Path | None = None) -> int:
    """Pipe stdin/stdout (sshd's channel) to sftp-server, delaying and counting; with
    ``trace``, append a line per request and reply (time, connection, type, id) there."""
    server = subprocess.Popen([SFTP_SERVER, "-u", "000"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, bufsize=0)
    assert server.stdin is not None and server.stdout is not None
    to_server, from_server = server.stdin.fileno(), server.stdout.fileno()
    stats = SharedStats(stats_path)
    arrived: dict[bytes, tuple[float, int]] = {}
    lock = threading.Lock()
    log = open(trace, "a", buffering=1) if trace is not None else None

    def note(sign: str, packet: bytes) -> None:
        if log is not None:
            with lock:
                what = str(packet[4])
                if sign == "+" and packet[4] == _EXTENDED:  # its name
                    what += ":" + packet[13:13 + struct.unpack(">I", packet[9:13])[0]].decode()
                log.write(f"{time.monotonic():.6f} {os.getpid()} {sign} {what} "
                          f"{packet[5:9].hex()}\n")

    def requests() -> None:
        for packet in _packets(0):
            if packet[4] != _INIT:
                with lock:
                    arrived[packet[5:9]] = (time.monotonic(), packet[4])
                stats.arrived(packet[4])
                note("+", packet)
            _write_all(to_server, packet)
        server.stdin.close()  # type: ignore[union-attr]

    upstream = threading.Thread(target=requests, daemon=True)
    upstream.start()
    for packet in _packets(from_server):
        if packet[4] != _VERSION:
            with lock:
                since, kind = arrived.pop(packet[5:9], (time.monotonic(), 0))
            wait = since + latency - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            while (held := _held_until(control) - time.time()) > 0:
                time.sleep(min(held, 0.05))
            # Counted as answered before the client can see the reply (and send more).
            stats.answered(kind)
            note("-", packet)
            _write_all(1, packet)
        else:
            _write_all(1, packet)
    server.wait()
    return 0


# -- the server and the mount ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_tools() -> list[str]:
    """What this module needs and the machine lacks (scripts/install installs them)."""
    return [tool for tool in ("sshfs", SSHD, SFTP_SERVER, "ssh-keygen", "fusermount3")
            if shutil.which(tool) is None and not os.access(tool, os.X_OK)]


@dataclass
class NfsLike:
    """The server's files (``export``), the sshfs mount of them (``path``), and its controls."""

    base: Path
    latency: float = 0.001
    max_conns: int = 1
    cache_timeout: float = 3.0
    #: More sshfs options (sshfs_sync, no_readahead, ...).
    options: list[str] = field(default_factory=list)
    #: Log every request and reply to ``base/trace`` (to see what was in flight).
    trace: bool = False
    port: int = 0
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def export(self) -> Path:
        return self.base / "export"

    @property
    def path(self) -> Path:
        return self.base / "mnt"

    @property
    def stats_file(self) -> Path:
        return self.base / "stats"

    @property
    def control(self) -> Path:
        return self.base / "hold-until"

    def start(self) -> None:
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)}: scripts/install installs them")
        for d in (self.base, self.export, self.path):
            d.mkdir(parents=True, exist_ok=True)
        keys = self.base / "ssh"
        keys.mkdir(mode=0o700, exist_ok=True)
        for name in ("host", "client"):
            if not (keys / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                                "-f", str(keys / name)], check=True)
        shutil.copy(keys / "client.pub", keys / "authorized_keys")
        self.stats_file.write_bytes(_STATS.pack(0, 0, 0, 0, 0))
        self.control.write_text("0")
        self.port = _free_port()
        (keys / "known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {(keys / 'host.pub').read_text().split()[0]} "
            f"{(keys / 'host.pub').read_text().split()[1]}\n")
        relay_cmd = (f"{sys.executable} {Path(__file__).resolve()} relay --stats "
                     f"{self.stats_file} --control {self.control} --latency {self.latency}"
                     + (f" --trace {self.base / 'trace'}" if self.trace else ""))
        (keys / "sshd_config").write_text("\n".join([
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {keys / 'host'}",
            f"PidFile {self.base / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "MaxStartups 64",
            "MaxSessions 64",
            "LogLevel ERROR",
            f"Subsystem sftp {relay_cmd}",
            ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(keys / "sshd_config")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.base / "sshd.log", "wb"))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.sshd.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("sshd did not start:\n"
                                       + (self.base / "sshd.log").read_text()) from None
                time.sleep(0.05)
        t = str(self.cache_timeout)
        opts = [f"IdentityFile={keys / 'client'}", f"UserKnownHostsFile={keys / 'known_hosts'}",
                "StrictHostKeyChecking=yes", "BatchMode=yes", "IdentitiesOnly=yes",
                "Compression=no", "ControlMaster=no", f"max_conns={self.max_conns}",
                "allow_other", "default_permissions", "no_contain_symlinks", "noforget",
                f"dcache_timeout={t}", f"attr_timeout={t}", f"entry_timeout={t}",
                *self.options]
        result = subprocess.run(["sshfs", f"root@127.0.0.1:{self.export}", str(self.path),
                                 "-p", str(self.port), "-F", "/dev/null", "-o", ",".join(opts)],
                                capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0 or not os.path.ismount(self.path):
            self.stop()
            raise RuntimeError(f"sshfs failed: {result.stderr}\n"
                               + (self.base / "sshd.log").read_text())
        self._connect_all()

    def _connect_all(self) -> None:
        """Make sshfs open all its connections now, as an NFS client given ``nconnect``
        does at mount. sshfs opens one when a file is opened while the others hold files,
        and that open waits for the ssh handshake (about a second here): a cost of this
        stand-in, not of NFS, which fell on whatever a test or bench did first with two files
        open. So ``max_conns`` files are held open at once, each on its own connection, in
        a directory made for it at the server and removed after."""
        probe = self.export / ".nfslike-connect"
        probe.mkdir()
        fds: list[int] = []
        try:
            for i in range(self.max_conns):
                (probe / str(i)).write_bytes(b"")
                fds.append(os.open(self.path / probe.name / str(i), os.O_RDONLY))
        finally:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(probe)

    def connections(self) -> int:
        """The relays running, one per SFTP connection sshfs has open."""
        needle = str(self.stats_file).encode()
        count = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                args = cmdline.split(b"\0")
                count += "relay" in [a.decode(errors="replace") for a in args] \
                    and needle in args
        return count

    def stop(self) -> None:
        """Unmount (lazily if busy) and stop the server by its pid; safe to call twice."""
        if os.path.ismount(self.path):
            if subprocess.run(["fusermount3", "-u", str(self.path)],
                              capture_output=True).returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        self.control.unlink(missing_ok=True)  # nothing stays held
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.send_signal(signal.SIGTERM)
            try:
                self.sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()

    # -- measurements and faults ----------------------------------------------------------

    def stats(self) -> tuple[int, int, int, int, int]:
        """(requests answered or pending, in flight now, most in flight at once, and the
        same two without CLOSEs and REMOVEs: see SharedStats)."""
        raw = self.stats_file.read_bytes()
        return _STATS.unpack(raw[:_STATS.size])

    def reset_stats(self) -> None:
        """Count afresh: the most in flight starts from what is in flight now."""
        s = SharedStats(self.stats_file)
        fcntl.flock(s.fd, fcntl.LOCK_EX)
        try:
            _, now, _, awaited, _ = _STATS.unpack(os.pread(s.fd, _STATS.size, 0))
            os.pwrite(s.fd, _STATS.pack(0, now, now, awaited, awaited), 0)
        finally:
            fcntl.flock(s.fd, fcntl.LOCK_UN)
            os.close(s.fd)

    def stall(self, seconds: float) -> None:
        """Hold every reply for ``seconds`` from now (requests still reach the server)."""
        self.control.write_text(repr(time.time() + seconds))

    def resume(self) -> None:
        self.control.write_text("0")


@contextmanager
def nfslike(base: Path, **options: object) -> Iterator[NfsLike]:
    """A started NfsLike under ``base``, stopped after whatever happened."""
    server = NfsLike(base, **options)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--stats", type=Path, required=True)
    r.add_argument("--control", type=Path, required=True)
    r.add_argument("--latency", type=float, default=0.001)
    r.add_argument("--trace", type=Path)
    args = parser.parse_args(argv)
    return relay(args.stats, args.control, args.latency, args.trace)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
