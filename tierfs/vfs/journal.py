"""The write journal: what is staged on the hot tier, where it belongs, and how far it got.

One entry per staging file, in the index's ``journal`` database, keyed by the staging id. It
says where the data goes (the path in the namespace), whether a writer has closed it (only
closed data may ever appear under the file's name), and, for a file streaming to the bucket,
its multipart upload: the key, the upload id once known, the first part size, the checksum it
was created with and the parts completed with their receipts (ETag, and checksum).

Entries change in memory and normally reach LMDB with the index batch. Where losing a change
in a crash would lose or misplace data, the filesystem waits for a group commit (``sync``)
before going on: before a write-back close returns, before a part's bytes are punched out of
staging, before a multipart upload is created (so that a crash never leaves an upload nobody
knows of), and when a file with data still to publish is renamed or unlinked.

At mount, recovery (tierfs/vfs/recovery.py) reads every entry and finishes or undoes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from tierfs.index import Batch, Index

DB = "journal"


@dataclasses.dataclass
class Upload:
    key: str
    #: Seconds since the epoch just before the upload was created: recovery aborts uploads of
    #: ``key`` started since then when the id itself was never recorded.
    since: float
    first_part: int
    upload_id: str | None = None
    #: Completed parts: number -> receipt (``ObjectStore.upload_part``).
    parts: dict[int, str] = dataclasses.field(default_factory=dict)
    #: Set in the object's metadata (``UPLOAD_TOKEN``) when the upload is created: if the
    #: bucket says the upload is gone, an object at ``key`` with this token is the one it made
    #: (completed before a crash, or a completion whose reply was lost).
    token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))
    #: The checksum the upload was created with (``ObjectStore.part_checksum``); then each
    #: part's receipt carries its checksum too, and the completion lists them.
    checksum: str | None = None


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

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "path": os.fsdecode(self.path), "closed": self.closed, "size": self.size,
            "atime_ns": self.atime_ns, "mtime_ns": self.mtime_ns, "replaces": self.replaces,
            "synced": self.synced, "upload": None}
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
        entry = cls(**{**data, "path": os.fsencode(data["path"])})
        if upload is not None:
            upload["parts"] = {int(n): e for n, e in upload["parts"].items()}
            entry.upload = Upload(**upload)
        return entry


class Journal:
    def __init__(self, batch: Batch, run_in_thread: Callable[..., Awaitable[None]]) -> None:
        self.batch = batch
        self._run = run_in_thread
        #: Entries as they are now (the batch holds their serialised form until commit).
        self.entries: dict[str, Entry] = {}

    def record(self, sid: str, entry: Entry) -> None:
        """Queue an entry's current state (call again after every change to it)."""
        self.entries[sid] = entry
        self.batch.put(DB, sid.encode(), entry)  # encoded when the batch commits

    def drop(self, sid: str) -> None:
        self.entries.pop(sid, None)
        self.batch.delete(DB, sid.encode())

    async def sync(self, durable: bool = False) -> None:
        """Commit every change queued so far (shared with concurrent callers): it survives a
        crash of tierfs; ``durable`` also flushes the index to disk, so that it survives a
        crash of the system."""
        await self.batch.sync(self._run, durable)

    def moved(self, old: bytes, new: bytes) -> bool:
        """A path (file or directory) was renamed: re-point entries at or under it. Returns
        whether any entry changed (then the caller syncs)."""
        changed = False
        for sid, entry in self.entries.items():
            if entry.path == old or entry.path.startswith(old + b"/"):
                entry.path = new + entry.path[len(old):]
                self.record(sid, entry)
                changed = True
        return changed


def load(index: Index) -> dict[str, Entry]:
    """Every entry in the index (blocking; recovery at mount)."""
    out = {}
    with index.env.begin(db=index.dbs[DB]) as txn:
        for key, raw in txn.cursor():
            try:
                out[bytes(key).decode()] = Entry.decode(bytes(raw))
            except (ValueError, KeyError, TypeError):
                out[bytes(key).decode()] = Entry(b"")  # unreadable: recovery discards it
    return out
