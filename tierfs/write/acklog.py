"""The acknowledgement log: write-back closes acknowledged without an index commit each.

A write-back close returns once its journal entry would survive a crash of tierfs. A commit of
the index costs an fdatasync (LMDB syncs every commit), about half a millisecond on a cloud
disk, and a save of many small files would pay it once per file, where nothing needs the disk:
after a crash of the system, recovery publishes no write-back data that was not flushed anyway
(see write/recovery.py). What outlives a crash of the process is the page cache. So the close
appends its entry to this log (one write, no sync), and the entry reaches LMDB with the next
batch commit, as every other change does.

Each record carries a sequence number that never goes back, and the batch carries the number
of the last record queued with it (the ``meta`` key ``acks``), committed in the same
transaction as the entries. At the next mount, the records past the committed number are
exactly the acknowledged changes LMDB does not hold, and they are applied over its entries
in order (``entries.load``); any change made to an entry after its record and committed since would
have committed that number too. The log is emptied once a commit covers all of it, and a
commit is forced when it grows past ``LIMIT`` under a steady stream of closes.

The file is in the index's directory (mode 0700) and is the mount user's alone (0600).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from tierfs.index import Index, unpack_u64

log = logging.getLogger(__name__)

NAME = "acks"
#: Where the batch records the last acknowledgement it holds (``meta`` database).
META_KEY = b"acks"
#: Bytes of log past which an acknowledgement waits for a commit before it empties the log.
LIMIT = 4 << 20


def committed_seq(index: Index) -> int:
    """The number of the last acknowledgement LMDB holds (0: none)."""
    raw = index.get("meta", META_KEY)
    return 0 if raw is None else unpack_u64(raw)


def records(path: Path) -> Iterator[tuple[int, str, bytes]]:
    """(sequence number, staging id, encoded entry) of each whole record, in order; the log
    ends at the first record that is not whole (a write cut short by the crash)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    for line in raw.split(b"\n")[:-1]:  # (the last piece has no newline: not whole)
        parts = line.split(b" ", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isalnum():
            log.warning("the acknowledgement log %s ends in an unreadable record", path)
            return
        yield int(parts[0]), parts[1].decode(), parts[2]


class AckLog:
    """The log of a mount, appended on the event loop: a small write into the page cache
    costs less than the hand-off to a thread. Opened without emptying it: recovery reads
    what an earlier run left, and the log is emptied only once a commit after recovery
    covers every record in it."""

    def __init__(self, path: Path, committed: int) -> None:
        self.path = path
        last = max((seq for seq, _, _ in records(path)), default=0)
        #: The number of the last record written, never behind what LMDB holds.
        self.seq = max(committed, last)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size
        #: A record was cut short and could not be taken back (``append``).
        self.torn = False

    def append(self, sid: str, encoded: bytes) -> int:
        """Write one record; its sequence number. On failure the log is cut back to where it
        ended, or, if even that fails, refuses records until it is emptied: the records
        after one cut short would never be read."""
        if self.torn:
            raise OSError(errno.EIO, "acknowledgement log: a record was cut short")
        seq = self.seq + 1
        record = b"%d %s %s\n" % (seq, sid.encode(), encoded)
        try:
            written = os.write(self.fd, record)
            if written != len(record):  # (a full disk mid-record)
                raise OSError(errno.ENOSPC, f"acknowledgement log: {written} of "
                              f"{len(record)} bytes written")
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                self.torn = True
            raise
        self.size += written
        self.seq = seq
        return seq

    def empty(self) -> None:
        """Every record is in LMDB: start over."""
        os.ftruncate(self.fd, 0)
        self.size = 0
        self.torn = False

    def close(self) -> None:
        os.close(self.fd)
