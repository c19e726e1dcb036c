"""The hot tier: node-local disk holding staging files, the LMDB index, logs and run files.

Nothing here is named after a user's path: staging files have random names, so the hot tier has
no PATH_MAX problem and leaks no names. One mount owns a hot directory at a time (a lock file).
"""

from __future__ import annotations

import errno
import fcntl
import os
import uuid
from pathlib import Path

from tierfs.errors import MountError
from tierfs.tiers.base import Tier


class HotTier(Tier):
    name = "hot"

    def __init__(self, root: Path, threads: int) -> None:
        super().__init__(threads)
        self.root = root
        self.staging_dir = root / "staging"
        self.index_dir = root / "index"
        #: Staged data that recovery could not trust (see vfs/recovery.py), kept for a person.
        self.lost_dir = root / "lost+found"
        self.log_file = root / "tierfs.log"
        self._lock_fd: int | None = None

    def prepare(self) -> None:
        for d in (self.staging_dir, self.index_dir):
            d.mkdir(mode=0o700, exist_ok=True)

    def acquire(self, mountpoint: str) -> None:
        """Take the hot directory for this mount; a second mount on it would share the index."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            raise MountError(f"hot tier {self.root} is in use by another mount ({holder})") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} mountpoint {mountpoint}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def new_staging(self) -> tuple[str, int]:
        """A fresh, empty staging file: its id and a read-write fd."""
        sid = uuid.uuid4().hex
        fd = os.open(self.staging_dir / sid, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600)
        return sid, fd

    def new_staging_with(self, data: bytes, offset: int) -> tuple[str, int, int | None]:
        """A fresh staging file with a first write done in the same call (a new file's first
        write then costs one trip to a thread, not two): its id, fd and the bytes written,
        None when the disk is full (the caller makes room and writes again)."""
        sid, fd = self.new_staging()
        try:
            return sid, fd, os.pwrite(fd, data, offset)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                os.close(fd)
                self.remove_staging(sid)
                raise
            return sid, fd, None

    def remove_staging(self, sid: str) -> None:
        try:
            os.unlink(self.staging_dir / sid)
        except FileNotFoundError:
            pass

    def set_aside(self, sid: str, note: bytes) -> Path:
        """Move a staging file out of the way, with a note of what it was; returns its path."""
        self.lost_dir.mkdir(mode=0o700, exist_ok=True)
        target = self.lost_dir / sid
        os.rename(self.staging_dir / sid, target)
        (self.lost_dir / f"{sid}.txt").write_bytes(note)
        return target

    def staged_ids(self) -> list[str]:
        return sorted(os.listdir(self.staging_dir))
