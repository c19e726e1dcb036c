"""Cleanups owed to the bucket: an object nothing names any more, or an upload tierfs gave up
on, whose delete or abort failed (the bucket busy past every retry, or away for a while).

Such a failure only logged would leave the object, or the upload and its parts, in the bucket
for ever: nothing else knows of them once the stub or the journal entry that named them is
gone. So each failed cleanup is kept as a record in the index (committed with the next
batch), tried again every ``RETRY_INTERVAL`` seconds while the mount runs, and at the next
mount's recovery. A delete keeps the ETag it was meant for: another node may have written a
new object at the key meanwhile, which is not this one's to delete; a delete with no version
to hold it to is tried once only.

The records are this node's own (the hot tier's index), never read from the shared tree.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import trio

from tierfs.index import Batch, Index
from tierfs.objects.base import NoSuchObject, ObjectInfo, ObjectStoreError
from tierfs.tiers.cold import ColdTier
from tierfs.transfer.streaming import UPLOAD_TOKEN

log = logging.getLogger(__name__)

#: Records live in the index's ``meta`` database under this prefix.
PREFIX = b"garbage/"
#: Seconds between tries of the cleanups still owed.
RETRY_INTERVAL = 300.0
#: Cleanups tried at mount, before serving (the rest wait for the first retry).
AT_MOUNT = 32


@dataclasses.dataclass(frozen=True)
class Owed:
    key: str
    #: An unfinished upload to abort; None: the object at ``key`` to delete.
    upload_id: str | None = None
    #: The version to delete (None: whatever is there).
    etag: str | None = None
    #: That version as a HEAD before the failed delete saw it: its upload's token (each
    #: upload its own; a rewrite of the same bytes has the same ETag on S3), or, for an
    #: object without one, when it was written.
    token: str | None = None
    modified: int | None = None

    @property
    def record(self) -> bytes:
        """Each version its own record: two owed deletes of one key are two cleanups."""
        return PREFIX + json.dumps([self.key, self.upload_id, self.etag]).encode()

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


class Garbage:
    def __init__(self, cold: ColdTier, batch: Batch) -> None:
        self.cold = cold
        self.batch = batch
        self.owed: dict[bytes, Owed] = {}

    def load(self, index: Index) -> None:
        """The records a run before this one left (blocking: at mount)."""
        for record, raw in index.items("meta"):
            if record.startswith(PREFIX):
                try:
                    owed = Owed(**json.loads(raw))
                except (ValueError, TypeError):
                    owed = None
                if owed is None or (owed.upload_id is None and owed.etag is None):
                    log.warning("a cleanup record of the index is unreadable or names no "
                                "version; dropped")
                    self.batch.delete("meta", record)
                    continue
                if record != owed.record:  # (named otherwise by an earlier tierfs)
                    self.batch.delete("meta", record)
                    self.batch.put("meta", owed.record, owed.encode())
                self.owed[owed.record] = owed

    async def delete(self, key: str, etag: str | None = None) -> None:
        """Delete an object nothing refers to any more (``etag``: only that version); if the
        store fails, the delete is owed."""
        await self._settle(Owed(key, None, etag))

    async def abort(self, key: str, upload_id: str) -> None:
        """Abort an upload given up on; if the store fails, the abort is owed."""
        await self._settle(Owed(key, upload_id))

    async def retry(self, most: int | None = None) -> int:
        """Try each cleanup still owed once (``most``: at most that many): how many are
        left."""
        for owed in list(self.owed.values())[:most]:
            await self._settle(owed, again=True)
        return len(self.owed)

    async def run(self) -> None:
        """Retry what is owed now and then, while the mount runs (an ``Upkeep`` job, whose
        end would end the mount's background work: nothing but cancellation ends it)."""
        while True:
            await trio.sleep(RETRY_INTERVAL)
            if self.owed:
                try:
                    await self.retry()
                except Exception:
                    log.exception("retrying the cleanups owed to the bucket failed")

    async def _settle(self, owed: Owed, again: bool = False) -> None:
        seen: list[ObjectInfo] = []
        try:
            await self.cold.run(self._clean, owed, seen)
        except (ObjectStoreError, OSError) as e:  # (OSError: a local folder's)
            if seen and owed.token is None and owed.modified is None:
                owed = dataclasses.replace(owed, token=seen[0].metadata.get(UPLOAD_TOKEN),
                                           modified=seen[0].mtime_ns)
            what = "abort the upload of" if owed.upload_id else "delete the object"
            if owed.upload_id is None and owed.etag is None:
                # No version to hold a later try to: the key may name a new object by then.
                log.error("could not %s %s (kept: at worst garbage): %s", what, owed.key, e)
                return
            if not again:
                log.error("could not %s %s (tried again later): %s", what, owed.key, e)
            if owed.record not in self.owed:
                self.owed[owed.record] = owed
                self.batch.put("meta", owed.record, owed.encode())
            return
        if self.owed.pop(owed.record, None) is not None:
            self.batch.delete("meta", owed.record)

    def _clean(self, owed: Owed, seen: list[ObjectInfo]) -> None:
        store = self.cold.store
        if owed.upload_id is not None:
            store.abort_multipart(owed.key, owed.upload_id)
            return
        if owed.etag is not None:
            try:
                found = store.head(owed.key)
            except NoSuchObject:
                return
            if found.etag != owed.etag or not _same_version(owed, found):
                log.info("%s holds another version than the one to delete: kept", owed.key)
                return
            seen.append(found)
        store.delete(owed.key)


def _same_version(owed: Owed, found: ObjectInfo) -> bool:
    if owed.token is not None:
        return found.metadata.get(UPLOAD_TOKEN) == owed.token
    return owed.modified in (None, found.mtime_ns)
