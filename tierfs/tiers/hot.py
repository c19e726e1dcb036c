"""The hot tier: node-local disk holding staging files, the LMDB index, logs and run files.

Nothing here is named after a user's path: staging files have random names, so the hot tier has
no PATH_MAX problem and leaks no names. One mount owns a hot directory at a time (a lock file).

The daemon may run as root, with umask 0: everything it makes here belongs to the mount's user
and is closed to others (folders 0700, files 0600), and it never follows a symlink where one of
its folders or files should be. Another user who could plant one would have the daemon write
its files, as root, wherever the link points.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import uuid
from pathlib import Path

from tierfs.errors import MountError
from tierfs.tiers.base import Tier

#: Files a mount could not publish when it stopped (written at its unmount, read by
#: ``tierfs unmount``): their data stays staged for the next mount.
UNPUBLISHED = "unpublished.json"

#: Writes into a staging file up to this size are made on the event loop, not in a worker
#: thread: the hot tier is a local disk (never NFS: ``tierfs mount`` refuses one), and a small
#: ``pwrite`` there only copies into the page cache, in less time than the trip to a worker
#: thread and back adds (``bench/handoff.py``: 128 KiB in about 30 microseconds, the trip 35
#: to 80 more; from 256 KiB on, the copy takes about as long as the trip or longer, 200
#: microseconds for 1 MiB). Larger writes, fsyncs and copies still go to the threads, since
#: they take long enough to stall every other request.
INLINE_WRITE = 128 * 1024

#: Modes of what tierfs makes on the hot tier.
FOLDER_MODE = 0o700
FILE_MODE = 0o600


def own_folder(path: Path, replace: bool = False) -> None:
    """Make ``path`` a folder of this user's, closed to others, without following a symlink.

    Something else in its place (a symlink, a file, another user's folder) is refused with an
    OSError that names it, or, with ``replace`` (a cache, which loses nothing), removed and
    made afresh; a symlink is removed, never followed. A looser mode is tightened.
    """
    for attempt in range(2):
        try:
            os.mkdir(path, FOLDER_MODE)
        except FileExistsError:
            pass
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            why = f"{path} is not a folder (a symlink or a file): tierfs does not follow it"
            if not replace or attempt:
                raise OSError(e.errno, why) from None
            os.unlink(path)
            continue
        try:
            st = os.fstat(fd)
            if st.st_uid == os.geteuid():
                if stat.S_IMODE(st.st_mode) != FOLDER_MODE:
                    os.fchmod(fd, FOLDER_MODE)
                return
        finally:
            os.close(fd)
        why = f"{path} belongs to user {st.st_uid}, not to the mount's user {os.geteuid()}"
        if not replace or attempt:
            raise OSError(errno.EPERM, why)
        shutil.rmtree(path)  # (rmtree follows no symlink inside)
    raise AssertionError("unreachable")


def create_own_file(path: Path, flags: int = os.O_WRONLY) -> int:
    """A new file at ``path``, mode 0600, opened with ``flags``; never through a symlink."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   FILE_MODE)


def open_own_file(path: Path, flags: int) -> int:
    """``path`` opened with ``flags``, made (mode 0600) if missing; refused (OSError naming it)
    if it is a symlink, not a plain file, another user's or linked elsewhere too, and its mode
    tightened to 0600 if looser."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise OSError(e.errno, f"{path} is a symlink: tierfs does not follow it") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"{path} is not a plain file of the mount's user "
                          f"{os.geteuid()} (owner {st.st_uid}, {st.st_nlink} links)")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_root(root: Path) -> None:
    """The hot tier's own folder must be closed to other users' writes: one who could write
    in it could move tierfs's folders away and plant symlinks in their place. Two kinds pass:
    one writable by its group (where each user has a group of their own, the usual umask 002
    makes every folder so), and one writable by all with the sticky bit (a tmpfs's root):
    there nobody can move another's entries, and what they plant before tierfs makes its own
    is refused (``own_folder``, ``open_own_file``). Raises MountError."""
    try:
        st = os.stat(root)
    except OSError as e:
        raise MountError(f"hot tier {root}: {e.strerror}") from None
    if st.st_uid not in (os.geteuid(), 0):
        raise MountError(f"hot tier {root} belongs to user {st.st_uid}: it must belong to the "
                         f"mount's user ({os.geteuid()}) or to root")
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise MountError(f"hot tier {root} is writable by other users (mode "
                         f"{stat.S_IMODE(st.st_mode):o}): make it 0700 or 0755")


def read_unpublished(root: Path) -> list[str]:
    """What the last mount on this hot tier could not publish when it stopped (paths as
    text); nothing if it published everything."""
    try:
        fd = os.open(root / UNPUBLISHED, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as f:
        paths = json.loads(f.read() or b"[]")
    return [str(p) for p in paths] if isinstance(paths, list) else []


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
        #: The control socket's folder (tierfs/control/server.py makes it).
        self.run_dir = root / "run"
        self._lock_fd: int | None = None

    def write_unpublished(self, paths: list[str]) -> None:
        """Say what this mount could not publish as it stops (blocking); nothing: no file."""
        path = self.root / UNPUBLISHED
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if paths:
            fd = create_own_file(path)
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(paths).encode())

    def prepare(self) -> None:
        """Check the hot folder and make (or check) tierfs's folders in it; raises
        MountError."""
        check_root(self.root)
        try:
            for d in (self.staging_dir, self.index_dir):
                own_folder(d)
            self._check_run_dir()
        except OSError as e:
            raise MountError(f"hot tier: {e.strerror or e}") from None

    def _check_run_dir(self) -> None:
        """The control socket's folder, ``run`` (tierfs/control/server.py uses it): made here
        if missing, so nobody can plant one between now and the server's start; a symlink or
        another user's folder there is refused before the server would chmod it and put its
        socket in it."""
        try:
            st = os.lstat(self.run_dir)
        except FileNotFoundError:
            own_folder(self.run_dir)
            return
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, f"{self.run_dir} is a symlink: tierfs does not follow it")
        if stat.S_ISDIR(st.st_mode):
            own_folder(self.run_dir)

    def acquire(self, mountpoint: str) -> None:
        """Take the hot directory for this mount; a second mount on it would share the index."""
        try:
            fd = open_own_file(self.root / "lock", os.O_RDWR)
        except OSError as e:
            raise MountError(f"hot tier: {e.strerror or e}") from None
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
        return sid, create_own_file(self.staging_dir / sid, os.O_RDWR)

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
        own_folder(self.lost_dir)
        target = self.lost_dir / sid
        os.rename(self.staging_dir / sid, target)
        fd = create_own_file(self.lost_dir / f"{sid}.txt")
        try:
            os.write(fd, note)
        finally:
            os.close(fd)
        return target

    def staged_ids(self) -> list[str]:
        return sorted(os.listdir(self.staging_dir))
