"""The LMDB index on the hot tier: one environment, named databases, a format version.

The index is a cache plus a journal: losing it loses no published data. Writers never commit a
transaction per FUSE request; they queue changes in a ``Batch`` that a background task commits
in one transaction every ``FLUSH_INTERVAL`` (and at unmount). Other processes may open the
environment read-only while the mount runs.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import lmdb

from tierfs.errors import MountError

FORMAT_VERSION = 1
#: Seconds between batch commits. Losing one interval's worth of inode numbers in a crash only
#: means some files get new numbers after the remount.
FLUSH_INTERVAL = 1.0
#: A sparse upper bound for the memory map, not space used: LMDB grows its file as needed.
MAP_SIZE = 1 << 34

#: Named databases: ``meta`` (format, counters), ``inodes`` (warm file identity -> tierfs inode
#: number, so numbers stay stable across remounts for tools that cache st_ino, such as git),
#: ``journal`` (staging id -> the path it will be published to), ``blocks`` (block cache
#: entries and their eviction state; see tierfs/cache/blocks.py), ``pins`` (pinned sources).
DATABASES = (b"meta", b"inodes", b"journal", b"blocks", b"pins")

_U64 = struct.Struct(">Q")


def pack_u64(value: int) -> bytes:
    return _U64.pack(value)


def unpack_u64(data: bytes) -> int:
    return _U64.unpack(data)[0]


class Index:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        try:
            self.env = lmdb.open(str(path), max_dbs=len(DATABASES) + 4, map_size=MAP_SIZE,
                                 readonly=readonly, subdir=True, create=not readonly)
        except lmdb.Error as e:
            raise MountError(f"cannot open the index at {path}: {e}") from None
        self.dbs = {name.decode(): self.env.open_db(name, create=not readonly)
                    for name in DATABASES}
        self._check_format(path, readonly)

    def _check_format(self, path: Path, readonly: bool) -> None:
        with self.env.begin(db=self.dbs["meta"], write=not readonly) as txn:
            found = txn.get(b"format")
            if found is None and not readonly:
                txn.put(b"format", pack_u64(FORMAT_VERSION))
            elif found is not None and unpack_u64(found) != FORMAT_VERSION:
                raise MountError(f"the index at {path} has format {unpack_u64(found)}, this "
                                 f"tierfs reads format {FORMAT_VERSION}")

    def get(self, db: str, key: bytes) -> bytes | None:
        with self.env.begin(db=self.dbs[db]) as txn:
            return txn.get(key)

    def commit(self, changes: dict[tuple[str, bytes], bytes | None]) -> None:
        """Apply a batch in one write transaction; ``None`` deletes the key."""
        if not changes:
            return
        with self.env.begin(write=True) as txn:
            for (db, key), value in changes.items():
                if value is None:
                    txn.delete(key, db=self.dbs[db])
                else:
                    txn.put(key, value, db=self.dbs[db])

    def close(self) -> None:
        self.env.close()


class Batch:
    """Changes queued on the event loop, committed later in one transaction by a worker thread.

    Reads through ``get`` see queued changes first, so callers never observe the delay.
    """

    def __init__(self, index: Index) -> None:
        self.index = index
        self._pending: dict[tuple[str, bytes], bytes | None] = {}
        self._committing: dict[tuple[str, bytes], bytes | None] = {}

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._pending[(db, key)] = value

    def delete(self, db: str, key: bytes) -> None:
        self._pending[(db, key)] = None

    def pending(self, db: str, key: bytes) -> tuple[bool, bytes | None]:
        """Whether the key has a queued change, and its queued value."""
        for changes in (self._pending, self._committing):
            if (db, key) in changes:
                return True, changes[(db, key)]
        return False, None

    async def flush(self, run_in_thread: Callable[..., Awaitable[None]]) -> None:
        """Commit what is queued; changes stay visible through ``pending`` until committed."""
        if not self._pending or self._committing:
            return
        self._committing, self._pending = self._pending, {}
        try:
            await run_in_thread(self.index.commit, self._committing)
        except BaseException:
            self._pending = {**self._committing, **self._pending}
            raise
        finally:
            self._committing = {}
