"""Recovery at mount: finish or undo what the journal says was in flight when tierfs stopped.

For every journal entry, by what a writer was told:

- Closed (the last writer's close returned, in write-back mode, or a sync-mode publish failed):
  the data is published now, by the very code a live close uses (``Publisher.publish``):
  recovery finds the file's inode by its path, rebuilds its open-file state from the entry
  (staging file, size, times, the object it replaces, and a resumed multipart upload whose
  completed parts are not sent again) and publishes it. So a file finished after a crash
  gets what a live close gives it: its own mode on the warm tier or in its stub, and an
  object carrying its mode, mtime and upload token. A file whose name is gone from the warm
  tier (removed by another node) is not brought back: its data is set aside.
- A file streaming to the bucket that was fsynced and not closed: its upload is completed
  with the content up to the fsynced size.
- Otherwise (a writer still had it open, or it is already home): nothing of it may appear
  under the file's name. Its staging file is removed and its multipart upload, if any, aborted.

That is after tierfs itself stopped (a crash, SIGKILL): the staged bytes were in the page cache,
which outlives the process. After the system restarted (a new boot id; power loss, a kernel
panic), staged bytes that were never flushed to disk may be missing or zeros, and publishing
them would replace a good file with a torn one. Then only what was flushed is used: closed data
whose publish had failed (flushed then, ``synced``), and the fsynced prefix of a file streaming
to the bucket. Other closed data is set aside in ``<hot>/lost+found`` with a note, the file
keeps what it had, and the log says so: write-back data not yet home is lost with the node, as
docs/semantics.md says, but never published torn.

Then staging files that no entry names are removed. Multipart uploads are aborted only where
the journal says they are this node's: its upload ids, and, for an upload whose creation was
journaled but whose id was not (a crash in between, or a lost reply), the uploads of that key
that hold no part, since its id is committed before any part goes up. Another node may be
writing the same file to the same key: an upload of its with parts is left alone, and one
without loses nothing (its writer starts another when its first part finds it gone).

Recovery runs on the event loop before the mount serves requests, so nobody sees a file
half-recovered. Temp files left on the warm tier by a crash are removed afterwards, in the
background (``purge_temps``), since that means walking the namespace.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat

from tierfs.paths import show
from tierfs.core.context import Core
from tierfs.core.inodes import ROOT_INODE, Inode, identity
from tierfs.core.openfile import DataState, OpenFile
from tierfs.objects.base import ObjectStoreError
from tierfs.tiers.scan import is_internal
from tierfs.tiers.beneath import join
from tierfs.transfer.streaming import StreamingUpload, part_size
from tierfs.write.entries import LOST, Entry, Move, Upload, load, publishable, untrusted_of
from tierfs.write.journal import Journal
from tierfs.write.publish import Publisher
from tierfs.write.staging import Staging
from tierfs.write.writeback import WriteBack

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    published: int = 0
    uploaded: int = 0
    discarded: int = 0
    aborted: int = 0
    orphans: int = 0
    set_aside: int = 0
    #: Uploads the bucket dropped unfinished after some of their bytes had left staging.
    lost: int = 0
    failed: int = 0


class Recovery:
    def __init__(self, core: Core, journal_: Journal, publisher: Publisher,
                 staging: Staging, writeback: WriteBack) -> None:
        self.core = core
        self.journal = journal_
        self.publisher = publisher
        self.staging = staging
        self.writeback = writeback
        #: Each path's newest entry recovery publishes (only its state may live on).
        self._newest: dict[bytes, str] = {}
        #: Acknowledged data whose publish failed here, by inode number: (staging id, inode,
        #: state), held on the inode until every entry is done, then handed to the write-back
        #: task (``_publish``), unless a newer entry of the same file supersedes it first.
        self._held: dict[int, tuple[str, Inode, OpenFile]] = {}

    async def run(self, rebooted: bool = False) -> Report:
        core = self.core
        report = Report()
        entries = await core.hot.run(load, core.index, self.journal.acks.path)
        await self._settle_moves(entries)
        untrusted = await core.hot.run(untrusted_of, core.index, entries, rebooted)
        await self.journal.taken_over(entries, untrusted)
        staged = set(await core.hot.run(core.hot.staged_ids))
        for sid in sorted(staged - entries.keys()):
            await core.hot.run(core.hot.remove_staging, sid)
            report.orphans += 1
        # Oldest acknowledgement first: a later publish at the same path supersedes an earlier
        # one (``Journal.superseded``), never the other way round.
        ordered = sorted(entries.items(), key=lambda item: (item[1].acked_ns, item[0]))
        self._newest = {entry.path: sid for sid, entry in ordered
                        if sid in staged and publishable(entry, sid in untrusted) is not None}
        try:
            await self._each(ordered, staged, untrusted, report)
        finally:
            for _, inode, data in self._held.values():
                self.writeback.start(inode, data)
                self.core.inodes.closed(inode)
            self._held.clear()
        await self.journal.recovered()  # (commits)
        if any(dataclasses.astuple(report)):
            log.warning("recovery: %s", report)
        return report

    async def _settle_moves(self, entries: dict[str, Entry]) -> None:
        """Renames under way at the crash (``Move``): made or not, as the warm tier says now
        (what is at the old path), and the entries each concerns follow it as a live
        rename's do (``Entry.renamed``)."""
        moves = {entry.move for entry in entries.values() if entry.move is not None}
        if not moves:
            return

        def made(move: Move) -> bool:
            try:
                return move.made(identity(self.core.warm.lstat(move.old)))
            except (FileNotFoundError, NotADirectoryError):
                return move.made(None)
            except OSError:
                return False  # (cannot tell: the entry stays where it was)

        done = {move: await self.core.warm.run(made, move) for move in moves}
        for entry in entries.values():
            move, entry.move = entry.move, None
            if move is not None and done[move] and \
                    entry.renamed(move.old, move.new, move.exchange) == LOST:
                entry.lose_name()

    async def _each(self, ordered: list[tuple[str, Entry]], staged: set[str],
                    untrusted: set[str], report: Report) -> None:
        """Publish, keep or discard each entry, in ``ordered``'s order (``run``)."""
        core = self.core
        for sid, entry in ordered:
            rebooted = sid in untrusted  # (staged before a restart of the system)
            try:
                size = publishable(entry, rebooted)
                if size is not None and sid in staged and entry.upload is not None and (
                        size in (entry.synced, entry.acked)
                        and (not entry.closed or size < entry.size)):
                    # (A closed entry never past its size: its last recorded part may be a
                    # short tail ending there, which ``_past_parts`` takes for a whole one.)
                    grown = await self._past_parts(sid, entry, size, rebooted)
                    size = min(grown, entry.size) if entry.closed else grown
                if size is not None and sid in staged:
                    # What recovery publishes is the file's content now (its writer is
                    # gone), promised as a close's: should this publish fail, a new writer
                    # or truncate publishes it first (``WriteBack.acknowledged``).
                    entry.size, entry.closed = size, True
                    self.journal.record(sid, entry)
                    await self._publish(sid, entry, report)
                    continue
                if entry.upload is not None:
                    report.aborted += await self._abort(entry.upload)
                if (rebooted and (entry.closed or entry.acked is not None) and entry.path
                        and sid in staged):
                    await self._set_aside(sid, entry, "the system restarted before the closed "
                                          "data of %s was home or flushed to disk")
                    report.set_aside += 1
                else:
                    await core.hot.run(core.hot.remove_staging, sid)
                    report.discarded += 1
            except (OSError, ObjectStoreError) as e:
                # Kept for another try (in the background if its publish failed, else at the
                # next mount); the mount itself goes on.
                log.error("recovery of %s (staged as %s) failed, kept for another try: %s",
                          show(entry.path), sid, e)
                report.failed += 1
                self.journal.record(sid, entry)  # (it may have come from the log alone)
                if all(held[0] != sid for held in self._held.values()):
                    self.journal.left(sid)
                continue
            self.journal.drop(sid)

    async def _past_parts(self, sid: str, entry: Entry, size: int, rebooted: bool
                          ) -> int:
        """The size to publish a streaming file at whose fsynced (or acknowledged) size
        ``size`` recovery publishes: that, or the end of the last part the journal records as
        uploaded if that is further (written after it): that part is stored whole, and its bytes may
        have left staging, so the object cannot end inside it. Bytes written after an fsync
        may be there after a crash, as on any file system; only where staging held them all,
        and after a restart of the system only across recorded parts from the one holding
        ``size`` on (staged bytes past an fsync may not have reached the disk)."""
        upload = entry.upload
        if upload is None or not upload.parts:
            return size
        ends, at = [], 0
        for n in range(1, max(upload.parts) + 1):
            at += part_size(upload.first_part, n)
            ends.append(at)
        end = ends[-1]
        if end <= size:
            return size
        if rebooted:
            n = next(i for i, e in enumerate(ends, 1) if e > size)  # (the part holding it)
            end = size
            while n in upload.parts:
                end = ends[n - 1]
                n += 1
            if end == size:
                return size
        try:
            staged = await self.core.hot.run(
                lambda: os.stat(self.core.hot.staging_dir / sid).st_size)
        except OSError:
            return size
        return end if staged >= end else size

    async def _publish(self, sid: str, entry: Entry, report: Report) -> None:
        """Publish one closed (or fsynced) entry as a live close would."""
        core = self.core
        found = await self._resolve(entry.path)
        if found is None:
            try:
                await self._set_aside(sid, entry, "the name %s is gone from the warm tier (or "
                                      "is not a file any more): its staged data is not "
                                      "published")
            except BaseException:
                # Never published where another node may make a new file of that name: kept
                # nameless, it is discarded at the next mount, as the removal of its name
                # through the mount would have made it.
                self.journal.repoint(sid, None)
                raise
            report.set_aside += 1
            # (As for any entry not published: its upload aborted, the entry dropped; kept,
            # it stayed in the journal, closed, for the life of the mount, and its upload
            # in the bucket until the next.)
            if entry.upload is not None:
                try:
                    report.aborted += await self._abort(entry.upload)
                except BaseException:
                    # Kept for the abort alone: nameless, so that no mount publishes it
                    # where another node may make a new file of that name.
                    self.journal.repoint(sid, None)
                    raise
            self.journal.drop(sid)
            return
        chain, st = found
        inode = chain[-1]
        try:
            older = self._held.pop(inode.ino, None)
            if older is not None:
                await self._superseded(*older)
            assert inode.data is None  # (before the mount serves: nothing is open)
            fd = await core.hot.run(_open_staging, core, sid)
        except BaseException:
            for held in reversed(chain):
                core.inodes.closed(held)
            raise
        data = OpenFile(stub=inode.stub, base=st, staging_id=sid, staging_fd=fd,
                        size=entry.size, written=entry.size, atime_ns=entry.atime_ns,
                        mtime_ns=entry.mtime_ns, replaces_object=entry.replaces)
        data.to(DataState.STAGED)
        data.changed()
        inode.data = data  # (the inode is held in the table by ``chain`` meanwhile)
        retried = False
        try:
            upload = entry.upload
            if upload is not None:
                if upload.upload_id is None:
                    # Created (perhaps) but never recorded: start afresh, as a live writer
                    # would.
                    await self._abort(upload)
                    entry.upload = None
                    self.journal.record(sid, entry)
                else:
                    assert core.nursery is not None
                    data.upload = StreamingUpload(
                        core.cold, core.hot, core.nursery, fd, upload.key, upload.upload_id,
                        upload.first_part, core.config.upload_window,
                        self.journal.part_recorder(sid), upload.token, done=upload.parts,
                        checksum=upload.checksum, on_key=self.journal.key_recorder(sid))
            await self.publisher.publish(inode, data)
        except OSError:
            if sid not in self.journal.entries:
                report.lost += 1  # the bucket dropped the upload after parts left staging
                return
            # Acknowledged data: read here as written from now on, and published by the
            # write-back task once the tier answers, as after a live close whose publish
            # failed. Left to the next mount alone, the file read as before all along, and a
            # change made to that through the mount superseded it. Not if a newer entry at
            # its path follows: that one's publish supersedes it. Handed over once every
            # entry is done: a newer entry of this file may follow at another of its names (a
            # hard link), and must find the inode free and supersede this one
            # (``_superseded``); started now, the write-back task could publish this data
            # over the newer meanwhile, or still hold the inode when that entry comes.
            if self._newest.get(entry.path) == sid:
                retried = True
                self._held[inode.ino] = (sid, inode, data)
                core.inodes.opened(inode)  # (kept in the table, as ``WriteBack.start`` does)
            raise
        finally:
            if not retried:
                await self.staging.retire(inode, data)
            for held in reversed(chain):
                core.inodes.closed(held)
        if data.stub is not None:  # (now a stub: it went to the bucket)
            report.uploaded += 1
        else:
            report.published += 1
        log.info("recovery: published %s", show(entry.path))

    async def _superseded(self, sid: str, inode: Inode, data: OpenFile) -> None:
        """A newer entry of a file whose older entry failed to publish here follows at another
        of its names (a hard link: resolved to the same inode): that data, the whole file
        acknowledged later, is what the file must read, so the older is never published, now
        or at a later mount, as a publish at its path would have superseded it
        (``Journal.superseded``, which looks at one name only). Its staging file goes at the
        next mount."""
        self.journal.repoint(sid, None)
        try:
            await self.staging.retire(inode, data)
        finally:
            self.core.inodes.closed(inode)

    async def _resolve(self, rel: bytes) -> tuple[list[Inode], os.stat_result] | None:
        """The inodes of a path's components, held (``opened``) in the inode table as a
        lookup would find them, without a kernel lookup, and the file's attributes; None if a
        component is gone or the file is not a regular file or a stub."""
        core = self.core
        chain: list[Inode] = []
        parent = ROOT_INODE
        names = [n for n in rel.split(b"/") if n]
        here = b""
        try:
            for i, name in enumerate(names):
                here = join(here, name) if here else name
                try:
                    st, target, persisted = await core.warm.run(self._probe, here)
                except (FileNotFoundError, NotADirectoryError):
                    break
                last = i == len(names) - 1
                stub = core.parse_stub(st, target, here) if last else None
                if not last and not stat.S_ISDIR(st.st_mode):
                    break
                if last and stub is None and not stat.S_ISREG(st.st_mode):
                    break
                inode = core.inodes.resolve(parent, name, st, persisted,
                                            stat.S_IFREG if stub is not None else None)
                core.inodes.opened(inode)
                chain.append(inode)
                if last:
                    inode.stub = stub
                    return chain, st
                parent = inode.ino
        except BaseException:
            for held in reversed(chain):
                core.inodes.closed(held)
            raise
        for held in reversed(chain):
            core.inodes.closed(held)
        return None

    def _probe(self, rel: bytes) -> tuple[os.stat_result, bytes | None, int | None]:
        st, target = self.core.warm.lstat_link(rel)
        return st, target, self.core.inodes.persisted_number(identity(st))

    async def _set_aside(self, sid: str, entry: Entry, why: str) -> None:
        """Keep staged data that must not be published in lost+found, with its journal entry
        as a note, for a person; the file keeps its previous content. ``why`` names the path
        (%s)."""
        kept = await self.core.hot.run(self.core.hot.set_aside, sid, entry.encode())
        log.error("recovery: " + why + "; the file keeps its previous content, the staged "
                  "copy (perhaps incomplete) is kept as %s", show(entry.path), kept)

    async def _abort(self, upload: Upload) -> int:
        """Abort an unfinished upload of this node; returns how many were aborted. Without
        its id, the key's uploads that hold no part (see the module's docstring)."""
        cold = self.core.cold
        store = cold.store
        ids = [upload.upload_id] if upload.upload_id else [
            uid for key, uid in await cold.run(store.list_multipart, upload.key)
            if key == upload.key and not await cold.run(store.has_parts, key, uid)]
        for uid in ids:
            await cold.run(store.abort_multipart, upload.key, uid)  # (gone already: no error)
        return len(ids)


def _open_staging(core: Core, sid: str) -> int:
    return os.open(core.hot.staging_dir / sid, os.O_RDWR | os.O_CLOEXEC)


def purge_temps(core: Core) -> int:
    """Remove this node's temp files from the whole namespace (blocking; after a crash),
    but for those of this run: publishes made since the mount started write them."""
    removed = 0
    pending = [b"."]
    while pending:
        here = pending.pop()
        try:
            names = _list(core, here)
        except OSError:
            continue
        for name in names:
            child = join(here, name)
            if (is_internal(name) and core.warm.is_ours(name)
                    and not core.warm.of_this_run(name)):
                try:
                    core.warm.unlink(child)
                    removed += 1
                except OSError:
                    pass
                continue
            try:
                if stat.S_ISDIR(core.warm.lstat(child).st_mode):
                    pending.append(child)
            except OSError:
                continue
    return removed


def _list(core: Core, rel: bytes) -> list[bytes]:
    fd = core.warm.open_dir(rel)
    try:
        return [os.fsencode(n) for n in os.listdir(fd)]
    finally:
        os.close(fd)
