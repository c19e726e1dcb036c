"""The LMDB index on the hot tier: one environment, named databases, a format version.

The index is a cache plus a journal: losing it loses no published data. Writers never commit a
transaction per FUSE request; they queue changes in a ``Batch`` that a background task commits
in one transaction every ``FLUSH_INTERVAL`` (and at unmount). Other processes may open the
environment read-only while the mount runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import lmdb
import trio

from tierfs.errors import MountError

FORMAT_VERSION = 3
#: Formats this tierfs reads; an older one is upgraded in place by the first mount. 2: journal
#: entries may carry fields format 1 readers do not know (``acked_ns``), so a tierfs reading
#: only format 1 must refuse the index rather than misread its journal. 3: write-back closes
#: may be in the acknowledgement log beside the index (``write/acklog.py``) and not in it
#: yet, so an older tierfs must refuse it rather than discard their staged data as orphans.
READS_FORMATS = (1, 2, 3)
#: The mode of the index's files.
FILE_MODE = 0o600
#: Seconds between batch commits. Losing one interval's worth of inode numbers in a crash only
#: means some files get new numbers after the remount.
FLUSH_INTERVAL = 1.0
#: A sparse upper bound for the memory map, not space used: LMDB grows its file as needed.
MAP_SIZE = 1 << 34
#: Free bytes under which the hot disk counts as full when LMDB reports a commit's write as
#: an I/O error (what a write cut short by the disk gives).
NEARLY_FULL = 64 * 1024 * 1024

#: Named databases: ``meta`` (format, counters), ``inodes`` (warm file identity -> tierfs inode
#: number, so numbers stay stable across remounts for tools that cache st_ino, such as git),
#: ``journal`` (staging id -> its entry: target path, state, upload; see write/entries.py),
#: ``blocks`` (block-cache entries and their eviction state; see tierfs/cache/blocks.py),
#: ``pins`` (pinned sources).
DATABASES = (b"meta", b"inodes", b"journal", b"blocks", b"pins")

_U64 = struct.Struct(">Q")


def pack_u64(value: int) -> bytes:
    return _U64.pack(value)


def unpack_u64(data: bytes) -> int:
    return _U64.unpack(data)[0]


@dataclasses.dataclass(frozen=True)
class RunStart:
    #: The previous run unmounted cleanly.
    clean: bool
    #: The system restarted since the previous run: what the page cache held then is gone,
    #: so staged data that was never flushed to disk cannot be trusted.
    rebooted: bool


#: Meta key naming the journal entries staged before a restart of the system that no recovery
#: has dealt with yet (``REBOOT_ALL``: every entry): a mount after a recovery killed midway, or
#: one that kept an entry it could not publish nor set aside, runs under the new boot id, yet
#: must still treat what the old boot left unflushed as the restart made it
#: (``Journal.taken_over`` and ``Journal.recovered`` keep it to those entries).
REBOOT_PENDING = b"reboot-recovery"
REBOOT_ALL = b"*"


def boot_id() -> bytes:
    """The kernel's id of this boot (a new random one at every start of the system)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_bytes().strip()
    except OSError:
        return b"unknown"


def _tighten(path: Path) -> None:
    """Give the index's files the mode a new index gets (one made by an older tierfs under
    umask 0 may be readable by anyone)."""
    for name in ("data.mdb", "lock.mdb"):
        st = os.lstat(path / name)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.chmod(path / name, FILE_MODE)


