"""The write journal: what is staged on the hot tier, where it belongs, and how far it got.

One entry per staging file, in the index's ``journal`` database, keyed by the staging id. It
says where the data goes (the path in the namespace), whether a writer has closed it (only
closed data may ever appear under the file's name), and, for a file streaming to the bucket,
its multipart upload: the key, the upload id once known, the first part size, the checksum it
was created with and the parts completed with their receipts (ETag, and checksum).

Entries change in memory and normally reach LMDB with the index batch. A write-back close is
acknowledged in the acknowledgement log instead (``acknowledge``, write/acklog.py). Where
losing a change in a crash would lose or misplace data, the filesystem waits for a group
commit (``sync``) before going on: before a part's bytes may be punched out
of staging, before staged bytes of a part the journal names as completed change, before a
multipart upload is created (so that a crash never leaves an upload nobody knows of) and
again with its id before any part goes up (so that recovery aborts that upload alone, not
every upload of the key: another node may be writing the same file), when a file with
data still to publish is renamed or unlinked, and before staged bytes change whose entry the
index may still hold as closed (published since, or written again after a close of a shared
descriptor), so that recovery never publishes them half-written.

Every change to an entry that follows from what happens to an open file (the writer closed
it, wrote again, the data was published or must be kept) is a method here, called from every
path that needs it; recovery (tierfs/write/recovery.py) reads every entry at mount and
finishes it through the same publishing code as a live close.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tierfs.core.openfile import OpenFile
from tierfs.index import REBOOT_PENDING, Batch, pack_u64
from tierfs.write import acklog
from tierfs.write.entries import DB, LOST, MOVED, Entry, Move, publishable

log = logging.getLogger(__name__)

#: What ``Journal.reopened`` took back from an entry: its state before, and as it left it;
#: None for nothing.
Reopened = tuple["State", "State"] | None
#: (closed, synced, acked) of an entry.
State = tuple[bool, int | None, int | None]


class Journal:
    def __init__(self, batch: Batch, run_in_thread: Callable[..., Awaitable[Any]],
                 acks: acklog.AckLog) -> None:
        self.batch = batch
        self._run = run_in_thread
        #: Where write-back closes are acknowledged.
        self.acks = acks
        #: The batch position after the last record's number was queued, once recovery
        #: has applied what an earlier run left in the log (None until then: the log is
        #: neither emptied nor appended to).
        self._acks_queued: int | None = None
        #: Entries as they are now (the batch holds their serialised form until commit).
        self.entries: dict[str, Entry] = {}
        #: The entries at each path, and each entry's path as last recorded: every publish
        #: asks for those at its path, and a save of many files keeps many entries.
        self._at_path: dict[bytes, set[str]] = {}
        self._path_of: dict[str, bytes] = {}
        self._last_stamp = 0
        #: Entries taken over from an earlier run (at recovery) and not acknowledged or
        #: changed in this one since (``older_than``).
        self._earlier: set[str] = set()
        #: Entries recorded as recovery would publish them (``Entry.may_be_published``)
        #: that the index or the log may still hold so, and of those recorded otherwise
        #: since, the count of records when that was (``_records``): a commit queued after
        #: it takes that back (``reopened``).
        self._maybe_closed: set[str] = set()
        self._unclosed_at: dict[str, int] = {}
        self._records = 0
        #: Entries staged before a restart of the system, at recovery (``taken_over``).
        self._untrusted: set[str] = set()
        #: Entries recovery left for a later mount before it found their file: no open file
        #: holds them, so a publish through another name of the file (a hard link) must
        #: find them by the file's identity (``left_elsewhere``).
        self._left: set[str] = set()

    def _stamp(self) -> int:
        """A time for ``Entry.acked_ns``: the wall clock (it must order entries across
        restarts), never behind the last stamp of this run."""
        self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
        return self._last_stamp

    def record(self, sid: str, entry: Entry) -> None:
        """Queue an entry's current state (call again after every change to it)."""
        self.entries[sid] = entry
        self._index_path(sid, entry.path)
        self._records += 1
        if entry.may_be_published():
            self._maybe_closed.add(sid)
            self._unclosed_at.pop(sid, None)
        elif sid in self._maybe_closed and sid not in self._unclosed_at:
            self._unclosed_at[sid] = self._records
        self.batch.put(DB, sid.encode(), entry)  # encoded when the batch commits

    def update(self, sid: str | None, entry: Entry) -> None:
        """Queue a change to an entry read before an await, if it is still the entry of its
        staging file: one dropped meanwhile (its data published and its staging removed) must
        not come back, naming a path recovery would then report as unpublished."""
        if sid is not None and self.entries.get(sid) is entry:
            self.record(sid, entry)

    def drop(self, sid: str) -> None:
        self._left.discard(sid)
        self._earlier.discard(sid)
        self.entries.pop(sid, None)
        self._index_path(sid, None)
        self._maybe_closed.discard(sid)
        self._unclosed_at.pop(sid, None)
        self.batch.delete(DB, sid.encode())

    def _index_path(self, sid: str, path: bytes | None) -> None:
        old = self._path_of.get(sid)
        if old == path:
            return
        if old is not None:
            sids = self._at_path[old]
            sids.discard(sid)
            if not sids:
                del self._at_path[old]
            del self._path_of[sid]
        if path is not None:
            self._path_of[sid] = path
            self._at_path.setdefault(path, set()).add(sid)

    async def sync(self, durable: bool = False) -> None:
        """Commit every change queued so far (shared with concurrent callers): it survives a
        crash of tierfs; ``durable`` also flushes the index to disk, so that it survives a
        crash of the system."""
        upto = self._records
        await self.batch.sync(self._run, durable)
        for sid, at in list(self._unclosed_at.items()):
            if at <= upto:  # the index says not closed now
                del self._unclosed_at[sid]
                self._maybe_closed.discard(sid)

    def moved(self, old: bytes, new: bytes, exchange: bool = False) -> bool:
        """A path (file or directory) was renamed through the mount: re-point entries at or
        under it, so staged data is published under its new name after a crash too. What was
        at ``new`` goes the other way for an exchange, and otherwise lost that name: its
        staged data must never be published there. Returns whether an entry whose data may
        be published changed (then the caller syncs)."""
        changed = False
        for sid, entry in self.entries.items():
            could = self._may_be_published(sid, entry)
            outcome = entry.renamed(old, new, exchange)
            if outcome == LOST:
                changed = self._lost_name(sid, entry) or changed
            elif outcome == MOVED:
                self.record(sid, entry)
                changed = changed or could
            elif entry.move is not None:  # (re-pointed elsewhere meanwhile: done with it)
                entry.move = None
                self.record(sid, entry)
        return changed

    def moving(self, move: Move | None) -> bool:
        """A rename is about to be made on the warm tier (``move``; None: the one under way
        failed): every entry it concerns records it first, as does an acknowledgement of one
        made meanwhile (a close does not wait for the rename). Returns whether one whose data
        may be published changed (then the caller syncs: before the rename, a crash between
        the two would otherwise leave acknowledged data journaled at a name gone; after a
        failed one, a crash would leave the rename looking made where the old name went)."""
        changed = False
        for sid, entry in self.entries.items():
            if move is None:
                if entry.move is None:
                    continue
                entry.move = None
            elif entry.path and move.concerns(entry.path):
                entry.move = move
            else:
                continue
            self.record(sid, entry)
            changed = changed or self._may_be_published(sid, entry)
        return changed

    def unlinked(self, rel: bytes) -> bool:
        """The name ``rel`` was removed through the mount: staged data still journaled under
        it (an open file's entry is re-pointed first, ``repoint``) must never come back there
        at recovery. Returns whether an entry whose data may be published changed
        (``Entry.may_be_published``)."""
        changed = False
        for sid in list(self._at_path.get(rel, ())):
            changed = self._lost_name(sid, self.entries[sid]) or changed
        return changed

    def superseded(self, rel: bytes, current: str | None) -> bool:
        """New content was published at ``rel``: staged data left there by an earlier publish
        that failed is older, and must never be published over it. Returns whether any
        entry changed (then the caller syncs)."""
        changed = False
        for sid in list(self._at_path.get(rel, ())):
            if sid != current:
                self._lost_name(sid, self.entries[sid])
                changed = True
        return changed

    def left(self, sid: str) -> None:
        """Recovery kept this entry for a later mount, no open file holding it."""
        self._left.add(sid)

    def left_elsewhere(self, rel: bytes, older_than: int | None = None) -> dict[str, bytes]:
        """The entries recovery left that would publish at a path other than ``rel`` (and
        were acknowledged before ``older_than``, if given): staging id -> path. Empty but
        after a failed recovery."""
        return {sid: e.path for sid in self._left
                if (e := self.entries.get(sid)) is not None and e.path and e.path != rel
                and self._may_be_published(sid, e)
                and (older_than is None or e.acked_ns < older_than)}

    def older_than(self, data: OpenFile) -> int | None:
        """What a publish of this file's data supersedes at its other names: for data an
        earlier run acknowledged (recovery's, published late), the entries acknowledged before
        it (a newer entry of the file that recovery left must stay); None, all of them, for
        data acknowledged or changed in this run, newer than anything a recovery left."""
        entry = self.entry_of(data)
        if entry is None or data.staging_id not in self._earlier:
            return None
        return entry.acked_ns

    def supersede(self, sid: str) -> None:
        """Newer content of the file an entry belongs to went home through another of its
        names: the entry must never be published (then the caller syncs)."""
        if (entry := self.entries.get(sid)) is not None:
            self._lost_name(sid, entry)

    def _may_be_published(self, sid: str, entry: Entry) -> bool:
        """Whether recovery may publish an entry as the index or the log may hold it: as it
        is now, or closed as it was recorded before a publish took that back in memory."""
        return entry.may_be_published() or sid in self._maybe_closed

    def _lost_name(self, sid: str, entry: Entry) -> bool:
        could = self._may_be_published(sid, entry)
        entry.lose_name()
        self.record(sid, entry)
        return could

    def repoint(self, sid: str, rel: bytes | None) -> bool:
        """An entry's file is now at ``rel`` (None: it has no name left, and its data must
        never be published). Returns whether the entry said its data may be published."""
        entry = self.entries.get(sid)
        if entry is None:
            return False
        could = self._may_be_published(sid, entry)
        entry.path, entry.move = (rel if rel is not None else b""), None
        if rel is None:
            entry.closed, entry.acked = False, None
        self.record(sid, entry)
        return could

    # -- what happens to an open file's staged data ---------------------------------------

    def entry_of(self, data: OpenFile) -> Entry | None:
        """The journal entry of a file's staged data, if it has one."""
        return None if data.staging_id is None else self.entries.get(data.staging_id)

    def mark_closed(self, data: OpenFile) -> None:
        """The last writer closed the file: its staged content may be published, and will
        be by recovery if a crash comes first."""
        entry = self.entry_of(data)
        if entry is None:
            return
        entry.closed, entry.acked = True, None
        entry.size, entry.atime_ns, entry.mtime_ns = data.size, data.atime_ns, data.mtime_ns
        entry.acked_ns = self._stamp()
        self._earlier.discard(data.staging_id)  # (this run's data now)
        self.update(data.staging_id, entry)

    async def acknowledge(self, data: OpenFile) -> None:
        """A write-back close (or a truncate no writer will close): ``mark_closed``, and
        return once that survives a crash of tierfs, logged (``acklog``) rather than committed:
        a commit is an fdatasync, and a crash of the system loses such data anyway."""
        acks = self.acks
        if (self._acks_queued is not None and acks.size > acklog.LIMIT
                and not self.batch.covers(self._acks_queued)):
            await self.sync()  # a steady stream of closes: the log must not grow for ever
        # No await from here to the record: it is the state acknowledged, under the file's
        # staging id as it is now.
        self.mark_closed(data)
        entry = self.entry_of(data)
        if entry is None:
            await self.sync()
            return
        assert data.staging_id is not None
        if not self._log(data.staging_id, entry):
            await self.sync()
            if self._acks_queued is not None and self.batch.covers(self._acks_queued):
                with contextlib.suppress(OSError):
                    acks.empty()  # (only when no other close's record is still needed)

    def _log(self, sid: str, entry: Entry) -> bool:
        """Append an entry's state to the log, to be applied over the index's at recovery if
        no commit covers it by then; False if the log failed (the caller commits). Never
        before ``recovered``: until then the log holds the last run's records, which a
        commit of a newer number would mark as held by the index before recovery has
        recorded them."""
        if self._acks_queued is None:
            return False
        acks = self.acks
        if self._acks_queued is not None and acks.size and self.batch.covers(self._acks_queued):
            acks.empty()
        try:
            seq = acks.append(sid, entry.encode())
        except OSError as e:
            log.error("the acknowledgement log failed, committing instead: %s", e)
            return False
        self.batch.put("meta", acklog.META_KEY, pack_u64(seq))
        if self._acks_queued is not None:
            self._acks_queued = self.batch.position
        return True

    def close(self) -> None:
        self.acks.close()

    async def taken_over(self, entries: dict[str, Entry], untrusted: set[str]) -> None:
        """Recovery starts from ``entries`` (the index's, with the log's records applied over
        them, ``load``): commit them as they are, with the log's last number, before recovery
        records anything. A commit of recovery's (an upload's parts, a key moved at its
        completion) then holds the log's records; without this, a mount after a recovery
        killed midway applied them again over it: the parts forgotten, though punched from
        staging (their holes uploaded again, as zeros), the moved key forgotten. Into the
        index only: the entries join ``entries`` as recovery records each one, in its order
        (a publish supersedes only older entries at its path, ``superseded``). ``untrusted``:
        the entries staged before a restart of the system, kept so until recovery is done
        (``REBOOT_PENDING``)."""
        for sid, entry in entries.items():
            self.batch.put(DB, sid.encode(), entry)
        self.batch.put("meta", acklog.META_KEY, pack_u64(self.acks.seq))
        self._untrusted = untrusted & entries.keys()
        self._earlier = set(entries)
        self._mark_untrusted(self._untrusted)
        await self.sync()

    def would_publish(self, data: OpenFile) -> bool:
        """Whether recovery would publish the file's staged data as its entry says now."""
        entry = self.entry_of(data)
        return entry is not None and publishable(entry, data.staging_id in self._untrusted
                                                 ) is not None

    def _mark_untrusted(self, sids: set[str]) -> None:
        if sids:
            self.batch.put("meta", REBOOT_PENDING, "\n".join(sorted(sids)).encode())
        else:
            self.batch.delete("meta", REBOOT_PENDING)

    async def recovered(self) -> None:
        """Recovery has applied the log's records: commit the result with the number of the
        last of them (no later mount applies them again) and empty the log, which from now
        on is emptied whenever a commit covers it."""
        self.batch.put("meta", acklog.META_KEY, pack_u64(self.acks.seq))
        # What a restart left and recovery kept (neither published nor set aside: a failure)
        # is still untrusted at the next mount.
        self._mark_untrusted(self._untrusted & self.entries.keys())
        await self.sync()
        await self._run(self.acks.empty)
        # Only now: a record appended while the log was emptied would be lost with it.
        self._acks_queued = self.batch.position

    async def times_changed(self, data: OpenFile) -> None:
        """Times were set on staged data: if a close acknowledged it, they go with it."""
        entry = self.entry_of(data)
        if entry is not None and entry.closed:
            entry.atime_ns, entry.mtime_ns = data.atime_ns, data.mtime_ns
            self.update(data.staging_id, entry)
            await self.sync()

    async def reopened(self, data: OpenFile, offset: int, cutting: bool = False) -> Reopened:
        """Staged content is about to change from ``offset`` on (a write there, or a cut to
        it): content a close had released may not be published as it is any more (it would
        be half-written), but for what it acknowledged below ``offset`` when only appended
        to (``Entry.acked``). Returns once the index no longer says otherwise: an entry that
        was closed (published since, or taken back here) would otherwise be published by
        recovery with the new writes in it. Returns what it took back, for ``unreopened``."""
        entry = self.entry_of(data)
        if entry is None:
            return None
        self._earlier.discard(data.staging_id)  # (changed in this run)
        if data.staging_id in self._untrusted:
            # Staged data of the boot before a restart changes in this one: what the next
            # close acknowledges is this boot's, to be trusted as such at the next mount.
            self._untrusted.discard(data.staging_id)
            self._mark_untrusted(self._untrusted & self.entries.keys())
            await self.sync()
        before = (entry.closed, entry.synced, entry.acked)
        # Not streaming, ``synced`` says only "closed data flushed at its size" (a failed
        # publish flushed it, ``keep_staged``), and it may outlive the close (kept staging
        # after a publish by copy): a change below it makes that untrue, and is recorded
        # durably first, or after a power loss recovery would take the bytes rewritten since
        # for flushed. Once, since it goes with it; a cut of data not closed lowers it itself.
        flushed_below = (entry.upload is None and entry.synced is not None
                         and offset < entry.synced)
        if entry.closed:
            entry.closed = False
            # (A flushed size stays true below ``offset``: taken back below, durably, if the
            # change is below it, whether the entry was closed or not.)
            if offset >= entry.size:
                entry.acked = entry.size  # (the bytes a recovery would publish stay)
            self.update(data.staging_id, entry)
        elif entry.acked is not None and offset < entry.acked:
            entry.acked = None
            self.update(data.staging_id, entry)
        if cutting and not before[0]:
            flushed_below = False  # (``cut`` lowers it, durably)
        elif flushed_below and entry.synced is not None:
            entry.synced = None  # (not a stream: only "closed data flushed at its size")
            self.update(data.staging_id, entry)
        if flushed_below:
            await self.sync(durable=True)
        elif data.staging_id in self._maybe_closed and (
                not entry.may_be_published()
                or (before != (entry.closed, entry.synced, entry.acked)
                    and publishable(entry, False) != _publishable_as(entry, before))):
            # (Still publishable as a stream's fsynced size, but no longer at the size the
            # index may say: that too is committed before staging changes.)
            await self.sync()
        after = (entry.closed, entry.synced, entry.acked)
        # (A cut: what ``cut`` changes next is taken back too, ``as_now``.)
        return (before, after) if before != after or cutting else None

    def as_now(self, data: OpenFile, taken: Reopened) -> Reopened:
        """``taken`` with the entry's state as it is now: what the caller changed since
        ``reopened`` (a ``cut``) is undone too."""
        entry = self.entry_of(data)
        if taken is None or entry is None:
            return taken
        return taken[0], (entry.closed, entry.synced, entry.acked)

    async def unreopened(self, data: OpenFile, taken: Reopened) -> None:
        """The change ``reopened`` announced did not happen (the write failed, staging is as
        it was): what it took back is acknowledged again, as the index said before it, or a
        crash now would lose what a close acknowledged to a write that changed nothing. Only
        if nothing changed the entry meanwhile: a close acknowledged while the write waited
        (it takes no lock) stands."""
        entry = self.entry_of(data)
        if taken is None or entry is None:
            return
        before, after = taken
        if (entry.closed, entry.synced, entry.acked) != after:
            return
        entry.closed, entry.synced, entry.acked = before
        self.update(data.staging_id, entry)
        # A flushed size taken back durably comes back durably (staging is as it was).
        await self.sync(durable=before[1] is not None and before[1] != after[1])

    async def cut(self, data: OpenFile, size: int) -> None:
        """The staged data is about to be cut to ``size``. A flushed size past it would no
        longer say what is on the hot disk: blocks written there again are new, and after a
        power loss may come back as zeros, so recovery after a reboot must not take them for
        flushed (the rest of the file up to the cut was, and stays so). Lowered durably before
        the cut, as ``flushed`` raised it: a completion that trusts it (``cold.publish``) must
        find the journal saying so after a power loss too."""
        entry = self.entry_of(data)
        if entry is not None and entry.synced is not None and size < entry.synced:
            entry.synced = size
            self.update(data.staging_id, entry)
            await self.sync(durable=True)

    def mark_published(self, data: OpenFile) -> bool:
        """The staged content is home: recovery has nothing to publish for it. Returns
        whether the caller must wait for a commit before it acknowledges the publish: the
        index may hold a prefix of it as acknowledged (``Entry.acked``), which recovery would
        publish over it from the staging file a publish by copy keeps. Where the index or the
        log may say the data closed and that staging file stays (by copy: a handle may keep
        it past the publish, a reader or a writer that reopened it), the change is logged
        (``acklog``): a crash before the next batch would otherwise have recovery publish it
        again, over whatever another node put there since."""
        entry = self.entry_of(data)
        if entry is None:
            return False
        if not (entry.closed or entry.acked is not None):
            # (A stream's fsynced size whose upload was dropped: the index may still say so.)
            sid = data.staging_id
            return sid in self._maybe_closed and sid in self._unclosed_at
        had_prefix = entry.acked is not None
        entry.closed, entry.acked = False, None
        entry.replaces = None
        self.update(data.staging_id, entry)
        sid = data.staging_id
        if (not had_prefix and data.staged and sid in self._maybe_closed
                and self.entries.get(sid) is entry):
            return not self._log(sid, entry)
        return had_prefix

    def forget_upload(self, data: OpenFile) -> None:
        """A file's multipart upload was aborted; its data is still staged."""
        entry = self.entry_of(data)
        if entry is not None and entry.upload is not None:
            entry.upload = None
            self.update(data.staging_id, entry)

    async def keep_staged(self, data: OpenFile) -> None:
        """Publishing closed data failed, and it stays staged until a later try: flush it to
        the hot disk and say so in the journal, so that it outlives a restart of the system
        too (after one, recovery publishes only staged data known to be on disk)."""
        entry = self.entry_of(data)
        if (entry is None or not entry.closed or entry.synced == entry.size
                or data.staging_fd is None):
            await self.sync()
            return
        # Not under the file's lock: a write meanwhile reopens the entry (and a close then
        # stamps it anew), and may have landed after the fdatasync began.
        closed_at = entry.acked_ns
        try:
            await self._run(os.fdatasync, data.staging_fd)
        except OSError as e:
            log.error("flushing the staged data of %s to the hot disk failed: %s",
                      data.staging_id, e)
            await self.sync()
            return
        if self.entry_of(data) is not entry or not entry.closed or entry.acked_ns != closed_at:
            await self.sync()  # (the next failed publish flushes it again)
            return
        entry.synced = entry.size
        self.update(data.staging_id, entry)
        await self.sync(durable=True)

    async def flushed(self, data: OpenFile) -> None:
        """The staged data as it is now is on the hot disk, and the journal says so, durably:
        recovery publishes a file streaming to the bucket up to here even if no writer closed
        it (an fsync's promise; and a publish made while writers keep the file open, whose
        completion may replace the object the file's stub names)."""
        entry = self.entry_of(data)
        if entry is None or data.staging_fd is None:
            return
        # The size before the fdatasync: a write meanwhile (another thread of the writer)
        # may not have reached the disk; a truncate meanwhile only shortens what is synced.
        size = data.size
        await self._run(os.fdatasync, data.staging_fd)
        entry.synced = min(size, data.size)
        entry.acked_ns = self._stamp()
        self._earlier.discard(data.staging_id)
        self.update(data.staging_id, entry)
        await self.sync(durable=True)

    def part_recorder(self, sid: str) -> Callable[[dict[int, str | None]], Awaitable[None]]:
        """Make parts durable in the journal: a completed part (number -> receipt) before its
        bytes may leave staging, and a part whose staged bytes are about to change (number ->
        None) forgotten before they do, so recovery never resumes from a part that no longer
        matches the staged file."""

        async def record(parts: dict[int, str | None]) -> None:
            entry = self.entries.get(sid)
            if entry is None or entry.upload is None:
                return
            for number, receipt in parts.items():
                if receipt is None:
                    entry.upload.parts.pop(number, None)
                else:
                    entry.upload.parts[number] = receipt
            self.record(sid, entry)
            await self.sync()

        return record

    def key_recorder(self, sid: str) -> Callable[[str], Awaitable[None]]:
        """Make an upload's new key durable before the upload completes there (a local folder
        that could no longer make its key: ``StreamingUpload._complete``): a crash after the
        completion leaves recovery to find the object by its key and the upload's token; and
        the key, held by the entry, is no other upload's (``ColdPublisher.pick_key``)."""

        async def record(key: str) -> None:
            entry = self.entries.get(sid)
            if entry is None or entry.upload is None:
                return
            entry.upload.key = key
            self.record(sid, entry)
            await self.sync(durable=True)

        return record


def _publishable_as(entry: Entry, state: State) -> int | None:
    """What recovery would publish of ``entry`` had it ``state`` (after a crash of tierfs)."""
    closed, synced, acked = state
    return publishable(dataclasses.replace(entry, closed=closed, synced=synced, acked=acked),
                       False)
