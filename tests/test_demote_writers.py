"""Writers on the warm tier, on this node but outside the mount, that a demotion's check of
the file's attributes cannot see: they win, as docs/semantics.md promises ("Demotion and
promotion"). A ``write(2)`` stamps the file's times before it copies its bytes, so one under
way when the demotion first looks at the file changes nothing the check sees afterwards; a
store through a writable shared mapping into a page already dirty stamps nothing; and a file
opened for writing during the upload may be written right after the swap, into the file the
stub replaced. A read lease (``write.warmswap.read_lease``) sees all three on this node."""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import S3Server, running
from s3proxy import FaultProxy
from test_demote import is_stub, local_mount
from test_durability import s3_mount
from tierfs.tiers.warm import WarmTier
from tierfs.write import warmswap

MIB = 1024 * 1024
PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
SYS_userfaultfd = 323  # x86_64
UFFD_API = 0xAA
UFFDIO_API = 0xC018AA3F
UFFDIO_REGISTER = 0xC020AA00
UFFDIO_COPY = 0xC028AA03
UFFDIO_REGISTER_MODE_MISSING = 1


def _ioctl(fd: int, request: int, buf: ctypes.Array) -> None:
    if _libc.ioctl(fd, request, ctypes.addressof(buf)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class HeldBuffer:
    """An anonymous buffer whose pages past ``ready`` bytes are missing: a write(2) from it
    stops at the first of them until ``fill`` supplies them."""

    def __init__(self, content: bytes, ready: int) -> None:
        self.content = content
        self.size = len(content)
        self.map = mmap.mmap(-1, self.size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.uffd = _libc.syscall(SYS_userfaultfd, os.O_CLOEXEC | os.O_NONBLOCK)
        if self.uffd < 0:
            pytest.skip("no userfaultfd")
        api = ctypes.create_string_buffer(struct.pack("QQQ", UFFD_API, 0, 0), 24)
        _ioctl(self.uffd, UFFDIO_API, api)
        reg = ctypes.create_string_buffer(
            struct.pack("QQQQ", self.addr, self.size, UFFDIO_REGISTER_MODE_MISSING, 0), 32)
        _ioctl(self.uffd, UFFDIO_REGISTER, reg)
        self._copy(0, ready)

    def _copy(self, start: int, end: int) -> None:
        src = ctypes.create_string_buffer(self.content[start:end], end - start)
        arg = ctypes.create_string_buffer(
            struct.pack("QQQQq", self.addr + start, ctypes.addressof(src), end - start, 0, 0),
            40)
        _ioctl(self.uffd, UFFDIO_COPY, arg)

    def wait_fault(self, timeout: float) -> int:
        """The address (offset in the buffer) a reader of it is stopped at."""
        ready, _, _ = select.select([self.uffd], [], [], timeout)
        assert ready, "the write never reached the missing pages"
        msg = os.read(self.uffd, 32)
        return struct.unpack_from("Q", msg, 16)[0] - self.addr

    def fill(self, start: int) -> None:
        self._copy(start, self.size)


def renaming(pids: list[int]) -> bool:
    """Whether a thread of the daemon is in renameat(2) or renameat2(2) now (x86_64)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                call = (task / "syscall").read_text().split()[0]
            except (OSError, IndexError):
                continue
            if call in ("264", "316"):
                return True
    return False


def demote(m_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tierfs", "demote", str(m_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_write_under_way_when_a_demotion_starts_wins(tmp_path: Path) -> None:
    """The writer's buffer is held half-faulted with userfaultfd, so its write(2) is under way
    at a known point (half copied) when the demotion opens the file; it goes on once the
    demotion has reached its swap or ended. Before the lease, the demotion uploaded the old
    bytes and its stub replaced the file the write went on into: half new, half old."""
    m = local_mount(tmp_path)
    size = 4 * MIB
    old, new = b"o" * size, b"N" * size
    target = m.warm / "table.bin"
    m.warm.mkdir(parents=True, exist_ok=True)
    target.write_bytes(old)
    with running(m):
        buf = HeldBuffer(new, ready=size // 2)
        fd = os.open(target, os.O_WRONLY)  # an overwrite in place (no O_TRUNC)
        written: list[int] = []
        writer = threading.Thread(target=lambda: written.append(os.pwrite(fd, buf.map, 0)))
        writer.start()
        stopped_at = buf.wait_fault(10)
        assert (size // 2) <= stopped_at < size
        command = demote(m.path / "table.bin")
        deadline = time.monotonic() + 30
        while command.poll() is None and not renaming(m.pids):
            assert time.monotonic() < deadline, "the demotion never reached its swap"
            time.sleep(0.01)
        buf.fill(stopped_at - stopped_at % PAGE)  # the writer goes on and finishes
        writer.join(30)
        os.close(fd)
        out, _ = command.communicate(timeout=60)
        assert written == [size]
        through = (m.path / "table.bin").read_bytes()
        assert not is_stub(target) and through == new, (
            f"demoted over a write under way ({out.strip()!r}): the mount reads "
            f"{through.count(b'N')} new and {through.count(b'o')} old bytes of {size}")
        assert "open for writing on this node" in out


def test_a_store_through_a_mapping_made_before_a_demotion_wins(tmp_path: Path) -> None:
    """A page dirtied through a writable shared mapping before the demotion: stores into it
    later stamp nothing. Before the lease, the demotion went ahead and the store was lost."""
    m = local_mount(tmp_path)
    old = os.urandom(2 * MIB)
    m.warm.mkdir(parents=True, exist_ok=True)
    target = m.warm / "db.bin"
    target.write_bytes(old)
    fd = os.open(target, os.O_RDWR)
    mapping = mmap.mmap(fd, len(old), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        mapping[0:4] = b"AAAA"
        with running(m):
            out, _ = demote(m.path / "db.bin").communicate(timeout=60)
            before = os.stat(target)
            mapping[0:4] = b"BBBB"  # into the dirty page: no attribute changes
            mapping.flush()
            assert (os.stat(target).st_mtime_ns, os.stat(target).st_ctime_ns) == (
                before.st_mtime_ns, before.st_ctime_ns), "(the store did stamp the times)"
            through = (m.path / "db.bin").read_bytes()
            assert not is_stub(target) and through == b"BBBB" + old[4:], (
                f"demoted under a writable mapping ({out.strip()!r}): the mount reads "
                f"{through[:4]!r}..., the writer stored b'BBBB'")
            assert "open for writing on this node" in out
    finally:
        mapping.close()
        os.close(fd)


def test_a_file_opened_for_writing_during_the_upload_keeps_what_is_written_after(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    """A writer opens the file while it is uploaded and writes once the demotion has ended.
    Before the lease at the swap, the stub went in (nothing had changed yet) and the write
    went into the file it replaced: lost."""
    m = s3_mount(tmp_path, proxy.endpoint, bucket)
    old = os.urandom(2 * MIB)
    m.warm.mkdir(parents=True, exist_ok=True)
    target = m.warm / "w.bin"
    target.write_bytes(old)
    with running(m):
        proxy.delay = 2.0
        proxy.fail("POST", "pass", 1)  # (create_multipart)
        proxy.fail("POST", "delay", 1)  # (complete_multipart: held while the writer opens)
        command = demote(m.path / "w.bin")
        deadline = time.monotonic() + 30
        while proxy.requests["POST"] < 2:
            assert time.monotonic() < deadline, "the upload never completed"
            time.sleep(0.01)
        fd = os.open(target, os.O_WRONLY)
        try:
            out, _ = command.communicate(timeout=60)
            os.pwrite(fd, b"WXYZ", 0)
        finally:
            os.close(fd)
        through = (m.path / "w.bin").read_bytes()
        assert not is_stub(target) and through == b"WXYZ" + old[4:], (
            f"demoted while open for writing ({out.strip()!r}): the mount reads "
            f"{through[:4]!r}..., the writer wrote b'WXYZ'")
        assert "changed while it was uploaded" in out


def test_an_open_for_writing_during_the_leased_swap_is_not_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer opens the file between the swap's check and its rename, with the lease held:
    its open waits for the lease, which is being broken. The swap must be given up (it went
    ahead, and the open then got the file the stub had replaced)."""
    signal.signal(signal.SIGIO, signal.SIG_IGN)  # (as the daemon's Demoter does)
    root = tmp_path / "warm"
    root.mkdir()
    target = root / "f"
    target.write_bytes(b"o" * 4096)
    warm = WarmTier(root, 1)
    f = warmswap.open_plain(warm, b"f")
    if warmswap.read_lease(f.fd) is None:
        pytest.skip("no leases on this file system")
    fcntl.fcntl(f.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    assert not f.written_here

    opened: dict[str, float] = {}
    lease_seen: list[int] = []
    real = warmswap.new_symlink

    def writer() -> None:
        fd = os.open(target, os.O_WRONLY)  # waits for the demotion's lease
        opened["at"] = time.monotonic()
        os.pwrite(fd, b"WXYZ", 0)
        os.close(fd)

    thread = threading.Thread(target=writer)

    def slow_symlink(*args: object) -> os.stat_result:
        # Between the check and the rename, with the lease held: a writer opens the file.
        thread.start()
        time.sleep(0.5)
        lease_seen.append(fcntl.fcntl(f.fd, fcntl.F_GETLEASE))
        return real(*args)

    monkeypatch.setattr(warmswap, "new_symlink", slow_symlink)
    new = warmswap.swap_in_stub(warm, f, b"stub-target")
    swapped_at = time.monotonic()
    thread.join(10)
    f.close()
    warm.close()
    assert "at" in opened
    assert opened["at"] >= swapped_at - 0.01, "(the open did not wait for the lease)"
    assert lease_seen == [fcntl.F_UNLCK], "(the lease was not being broken)"
    assert new is None, (
        "the stub replaced the file although a writer had opened it while the lease was held "
        f"(the lease was broken: F_GETLEASE={lease_seen}); the writer's open waited, then "
        f"wrote into the replaced file: the path is now "
        f"{'a symlink' if target.is_symlink() else 'a file'}, the writer's b'WXYZ' is lost")