class Index:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if not readonly:  # (LMDB would make it with the files' mode, 0600: unusable)
            with contextlib.suppress(OSError):  # (LMDB says why if it cannot be made)
                os.mkdir(path, 0o700)
        try:
            # metasync=False: one fdatasync per commit instead of two. LMDB keeps the
            # database intact on a system crash, but the last commit before it may be
            # undone: what must survive one (the journal at fsync) is synced explicitly.
            # mode: the index names users' files (the journal's paths): closed to others.
            self.env = lmdb.open(str(path), max_dbs=len(DATABASES) + 4, map_size=MAP_SIZE,
                                 readonly=readonly, subdir=True, create=not readonly,
                                 metasync=False, mode=FILE_MODE)
        except lmdb.Error as e:
            raise MountError(f"cannot open the index at {path}: {e}") from None
        if not readonly:
            _tighten(path)
        self.dbs = {name.decode(): self.env.open_db(name, create=not readonly)
                    for name in DATABASES}
        self._check_format(path, readonly)

    def _check_format(self, path: Path, readonly: bool) -> None:
        with self.env.begin(db=self.dbs["meta"], write=not readonly) as txn:
            found = txn.get(b"format")
            version = None if found is None else unpack_u64(found)
            if version is not None and version not in READS_FORMATS:
                raise MountError(f"the index at {path} has format {version}, this "
                                 f"tierfs reads format {FORMAT_VERSION}")
            if version != FORMAT_VERSION and not readonly:
                txn.put(b"format", pack_u64(FORMAT_VERSION))  # (new, or upgraded)

    def node_id(self) -> bytes:
        """A random id for this hot tier (this node), made once and kept."""
        with self.env.begin(db=self.dbs["meta"], write=True) as txn:
            node = txn.get(b"node")
            if node is None:
                node = os.urandom(4).hex().encode()
                txn.put(b"node", node)
            return bytes(node)

    def begin_run(self) -> RunStart:
        """Mark the index as in use, under this boot of the system: how the last run ended."""
        boot = boot_id()
        with self.env.begin(db=self.dbs["meta"], write=True) as txn:
            clean = txn.get(b"clean") in (None, b"1")
            previous = txn.get(b"boot")
            rebooted = ((previous is not None and bytes(previous) != boot)
                        or txn.get(REBOOT_PENDING) is not None)
            txn.put(b"clean", b"0")
            txn.put(b"boot", boot)
            if previous is not None and bytes(previous) != boot:
                txn.put(REBOOT_PENDING, REBOOT_ALL)
        self.env.sync(True)
        return RunStart(clean=clean, rebooted=rebooted)

    def end_run(self) -> None:
        with self.env.begin(db=self.dbs["meta"], write=True) as txn:
            txn.put(b"clean", b"1")

    def get(self, db: str, key: bytes) -> bytes | None:
        with self.env.begin(db=self.dbs[db]) as txn:
            return txn.get(key)

    def get_many(self, db: str, keys: list[bytes]) -> list[bytes | None]:
        """``get`` of each key, in one read transaction (a listing's thousands of entries)."""
        with self.env.begin(db=self.dbs[db]) as txn:
            return [txn.get(key) for key in keys]

    def items(self, db: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a database, in key order, as one read transaction saw them
        (blocking; for loading a database whole at mount, not for the event loop)."""
        with self.env.begin(db=self.dbs[db]) as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]

    def commit(self, changes: dict[tuple[str, bytes], bytes | None]) -> None:
        """Apply a batch in one write transaction; ``None`` deletes the key."""
        if not changes:
            return
        try:
            with self.env.begin(write=True) as txn:
                for (db, key), value in changes.items():
                    if value is None:
                        txn.delete(key, db=self.dbs[db])
                    else:
                        txn.put(key, value, db=self.dbs[db])
        except lmdb.Error as e:
            # The hot disk is full: callers make room. LMDB reports a write that the disk cut
            # short (room for some of the pages, not all) as EIO, not ENOSPC: an EIO is
            # taken for a full disk only where the disk is nearly full.
            if os.strerror(errno.ENOSPC) in str(e) or (
                    os.strerror(errno.EIO) in str(e) and self._nearly_full()):
                raise OSError(errno.ENOSPC, f"committing the index: {e}") from None
            if os.strerror(errno.EIO) in str(e):
                raise OSError(errno.EIO, f"committing the index: {e}") from None
            raise

    def _nearly_full(self) -> bool:
        try:
            st = os.statvfs(self.path)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < NEARLY_FULL

    def close(self) -> None:
        self.env.close()


class Encodable(Protocol):
    """A value serialised only when its batch is committed: a record that changes several
    times between commits (a journal entry) is encoded once, or never if it is gone first."""

    def encode(self) -> bytes: ...


def _encoded(value: bytes | Encodable | None) -> bytes | None:
    return value if value is None or isinstance(value, bytes) else value.encode()


class Batch:
    """Changes queued on the event loop, committed later in one transaction by a worker thread.

    Reads through ``pending`` see queued changes first, so callers never observe the delay.
    ``sync`` is a group commit: it returns once every change queued before it is committed, and
    callers that arrive while a commit runs share the next one.

    A value may be an ``Encodable`` object: it is encoded on the event loop as its commit
    starts, so it must not change between awaits without being put again.
    """

    def __init__(self, index: Index) -> None:
        self.index = index
        self._pending: dict[tuple[str, bytes], bytes | Encodable | None] = {}
        self._committing: dict[tuple[str, bytes], bytes | None] = {}
        #: Changes queued so far, and the number of them known to be committed.
        self._queued = 0
        self._committed = 0
        self._done: trio.Event | None = None
        #: Frees space on the hot disk when a commit finds it full (the block cache evicts).
        self.make_room: Callable[[], Awaitable[None]] | None = None

    def put(self, db: str, key: bytes, value: bytes | Encodable) -> None:
        self._pending[(db, key)] = value
        self._queued += 1

    def delete(self, db: str, key: bytes) -> None:
        self._pending[(db, key)] = None
        self._queued += 1

    @property
    def position(self) -> int:
        """How many changes were queued so far: ``covers`` takes such a number."""
        return self._queued

    def covers(self, position: int) -> bool:
        """Whether every change queued before ``position`` was reached is committed."""
        return self._committed >= position

    def pending(self, db: str, key: bytes) -> tuple[bool, bytes | None]:
        """Whether the key has a queued change, and its queued value."""
        if (db, key) in self._pending:
            return True, _encoded(self._pending[(db, key)])
        if (db, key) in self._committing:
            return True, self._committing[(db, key)]
        return False, None

    async def flush(self, run_in_thread: Callable[..., Awaitable[None]]) -> None:
        """Commit what is queued; changes stay visible through ``pending`` until committed."""
        if self._done is not None:  # a commit is running: wait for it, the caller may retry
            await self._done.wait()
            return
        if not self._pending:
            self._committed = self._queued
            return
        upto = self._queued
        self._committing = {k: _encoded(v) for k, v in self._pending.items()}
        self._pending = {}
        self._done = done = trio.Event()
        try:
            try:
                await run_in_thread(self.index.commit, self._committing)
            except OSError as e:
                if e.errno != errno.ENOSPC or self.make_room is None:
                    raise
                await self.make_room()
                await run_in_thread(self.index.commit, self._committing)
            self._committed = upto
        except BaseException:
            self._pending = {**self._committing, **self._pending}
            raise
        finally:
            self._committing = {}
            self._done = None
            done.set()

    async def sync(self, run_in_thread: Callable[..., Awaitable[None]],
                   durable: bool = False) -> None:
        """Return once every change queued before this call is committed; with ``durable``,
        also flushed to disk (a commit alone may be undone by a system crash, see Index)."""
        target = self._queued
        while self._committed < target:
            await self.flush(run_in_thread)
        if durable:
            await run_in_thread(self.index.env.sync, True)
