"""Journal entries: what one says of a staging file (where its data goes, whether a writer
closed it, its upload), how it is stored in the index, what recovery may publish of it, and
reading them all at mount (the index's, with the acknowledgement log's records over them).

Kept apart from the journal that changes them (write/journal.py): recovery and the tools read
entries here, and the rule for what recovery publishes of one (``publishable``) is asked by
the live publisher too (``Journal.would_publish``), so it lives in one place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path
from typing import Any

from tierfs.index import REBOOT_ALL, REBOOT_PENDING, Index
from tierfs.write import acklog

DB = "journal"


@dataclasses.dataclass
class Upload:
    key: str
    #: Seconds since the epoch just before the upload was created (for a person reading the
    #: journal: without the id, recovery aborts the key's uploads that hold no part).
    since: float
    first_part: int
    upload_id: str | None = None
    #: Completed parts whose staged bytes have not changed since: number -> receipt
    #: (``ObjectStore.upload_part``).
    parts: dict[int, str] = dataclasses.field(default_factory=dict)
    #: Set in the object's metadata (``UPLOAD_TOKEN``) when the upload is created: if the
    #: bucket says the upload is gone, an object at ``key`` with this token is the one it made
    #: (completed before a crash, or a completion whose reply was lost).
    token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))
    #: The checksum the upload was created with (``ObjectStore.part_checksum``); then each
    #: part's receipt carries its checksum too, and the completion lists them.
    checksum: str | None = None


@dataclasses.dataclass(frozen=True)
class Move:
    """A rename through the mount under way: ``old`` to ``new`` (``exchange``: each to the
    other), the warm file or folder at ``old`` being ``key`` then (its identity; None if not
    known). Recorded in the entries it concerns before the warm tier is asked, so that after
    a crash in between recovery can tell from the warm tier whether the rename was made."""

    old: bytes
    new: bytes
    key: bytes | None
    exchange: bool

    def concerns(self, path: bytes) -> bool:
        """Whether an entry at ``path`` goes (or may go) elsewhere by it."""
        return _at(path, self.old) or _at(path, self.new)

    def made(self, now: bytes | None) -> bool:
        """Whether it was made, ``now`` being the identity at ``old`` (None: nothing)."""
        return now is None or (self.key is not None and now != self.key)


#: What a rename did to an entry (``Entry.renamed``).
UNTOUCHED, MOVED, LOST = "untouched", "moved", "lost"


@dataclasses.dataclass
class Entry:
    path: bytes
    #: A writer closed the file and nobody writes to it: this data may be published.
    closed: bool = False
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    upload: Upload | None = None
    #: The object the file's previous stub named, to delete once this data is published.
    replaces: str | None = None
    #: A file streaming to the bucket was fsynced at this size: recovery completes its
    #: upload up to there even if it was not closed.
    synced: int | None = None
    #: When a close or an fsync last acknowledged its data (the wall clock, ns, never going
    #: back within a run; 0: never, or journaled by format 1): recovery publishes entries
    #: in this order, so that of two at one path (staged data an earlier publish failed to
    #: send home, and newer data closed or fsynced before a crash) the newer wins.
    acked_ns: int = 0
    #: A close acknowledged the first ``acked`` bytes, and writes since only appended to them
    #: (a log written on after a child's exit closed its copy of the descriptor): recovery
    #: publishes that much, though the entry is open again. None: nothing so.
    acked: int | None = None
    #: A rename of its path (or a folder above it, or over it) under way.
    move: Move | None = None

    def renamed(self, old: bytes, new: bytes, exchange: bool) -> str:
        """Follow a rename made of ``old`` to ``new``: the entry's path re-pointed (MOVED),
        or, at ``new`` where nothing went the other way, left nameless: its data must never
        be published there (LOST: the caller drops the name, ``lose_name``)."""
        if _at(self.path, old):
            self.path = new + self.path[len(old):]
        elif _at(self.path, new):
            if not exchange:
                return LOST
            self.path = old + self.path[len(new):]
        else:
            return UNTOUCHED
        self.move = None
        return MOVED

    def lose_name(self) -> None:
        self.path, self.move = b"", None
        self.closed, self.acked = False, None

    def may_be_published(self) -> bool:
        """Whether recovery may publish this data under ``path`` (after a crash of tierfs; a
        superset of ``publishable``'s answer, for the journal's bookkeeping): closed, a prefix
        acknowledged (``acked``), or streaming to the bucket and fsynced."""
        return (self.closed or self.acked is not None
                or (self.upload is not None and self.synced is not None))

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "path": os.fsdecode(self.path), "closed": self.closed, "size": self.size,
            "atime_ns": self.atime_ns, "mtime_ns": self.mtime_ns, "replaces": self.replaces,
            "synced": self.synced, "acked_ns": self.acked_ns, "acked": self.acked,
            "upload": None, "move": None}
        if self.move is not None:
            m = self.move
            data["move"] = {"old": os.fsdecode(m.old), "new": os.fsdecode(m.new),
                            "key": None if m.key is None else m.key.hex(),
                            "exchange": m.exchange}
        if self.upload is not None:
            u = self.upload
            data["upload"] = {"key": u.key, "since": u.since, "first_part": u.first_part,
                              "upload_id": u.upload_id, "token": u.token,
                              "checksum": u.checksum,
                              "parts": {str(n): e for n, e in u.parts.items()}}
        return json.dumps(data).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        data = json.loads(raw)
        upload = data.pop("upload", None)
        move = data.pop("move", None)
        known = {f.name for f in dataclasses.fields(cls)}
        entry = cls(**{**{k: v for k, v in data.items() if k in known},
                       "path": os.fsencode(data["path"])})
        if upload is not None:
            upload["parts"] = {int(n): e for n, e in upload["parts"].items()}
            entry.upload = Upload(**upload)
        if move is not None:
            entry.move = Move(os.fsencode(move["old"]), os.fsencode(move["new"]),
                              None if move["key"] is None else bytes.fromhex(move["key"]),
                              bool(move["exchange"]))
        return entry


def _at(path: bytes, rel: bytes) -> bool:
    """Whether ``path`` is ``rel`` or below it."""
    return path == rel or path.startswith(rel + b"/")



def load(index: Index, acks: Path | None = None) -> dict[str, Entry]:
    """Every entry in the index, with the acknowledgements logged at ``acks`` that it does
    not hold yet applied over them (blocking; recovery at mount)."""
    out = {}
    for key, raw in index.items(DB):
        out[key.decode()] = _decoded(raw)
    if acks is not None:
        committed = acklog.committed_seq(index)
        for seq, sid, raw in acklog.records(acks):
            if seq > committed:
                out[sid] = _decoded(raw)
    return out


def publishable(entry: Entry, rebooted: bool) -> int | None:
    """How many bytes of an entry's staged data recovery puts in place; None: none.
    ``rebooted``: the data was staged before a restart of the system (``untrusted_of``)."""
    if not entry.path:
        return None
    streamed = entry.upload is not None and entry.synced is not None
    if not rebooted:
        if entry.closed:
            return entry.size
        if entry.acked is not None:
            # (Of a stream, the later promise of a close's and an fsync's.)
            return max(entry.acked, entry.synced or 0) if streamed else entry.acked
        return entry.synced if streamed else None
    if entry.closed and entry.synced is not None and entry.synced >= entry.size:
        return entry.size
    if (entry.upload is None and entry.acked is not None and entry.synced is not None
            and entry.acked <= entry.synced):
        # A prefix a close acknowledged, flushed and only appended to since (a change below
        # the flushed size takes it back first, durably: ``Journal.reopened``).
        return entry.acked
    return entry.synced if streamed else None


def untrusted_of(index: Index, entries: dict[str, Entry], rebooted: bool) -> set[str]:
    """The entries staged before a restart of the system that no recovery has dealt with
    (``REBOOT_PENDING``; all of them after a restart no recovery has seen yet, or when the
    caller says the system restarted and the index has no mark). Blocking."""
    if not rebooted:
        return set()
    mark = index.get("meta", REBOOT_PENDING)
    if mark is None or bytes(mark) == REBOOT_ALL:
        return set(entries)
    return set(bytes(mark).decode().split("\n")) & entries.keys()


def _decoded(raw: bytes) -> Entry:
    try:
        return Entry.decode(raw)
    except (ValueError, KeyError, TypeError):
        return Entry(b"")  # unreadable: recovery discards it
