"""Moving whole files between the warm tier and the bucket: demotion (a warm file uploaded and
replaced by its stub) and promotion (a cold file brought back to the warm tier).

A demotion is asked for by the warm quota (``run_quota``: past ``warm_quota``, the least
recently used files of at least ``demote_min_size``, oldest first), by ``tierfs demote`` or
by ``tierfs scan --demote``. Its steps, in this order:

1. The warm file is opened, reached without following a symbolic link (``warmswap``), and
   its attributes read (size, mtime, ctime, device and inode number). A file open through
   this mount, one with staged data waiting to be published, a hard-linked or empty file,
   another user's (unless the mount runs as root), one with extended attributes (a stub
   cannot keep them) or one a rule keeps warm is left alone.
2. The object's key is chosen as every object's is (``ColdPublisher.pick_key``), and a record
   of the demotion (path, key, the file's attributes) is committed to the index, durably,
   before the upload is created.
3. The file is uploaded through the same multipart machinery as a streaming write
   (``ColdPublisher.upload_whole``), its parts read from the warm descriptor.
4. The record is marked "swap", durably.
5. Under the namespace lock, in one warm-tier call: the file at its name and the descriptor
   are checked to be the file that was uploaded, unchanged (device, inode number, size, mtime
   and ctime); then the stub (owned by the file's owner) is renamed over it. Otherwise, or if
   the file is open through this mount by then, the object is deleted: a writer on any node
   wins.
6. The record is dropped.

A crash (SIGKILL) anywhere leaves the warm file or a stub naming a complete object, never
neither: the stub is put in place only after the object is complete, by one rename. At the
next mount (``recover``) a record still in its upload step means the swap never happened:
the object (if completed: one carrying the record's token) is deleted and unfinished uploads
of its key aborted. A record in its swap step whose path holds a stub naming its key is a
finished demotion; one whose path still holds the very file uploaded is undone (the object
deleted); anything else (the path changed by someone meanwhile) keeps the object, which is
then at worst garbage, logged with its key.

A promotion downloads the object into a temp file beside the stub, gives it the stub's owner,
mode and mtime, and renames it over the stub if the stub is still the same (identity and
target); the object is deleted after. A crash leaves the stub (and a temp file the next mount
removes) or the file (and an object that is then garbage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import secrets
import signal
import stat
from collections.abc import Awaitable, Callable

import trio

from tierfs.core.attrs import err
from tierfs.core.context import Core
from tierfs.core.inodes import Inode, identity, identity_of
from tierfs.core.ownership import Owners, owner_metadata
from tierfs.index import pack_u64
from tierfs.objects.base import NoSuchObject, ObjectStoreError
from tierfs.paths import show
from tierfs.stubs import MAX_SIZE, Stub
from tierfs.transfer.streaming import UPLOAD_TOKEN
from tierfs.tiers.base import pwrite_all
from tierfs.tiers.scan import is_internal, is_silly_renamed
from tierfs.tiers.beneath import SwapUnsure, split
from tierfs.write import warmswap
from tierfs.write.cold import ColdPublisher
from tierfs.write.journal import Journal
from tierfs.write.placement import WARM
from tierfs.write.warmscan import Offer, walk

log = logging.getLogger(__name__)

#: Demotion records live in the index's ``meta`` database under this prefix.
RECORD_PREFIX = b"demoting/"
#: Most walks of the warm tree one pass of the quota makes, each a page of the least recently
#: used files past the last (``warmscan.KEEP`` a page): a bound, as anyone may touch files.
QUOTA_PAGES = 16
#: Demotions under way at once, for the quota and the commands together: each one uploads
#: at most ``upload_window`` parts at a time, so this bounds the bytes in flight.
AT_ONCE = 1


@dataclasses.dataclass
class Record:
    """What the index says about a demotion under way."""

    path: bytes
    key: str
    token: str
    phase: str  # "upload", then "swap"
    dev: int
    ino: int
    size: int
    #: The file's times when it was opened (None in records of an older tierfs).
    mtime_ns: int | None = None
    ctime_ns: int | None = None

    def is_file(self, st: os.stat_result) -> bool:
        """Whether ``st`` is the very file this demotion uploaded, unchanged. Not device and
        inode number alone: a file made after the swap may reuse the number."""
        return (stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino, st.st_size)
                == (self.dev, self.ino, self.size)
                and self.mtime_ns in (None, st.st_mtime_ns)
                and self.ctime_ns in (None, st.st_ctime_ns))

    def encode(self) -> bytes:
        return json.dumps({**dataclasses.asdict(self), "path": os.fsdecode(self.path)}
                          ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Record:
        data = json.loads(raw)
        data["path"] = os.fsencode(data["path"])
        return cls(**data)


@dataclasses.dataclass
class Outcome:
    """What became of one path: ``done`` or not, and why not."""

    path: bytes
    size: int
    done: bool
    why: str = ""

    def to_json(self) -> dict[str, object]:
        return {"path": show(self.path), "size": self.size, "done": self.done, "why": self.why}


class Demoter:
    def __init__(self, core: Core, journal: Journal, cold: ColdPublisher) -> None:
        self.core = core
        self.journal = journal
        self.cold = cold
        self.owners = Owners(core)
        self.slots = trio.Semaphore(AT_ONCE)
        #: Paths being demoted or promoted now (a second request for one is refused).
        self.busy: set[bytes] = set()
        #: Awaited between the steps of a demotion or promotion with the step's name
        #: ("recorded", "uploaded", "swap", "swapped", "downloaded"): where the crash tests
        #: stop one. None in a mount.
        self.at_step: Callable[[str], Awaitable[None]] | None = None
        # A demotion holds a lease on the warm file (``warmswap.read_lease``); the kernel
        # tells of its break by SIGIO, whose default action would end the daemon.
        with contextlib.suppress(ValueError):  # (not the main thread: a test's own loop)
            signal.signal(signal.SIGIO, signal.SIG_IGN)

    # -- demotion ---------------------------------------------------------------------------

    async def demote(self, rel: bytes) -> Outcome:
        """Move one warm file to the bucket, leaving its stub (see the module's docstring)."""
        if rel in self.busy:
            return Outcome(rel, 0, False, "already being moved")
        self.busy.add(rel)
        try:
            async with self.slots:
                return await self._demote(rel)
        finally:
            self.busy.discard(rel)

    def _refusal(self, rel: bytes, st: os.stat_result, xattrs: list[str],
                 written_here: bool) -> str | None:
        if not stat.S_ISREG(st.st_mode):
            return "not a plain file on the warm tier"
        if st.st_nlink != 1:
            return "hard-linked (a stub cannot stand for one of several names)"
        if is_silly_renamed(split(rel)[1]) or is_internal(split(rel)[1]):
            return "a file a client or tierfs is about to remove or rename"
        if st.st_size == 0:
            return "empty"
        if st.st_size > MAX_SIZE:
            return "larger than the bucket's largest object"
        if not self.core.as_root and st.st_uid != os.geteuid():
            return "another user's (only a mount run as root can give its stub that owner)"
        if xattrs:
            return "has extended attributes (a stub cannot keep them)"
        if written_here:
            return "open for writing on this node, outside the mount"
        if self.cold.placement.rule_for(rel) == WARM:
            return "a rule keeps it on the warm tier"
        if rel in self.core.cache.pins.values():
            # (Its hot blocks are the warm version's: the object would start cold.)
            return "pinned on the hot tier (unpin it first)"
        return self._in_use(rel, st)

    def _in_use(self, rel: bytes, st: os.stat_result) -> str | None:
        inode = self.core.inodes.known(identity(st))
        if inode is not None and inode.data is not None:
            return "open through this mount"
        if any(e.path == rel for e in self.journal.entries.values()):
            return "being written through this mount"
        return None

    async def _step(self, name: str) -> None:
        if self.at_step is not None:
            await self.at_step(name)

    async def _demote(self, rel: bytes) -> Outcome:
        core = self.core
        try:
            f = await core.warm.run(warmswap.open_plain, core.warm, rel)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # (no symbolic link is followed)
                return Outcome(rel, 0, False, "a symbolic link (a stub: already in the bucket), "
                               "or one on the way")
            return Outcome(rel, 0, False, e.strerror or str(e))
        try:
            why = self._refusal(rel, f.st, f.xattrs, f.written_here)
            if why is not None:
                return Outcome(rel, f.st.st_size, False, why)
            try:
                key = await self.cold.pick_key(rel, None, unique=True)
            except ObjectStoreError as e:
                return Outcome(rel, f.st.st_size, False, f"the bucket: {e}")
            self.cold.held.add(key)
            try:
                return await self._upload_and_swap(rel, f, key)
            finally:
                self.cold.held.discard(key)
        finally:
            with trio.CancelScope(shield=True):
                await core.warm.run(f.close)

    async def _upload_and_swap(self, rel: bytes, f: warmswap.Opened, key: str) -> Outcome:
        core = self.core
        fd, st = f.fd, f.st
        record = Record(rel, key, secrets.token_hex(8), "upload", st.st_dev, st.st_ino,
                        st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        await self._save(record)
        await self._step("recorded")
        metadata = {"mode": f"{stat.S_IMODE(st.st_mode) & 0o777:04o}",
                    "mtime-ns": str(st.st_mtime_ns), **owner_metadata(st)}
        try:
            info = await self.cold.upload_whole(fd, core.warm, key, st.st_size, metadata,
                                                record.token)
        except (ObjectStoreError, OSError) as e:
            await self._undo(record)
            if not warmswap.same(st, await core.warm.run(os.fstat, fd)):  # (cut short, say)
                log.info("demoting %s: the file changed while it was uploaded; the upload "
                         "is discarded", show(rel))
                core.counters.add("demotions_discarded")
                return Outcome(rel, st.st_size, False, "the file changed while it was uploaded")
            log.error("demoting %s: the upload failed: %s", show(rel), e)
            return Outcome(rel, st.st_size, False, f"upload failed: {e}")
        if info.size != st.st_size:
            log.error("demoting %s: the bucket reports %d bytes for %s, %d were uploaded",
                      show(rel), info.size, key, st.st_size)
            await self._undo(record)
            return Outcome(rel, st.st_size, False, "the bucket reports another size")
        await self._step("uploaded")
        record.phase = "swap"
        await self._save(record)
        await self._step("swap")
        stub = Stub(info.key, info.size, info.etag, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        try:
            why = await self._swap(rel, f, stub)
        except SwapUnsure as e:
            log.error("demoting %s: %s", show(rel), e)
            self.core.forget_dir_attrs()
            swapped = await self._settle_swap(record)
            if swapped is None:
                return Outcome(rel, st.st_size, False, str(e))
            async with core.ns_lock:
                await self._keep_number(core.inodes.known(identity(st)), st, swapped, stub)
            return Outcome(rel, st.st_size, True)
        except OSError as e:  # (the warm tier refused the stub: nothing was swapped)
            log.error("demoting %s: the stub could not be put in place: %s", show(rel), e)
            why = f"the stub could not be put in place: {e.strerror or e}"
        if why is not None:
            log.info("demoting %s: %s; the upload is discarded", show(rel), why)
            core.counters.add("demotions_discarded")
            await self._undo(record)
            return Outcome(rel, st.st_size, False, why)
        await self._step("swapped")
        self._done(record)
        return Outcome(rel, st.st_size, True)

    def _done(self, record: Record) -> None:
        core = self.core
        core.batch.delete("meta", RECORD_PREFIX + record.token.encode())
        core.counters.add("demotions")
        core.counters.add("bytes_demoted", record.size)
        log.info("demoted %s to %s (%d bytes)", show(record.path), record.key, record.size)

    async def _swap(self, rel: bytes, f: warmswap.Opened, stub: Stub) -> str | None:
        """Put the stub in place of the file if it is still the file uploaded, unchanged;
        otherwise say why not."""
        core = self.core
        st = f.st
        async with core.ns_lock:
            why = self._in_use(rel, st)
            if why is not None:
                return why
            inode = core.inodes.known(identity(st))
            target = stub.encode(core.config.bucket)
            if inode is None:
                new = await core.warm.run(warmswap.swap_in_stub, core.warm, f, target)
                if new is not None:
                    await self._keep_number(None, st, new, stub)
            else:
                with core.inodes.replacing(inode):
                    new = await core.warm.run(warmswap.swap_in_stub, core.warm, f, target)
                    if new is not None:
                        await self._keep_number(inode, st, new, stub)
            core.forget_dir_attrs()
        if new is None:
            return "the file changed while it was uploaded"
        return None

    async def _keep_number(self, inode: Inode | None, old: os.stat_result,
                           new: os.stat_result, stub: Stub | None) -> None:
        """What replaced a file (its stub, or the file its stub) is the same file to the
        kernel: the inode in memory (``inode``) rekeyed to it, or, for one not in memory,
        the number an earlier lookup gave it carried over."""
        if inode is None:
            await self._carry_number(identity(old), identity(new))
        else:
            self._replaced(inode, new, stub)

    def _replaced(self, inode: Inode, st: os.stat_result, stub: Stub | None) -> None:
        core = self.core
        core.inodes.rekey(inode, st)
        inode.stub = stub
        inode.cached_version = None
        core.invalidate_attrs(inode.ino)

    async def _carry_number(self, old: bytes, new: bytes) -> None:
        """A file not in memory was replaced (by its stub, or its stub by it; ``old`` and
        ``new``: their identities): the number an earlier lookup gave it goes to what
        replaced it, so tools that cache inode numbers (git, rsync) see the same file."""
        core = self.core
        number = await core.hot.run(core.inodes.persisted_number, old)
        if number is not None:
            core.batch.delete("inodes", old)
            core.batch.put("inodes", new, pack_u64(number))

    async def _save(self, record: Record) -> None:
        core = self.core
        core.batch.put("meta", RECORD_PREFIX + record.token.encode(), record.encode())
        await core.batch.sync(core.hot.run, durable=True)

    async def _undo(self, record: Record, crashed: bool = False) -> None:
        """The demotion will not happen: its object (if any) goes, then its record. While
        the bucket cannot be reached the record stays, for the next mount to try again, and
        says first that the swap is known not to have happened: a file changed at the path
        by then must not make the next mount keep the object for it."""
        with trio.CancelScope(shield=True):
            if record.phase == "swap":
                record.phase = "upload"
                try:
                    await self._save(record)
                except OSError as e:  # (a full hot disk: the delete is tried all the same)
                    log.warning("could not record that the demotion of %s is undone: %s",
                                show(record.path), e)
            if await self._delete_own(record, crashed):
                self.core.batch.delete("meta", RECORD_PREFIX + record.token.encode())

    async def _delete_own(self, record: Record, crashed: bool) -> bool:
        """Delete the object at the record's key if it is the one this demotion made (its
        token). After a crash (``crashed``), unfinished uploads of the key are aborted too:
        the upload's id was never recorded, and its key was this node's (as recovery does
        for a write's upload created just before a crash)."""
        core = self.core
        store = core.cold.store
        try:
            if crashed:
                for key, upload_id in await core.cold.run(store.list_multipart, record.key):
                    if key == record.key:
                        await core.cold.run(store.abort_multipart, key, upload_id)
            info = await core.cold.run(store.head, record.key)
            if info.metadata.get(UPLOAD_TOKEN) == record.token:
                await core.cold.run(store.delete, record.key)
        except NoSuchObject:
            return True
        except ObjectStoreError as e:
            log.error("could not remove the object %s of an undone demotion (tried again at "
                      "the next mount): %s", record.key, e)
            return False
        return True

    # -- after a crash ----------------------------------------------------------------------

    async def recover(self) -> int:
        """Finish or undo the demotions the index says were under way (at mount, before
        serving). Returns how many records there were."""
        core = self.core
        items = await core.hot.run(core.index.items, "meta")
        records = [Record.decode(v) for k, v in items if k.startswith(RECORD_PREFIX)]
        for record in records:
            await self._recover_one(record)
        if records:
            await core.batch.sync(core.hot.run, durable=True)
        return len(records)

    async def _recover_one(self, record: Record) -> None:
        if record.phase == "swap":
            await self._settle_swap(record, crashed=True)
            return
        log.info("recovery: the demotion of %s did not finish; the file stays on the warm "
                 "tier", show(record.path))
        await self._undo(record, crashed=True)

    async def _settle_swap(self, record: Record, crashed: bool = False
                           ) -> os.stat_result | None:
        """Whether a demotion whose swap may or may not have happened (a crash, or an error
        at or after its rename) did: the stub's attributes if so, else None. The path holds
        a stub naming its key: done. It holds the very file uploaded: undone, the object
        deleted. Anything else (the stub moved at once, the path replaced) keeps the object,
        which another name may need: at worst garbage. The record is dropped, or kept for the
        next mount while the warm tier cannot say or the object could not be deleted."""
        core = self.core
        try:
            st, target = await core.warm.run(core.warm.lstat_link, record.path)
        except (FileNotFoundError, NotADirectoryError):
            st, target = None, None
        except OSError as e:
            log.error("the demotion of %s is settled at the next mount (the warm tier: %s)",
                      show(record.path), e)
            return None
        if st is not None and target is not None:
            try:
                stub = core.parse_stub(st, target, record.path)
            except OSError:
                stub = None
            if stub is not None and stub.key == record.key:
                if crashed:
                    # The number the file had, carried to its stub at the swap, was in the
                    # batch the crash lost: carried again (none if it reached the index).
                    await self._carry_number(identity_of(record.dev, record.ino),
                                             identity(st))
                self._done(record)
                return st
        if st is None or not record.is_file(st):
            log.warning("%s changed during its demotion; its object %s is kept and may be "
                        "garbage", show(record.path), record.key)
            core.batch.delete("meta", RECORD_PREFIX + record.token.encode())
            return None
        log.info("the demotion of %s did not finish; the file stays on the warm tier",
                 show(record.path))
        if not crashed:
            core.counters.add("demotions_discarded")
        await self._undo(record, crashed)
        return None

    # -- promotion --------------------------------------------------------------------------

    async def promote(self, rel: bytes) -> Outcome:
        """Bring a cold file under the large-file threshold back to the warm tier."""
        if rel in self.busy:
            return Outcome(rel, 0, False, "already being moved")
        self.busy.add(rel)
        try:
            async with self.slots:
                return await self._promote(rel)
        finally:
            self.busy.discard(rel)

    async def _promote(self, rel: bytes) -> Outcome:
        try:
            return await self._bring_back(rel)
        except OSError as e:  # (the stub refused, the object unreadable, the warm tier)
            return Outcome(rel, 0, False, e.strerror or str(e))

    async def _bring_back(self, rel: bytes) -> Outcome:
        core = self.core
        try:
            found = await core.warm.run(warmswap.stub_at, core.warm, rel)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                return Outcome(rel, 0, False, "a symbolic link on the way")
            raise
        try:
            return await self._download_and_swap(rel, found)
        finally:
            with trio.CancelScope(shield=True):
                await core.warm.run(found.close)

    async def _download_and_swap(self, rel: bytes, found: warmswap.StubAt) -> Outcome:
        core = self.core
        st = found.st
        stub = core.parse_stub(st, found.target, rel)
        if stub is None:
            return Outcome(rel, st.st_size, False, "not in the bucket")
        placement = self.cold.placement
        if placement.belongs_cold(placement.rule_for(rel), stub.size):
            return Outcome(rel, stub.size, False, "belongs in the bucket (large_file_threshold "
                           "or a rule)")
        if self._in_use(rel, st) is not None:
            return Outcome(rel, stub.size, False, "open through this mount")
        if st.st_nlink != 1:  # (the object would be deleted under the other names)
            return Outcome(rel, stub.size, False, "hard-linked")
        await self.owners.check(stub, st, rel)  # (EACCES: not the object's owner's stub)
        # The stub is anyone's to write: its size is taken only if the object has it, and the
        # object is deleted after only if every byte of it came.
        try:
            info = await core.cold.run(core.cold.store.head, stub.key)
        except NoSuchObject:
            return Outcome(rel, stub.size, False, "its object is gone")
        except ObjectStoreError as e:
            raise err(errno.EIO) from e
        if (info.size, info.etag) != (stub.size, stub.etag):
            return Outcome(rel, stub.size, False, "its stub does not match its object (size "
                           f"{stub.size}, the object's {info.size})")
        fd = await core.warm.run(warmswap.new_temp, core.warm, found)
        part = core.config.part_size
        for offset in range(0, stub.size, part):
            block = await core.get_object(stub, offset, part)  # (EIO: short of the stub's)
            await core.warm.run(pwrite_all, fd, block, offset)
        await core.warm.run(warmswap.settle_temp, found, stub.size, stub.mode, stub.mtime_ns)
        await self._step("downloaded")
        async with core.ns_lock:
            inode = core.inodes.known(identity(st))
            if self._in_use(rel, st) is not None:
                new = None
            elif inode is None:
                new = await core.warm.run(warmswap.unstub, found)
                if new is not None:
                    await self._keep_number(None, st, new, None)
            else:
                with core.inodes.replacing(inode):
                    new = await core.warm.run(warmswap.unstub, found)
                    if new is not None:
                        await self._keep_number(inode, st, new, None)
            core.forget_dir_attrs()
        if new is None:
            return Outcome(rel, stub.size, False, "the stub changed while it was downloaded")
        # A promotion leaves no record for recovery: the number carried to the file is
        # committed now, not with the next batch a crash could lose.
        await self.journal.sync()
        # (Another node linking or moving the stub between unstub's look and its rename
        # loses the object: docs/semantics.md. Held across the rename to tell, the stub would
        # be silly-renamed by an NFS client and look linked after every promotion.)
        if await self.owners.may_delete(stub, st.st_uid, rel):
            await core.delete_object(stub.key, stub.etag)
        core.counters.add("promotions")
        core.counters.add("bytes_promoted", stub.size)
        log.info("promoted %s from %s (%d bytes)", show(rel), stub.key, stub.size)
        return Outcome(rel, stub.size, True)

    # -- the quota --------------------------------------------------------------------------

    async def run_quota(self) -> None:
        """Every ``demote_interval``: past ``warm_quota``, demote the least recently used
        large files until the warm tier is under it again (one at a time)."""
        config = self.core.config
        if config.warm_quota is None:
            return
        while True:
            await trio.sleep(config.demote_interval)  # (not before recovery has run)
            try:
                await self.enforce_quota()
            except Exception:  # (the next pass tries again)
                log.exception("enforcing the warm quota failed; trying again later")

    async def enforce_quota(self) -> int:
        """One pass of the quota; returns the bytes demoted."""
        core = self.core
        quota = core.config.warm_quota
        if quota is None:
            return 0
        min_size = core.config.demote_min_size
        offer = Offer(min_size, None if core.as_root else os.geteuid())
        seen = await core.warm.run(functools.partial(walk, core.warm, min_size, offer=offer))
        core.counters.set_gauge("warm_usage", seen.bytes)
        usage, excess, freed = seen.bytes, seen.bytes - quota, 0
        # Page on past files every demotion refuses (a warm rule's, ones with extended
        # attributes, open ones): else the oldest of them would take every place of each
        # pass's walk for good, and the files behind them would never be reached.
        for _ in range(QUOTA_PAGES):
            for found in seen.oldest:
                if freed >= excess:
                    break
                outcome = await self.demote(found.rel)
                if outcome.done:
                    freed += found.space
            if freed >= excess or seen.offered <= len(seen.oldest) or not seen.oldest:
                break
            seen = await core.warm.run(functools.partial(
                walk, core.warm, min_size, after=seen.oldest[-1].cursor, offer=offer))
        if excess > 0 and freed < excess:
            log.warning("the warm tier holds %d bytes of plain files, over its quota of %d; "
                        "%d bytes were demoted, no more could be", usage, quota, freed)
        return freed
