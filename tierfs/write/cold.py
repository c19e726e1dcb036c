"""Publishing to the bucket: a large file's multipart upload while it is written, its
completion at close, and the stub swapped in for the warm file.

A file that grows past the threshold (``placement``) gets an upload at once: its key is
chosen (``objects.keys``) and recorded in the journal before the upload is created, so no
crash leaves an upload nobody knows of; parts then stream from staging while the writer goes
on (``transfer.streaming``). At close the upload is completed and the stub put in place under
the namespace lock; a file that was streamed early but ended small is brought back to the warm
tier instead. Every object carries the file's mode, owner, mtime and the upload's token in its
metadata, whichever path created it (a live writer, a retry, recovery).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import time

import trio

from tierfs.paths import show
from tierfs.core.attrs import err, file_mode, mode_override
from tierfs.core.context import AttrMark, Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import DataState, OpenFile, warm_id
from tierfs.core.ownership import owner_metadata, stub_as_now
from tierfs.objects.base import (NoSuchObject, ObjectInfo, ObjectStoreError, UploadGone,
                                 key_text)
from tierfs.objects.keys import free_key, unique_key
from tierfs.stubs import Stub, stub_for
from tierfs.tiers.base import Tier, pwrite_all
from tierfs.tiers.beneath import SwapUnsure, split
from tierfs.transfer.streaming import UPLOAD_TOKEN, PartGone, StreamingUpload
from tierfs.write.entries import Entry, Upload
from tierfs.write.journal import Journal
from tierfs.write.keephot import keep_object, take_staging
from tierfs.write.placement import Placement
from tierfs.write.warm import LostItsName, WarmPublisher, drop_mirror

log = logging.getLogger(__name__)

#: Seconds before a write-back file whose upload could not start tries again.
ROUTE_RETRY = 5.0


class ColdPublisher:
    def __init__(self, core: Core, journal: Journal, warm: WarmPublisher) -> None:
        self.core = core
        self.journal = journal
        self.warm = warm
        self.placement = Placement.of(core.config)
        #: Keys of objects being made outside the journal (demotions): taken by no upload.
        self.held: set[str] = set()

    def rule(self, inode: Inode, data: OpenFile) -> str:
        """The path rule for this file, decided once, from its path when writing started."""
        if data.rule is None:
            data.rule = self.placement.rule_for(self.core.rel_or_none(inode))
        return data.rule

    async def route(self, inode: Inode, data: OpenFile, writing: bool = False) -> None:
        """Send a file that has grown past the threshold straight to the bucket, and keep its
        upload fed. ``writing``: after a writer's change, rather than at a publish. Caller
        holds ``data.lock``."""
        core = self.core
        if data.upload is None:
            rule = self.rule(inode, data)
            if (not self.placement.streams(rule, data.size, data.written,
                                           rewriting=writing and data.rewrite)
                    or core.nursery is None):
                return
            await core.namings.wait(inode)  # (its name is made first: ``core.naming``)
            rel = core.rel_or_none(inode)
            if rel is None:
                return  # unlinked: stays staged
            base = await core.fresh_base(inode, data)
            if base is not None and (base.st_nlink > 1 or await core.has_xattrs(inode, rel, base)):
                return  # hard-linked, or with xattrs: stays staged (a stub keeps neither)
            if time.monotonic() < data.route_after:
                return
            await self._start_upload(inode, data, rel)
            if data.upload is None:
                return
        await data.upload.feed(data.written)

    async def _start_upload(self, inode: Inode, data: OpenFile, rel: bytes) -> None:
        core = self.core
        config = core.config
        assert data.staging_fd is not None and data.staging_id is not None  # after staging
        metadata = {"mode": f"{file_mode(inode, data):04o}", "mtime-ns": str(data.mtime_ns)}
        if data.base is not None:  # (fresh: route took it) its stub must name this owner
            metadata.update(owner_metadata(data.base))
        entry = self.journal.entries.get(data.staging_id)
        try:
            key = await self.object_key(rel, data, entry)
            token = secrets.token_hex(8)
            if entry is not None:
                assert entry.upload is not None
                token = entry.upload.token
            metadata[UPLOAD_TOKEN] = token
            upload_id = await core.cold.run(core.cold.store.create_multipart, key, metadata,
                                            core.cold.store.part_checksum)
        except ObjectStoreError as e:
            # (A failed HEAD while choosing the key comes here before any key is chosen.)
            log.error("could not start the upload of %s: %s", show(rel), e)
            if config.durability == "writeback":
                # The writer goes on into staging; streaming is tried again later.
                data.route_after = time.monotonic() + ROUTE_RETRY
                return
            raise err(errno.EIO) from None
        if entry is not None:
            assert entry.upload is not None
            entry.upload.upload_id = upload_id
            self.journal.update(data.staging_id, entry)
            # Committed before any part goes up: without its id, recovery after a crash could
            # only abort every upload of the key, another node's writing the same file too.
            await self.journal.sync()
        await drop_mirror(core.warm, data)  # bound for the bucket, not the warm tier
        assert core.nursery is not None
        data.upload = StreamingUpload(core.cold, core.hot, core.nursery, data.staging_fd,
                                      key, upload_id, config.part_size, config.upload_window,
                                      self.journal.part_recorder(data.staging_id), token,
                                      patient=config.durability == "writeback",
                                      checksum=core.cold.store.part_checksum,
                                      on_key=self.journal.key_recorder(data.staging_id))
        data.streaming()
        log.info("streaming %s to %s (upload %s)", show(rel), key, upload_id)

    async def changing(self, inode: Inode, data: OpenFile, start: int, end: int) -> None:
        """Bytes [start, end) of a file's staged data are about to be written: parts already
        uploaded that they touch go up again before completion; if one of them has left the
        hot tier, the upload is abandoned and the write gets EIO. Caller holds
        ``data.lock``."""
        upload = data.upload
        if upload is None:
            return
        try:
            await upload.changing(start, end)
        except PartGone as e:
            await self.abandon(inode, data, e.number)
            raise err(errno.EIO) from None

    async def truncating(self, inode: Inode, data: OpenFile, size: int) -> None:
        """A file's staged data is about to be cut (or extended) to ``size``: as ``changing``."""
        upload = data.upload
        if upload is None:
            return
        try:
            await upload.truncating(size)
        except PartGone as e:
            await self.abandon(inode, data, e.number)
            raise err(errno.EIO) from None

    async def abandon(self, inode: Inode, data: OpenFile, number: int) -> None:
        """A change reached a part already punched out of staging (the hot tier was short of
        room): the file can no longer be uploaded as written. The upload is aborted, the
        journal forgets the staged data (recovery removes it), and every later write, read,
        fsync and the close get EIO; the close leaves the file as it was before
        (``publish``). Caller holds ``data.lock``."""
        core = self.core
        upload = data.upload
        assert upload is not None and data.staging_id is not None
        rel = core.rel_or_none(inode)
        log.error("%s: a write or truncate reached part %d of its upload after that part had "
                  "left the hot tier to make room: the upload is abandoned, the file keeps its "
                  "previous content, and its writer gets EIO",
                  show(rel) if rel is not None else "an unlinked file", number)
        if core.config.durability == "writeback":
            data.error = err(errno.EIO)  # its close returns before the publish: it says so
        sid = data.staging_id
        self.journal.repoint(sid, None)  # never published, not even by recovery
        await self.journal.sync()
        await upload.give_up(f"part {number} had left the hot tier")
        self.journal.drop(sid)
        if data.staging_fd is not None:  # the partial data is of no use: give the room back
            await core.hot.run(os.ftruncate, data.staging_fd, 0)

    async def _drop_abandoned(self, inode: Inode, data: OpenFile) -> None:
        """Publishing a file whose upload was abandoned: its staged data goes, the file keeps
        what it had before this writer."""
        core = self.core
        sid, fd = data.staging_id, data.staging_fd
        upload, data.upload = data.upload, None
        data.staging_id = data.staging_fd = None
        data.to(DataState.CLEAN)
        data.size = data.written = 0
        data.replaces_object = None  # (the file's stub, if any, still names it)
        inode.cached_version = None
        core.invalidate_attrs(inode.ino)
        if upload is not None:  # (its abort may have been cancelled before it was done)
            await upload.abort()
        await core.hot.run(_close_and_remove, core, sid, fd)
        if sid is not None:
            self.journal.drop(sid)

    async def object_key(self, rel: bytes, data: OpenFile, entry: Entry | None) -> str:
        """The key of a new object (``objects.keys``), recorded in the journal before its
        upload is created. Keys of uploads under way are held by their journal entries: one
        chosen by another upload while the store was asked is not taken twice."""
        core = self.core
        chosen = await self.pick_key(rel, data.replaces_object, data.staging_id)
        if entry is not None:
            entry.upload = Upload(chosen, time.time(), core.config.part_size,
                                  checksum=core.cold.store.part_checksum)
            self.journal.update(data.staging_id, entry)
            await self.journal.sync()
        return chosen

    async def pick_key(self, rel: bytes, own: str | None, sid: str | None = None,
                       unique: bool = False) -> str:
        """The key a new object for ``rel`` gets (``objects.keys.free_key``): ``own`` is the
        file's own previous object, ``sid`` the staging id whose upload asks; ``unique``:
        with a suffix even where the path is free (a demotion: nodes sharing the warm tree
        may demote one file at once, and the one whose swap loses deletes its object). The
        caller records it (journal, or ``held``) before any await that could let another
        upload choose it."""
        core = self.core
        store = core.cold.store
        key = store.fit_key(core.config.bucket.key(key_text(rel)))
        if unique:
            key = store.fit_key(unique_key(key))
        while True:
            held = self._held_keys(sid)
            chosen = await core.cold.run(free_key, store, key, own, held)
            if chosen != own and chosen in self._held_keys(sid):
                key = store.fit_key(unique_key(chosen))  # taken meanwhile: look again
                continue
            return chosen

    def _held_keys(self, sid: str | None) -> frozenset[str]:
        return frozenset(e.upload.key for s, e in self.journal.entries.items()
                         if s != sid and e.upload is not None) | self.held

    async def upload_whole(self, fd: int, source: Tier, key: str, size: int,
                           metadata: dict[str, str], token: str) -> ObjectInfo:
        """Upload ``size`` bytes of a file that is not staged (a warm file moved to the
        bucket: ``write.demote``) to ``key``, through the same multipart machinery as a
        streaming write, its parts read by ``source``'s threads and never punched. On any
        failure the upload is aborted and nothing is left in the bucket but what a
        completion that raised may have made (the caller deletes ``key``)."""
        core = self.core
        assert core.nursery is not None
        store = core.cold.store
        upload_id = await core.cold.run(store.create_multipart, key,
                                        {**metadata, UPLOAD_TOKEN: token}, store.part_checksum)

        async def no_record(parts: dict[int, str | None]) -> None:
            """Nothing to resume after a crash: a demotion starts again from its warm file."""

        upload = StreamingUpload(core.cold, core.hot, core.nursery, fd, key, upload_id,
                                 core.config.part_size, core.config.upload_window, no_record,
                                 token, checksum=store.part_checksum, source=source)
        try:
            return await upload.finish(size)
        except BaseException:
            with trio.CancelScope(shield=True):
                await upload.abort()
            raise

    async def publish(self, inode: Inode, data: OpenFile) -> None:
        """Complete a streaming upload and put its stub in place of the warm file. On failure
        the writer gets EIO and everything stays (staging, the multipart upload and its parts)
        so that the next close or fsync tries again."""
        core = self.core
        upload = data.upload
        assert upload is not None
        await drop_mirror(core.warm, data)
        since = core.attr_mark(inode)  # a change from here on is taken again below
        await core.fresh_base(inode, data)  # the stub takes the file's mode
        # Completing the upload records the tail as a part cut at this size, and may replace
        # the object the file's stub names (a cold file rewritten under its own key): a crash
        # after must find the entry closed, or, published while writers keep it open (an
        # fsync, unmount), flushed at this size, which recovery then completes it at.
        entry = self.journal.entry_of(data)
        if entry is not None and not entry.closed and entry.synced != data.size:
            await self.journal.flushed(data)
        await self.journal.sync()
        if upload.abandoned is not None:
            await self._drop_abandoned(inode, data)
            raise err(errno.EIO)  # (``abandon`` said why)
        try:
            try:
                info = await upload.finish(data.size)
            except UploadGone:
                if upload.punched:
                    await self.lose_upload(inode, data)
                    raise err(errno.EIO) from None
                log.warning("the bucket dropped the unfinished upload of %s; all of the file "
                            "is still staged: uploading it again", upload.key)
                await self.drop_upload(data)
                data.route_after = 0.0
                await self.route(inode, data)
                if data.upload is None:
                    raise err(errno.EIO) from None
                upload = data.upload
                info = await upload.finish(data.size)
        except (ObjectStoreError, OSError) as e:
            if data.state is DataState.CLEAN:
                raise  # the upload was lost (lose_upload said why)
            log.error("completing the upload of %s failed; staged data kept: %s", upload.key, e)
            raise err(errno.EIO) from None
        # The store's answer may already be another upload's to the same key (another node
        # writing the file at once), completed after ours and before the HEAD that describes
        # it: the file is that one's then, as if its stub had gone in after ours.
        theirs = info.metadata.get(UPLOAD_TOKEN) not in (None, upload.token)
        if info.size != data.size and not theirs:
            # What the store says it holds is not what was written: never the stub of a file
            # of another size (nor a "small" file brought back short and its object deleted).
            log.error("the bucket reports %d bytes for %s after its upload of %d bytes "
                      "completed; staged data kept", info.size, upload.key, data.size)
            raise err(errno.EIO)
        stub: Stub | None = stub_for(info) if theirs else Stub(
            info.key, info.size, info.etag, file_mode(inode, data), data.mtime_ns)
        fresh: int | None = None  # a descriptor on the warm file, if it comes back there
        followed = theirs  # (then staging is not the object: not kept hot)
        old: int | None = None
        assert stub is not None
        # From the swap to the rekey the name holds the new file and the inode the old one:
        # an attribute change waits meanwhile (``Namespace.setattr``), for that alone.
        swapping = trio.Event()
        brought_back = False
        try:
            if not theirs and not self.placement.belongs_cold(self.rule(inode, data), info.size):
                # Streamed early (stream_after) but small in the end: it belongs on the warm tier.
                st = await self._bring_back(inode, data, stub, since, swapping)
                stub = None
                brought_back = True
                if st is not None and inode.links:
                    # Opened now, while reads still go to staging: the switch below has no await.
                    async with core.ns_lock.shared():
                        fresh = await core.warm.run(core.warm.open, core.inodes.path(inode),
                                                    os.O_RDONLY)
            else:
                async with core.ns_lock:
                    rel = core.rel_or_none(inode)
                    if rel is None:  # unlinked while we completed it
                        st = None
                        if not data.linked_elsewhere:  # (else: see below)
                            await self._delete_own(info, upload.token)
                    else:
                        # (Another's object keeps the mode and owner its writer gave it.)
                        if not theirs:
                            stub = await stub_as_now(core, inode, data, stub, info, rel, since)
                        data.swapping = swapping
                        try:
                            st = await core.warm.run(core.warm.stub_over, rel,
                                                     stub.encode(core.config.bucket))
                        except SwapUnsure as e:  # renamed in, then not there: moved on
                            assert e.made is not None  # (published: never tried again)
                            log.warning("%s: its stub went in and is no longer there (%s); "
                                        "%s is kept for it", show(rel), e.strerror, info.key)
                            st = e.made
                        core.forget_dir_attrs()
                if st is None and rel is not None:
                    # Removed by another node meanwhile: the new content is no file's, and the old
                    # object is not this node's to delete (the file may have moved with its
                    # stub; an unlink on that node dealt with it). Nor is the new one, if it
                    # was completed over the old (its own key): a moved stub names it.
                    rewritten, data.replaces_object = data.replaces_object == info.key, None
                    if not rewritten:
                        await self._delete_own(info, upload.token)
                if st is not None:
                    ours = stub
                    stub, st = await self._follow_later_upload(inode, stub, st, upload.token)
                    followed = followed or stub is not ours  # (staging is not the object then)
            if st is None and data.linked_elsewhere and core.rel_or_none(inode) is None:
                # Unlinked meanwhile, and the names left were made elsewhere: the data goes
                # to them in place from staging (``Publisher``), not with the object; unless
                # parts of it left staging: then the object alone holds it, and is kept.
                if upload.punched:  # (never tried again: it cannot succeed)
                    await self.lose_upload(
                        inode, data, "its last name here went (names made elsewhere remain) "
                        "while the upload completed", f"that content is the object {info.key}")
                    raise err(errno.EIO)
                brought_back = False
                await self._delete_own(info, upload.token)
                data.upload = None
                self.journal.forget_upload(data)
                raise LostItsName()
            # One step, no await: a getattr between would see (and the kernel cache) neither.
            data.upload = None
            sid = fd = None
            if st is None:
                # Unlinked meanwhile (its object deleted above): a handle still open reads it
                # from staging, kept until the last one goes (``retire``), as any such file.
                self.journal.forget_upload(data)
                data.to(DataState.STAGED)
            else:
                sid, fd = data.staging_id, data.staging_fd
                data.staging_id = data.staging_fd = None
                data.to(DataState.CLEAN)
                inode.stub = data.stub = stub
                core.inodes.rekey(inode, st)
                data.base = st
                if fresh is not None:  # back on the warm tier: read it there from now on
                    old, data.warm_fd = data.warm_fd, fresh
                    data.warm_id = warm_id(st)
        finally:
            if data.swapping is swapping:
                data.swapping = None
            swapping.set()
        if brought_back:
            await self._delete_own(info, upload.token)
        inode.cached_version = None
        replaced, data.replaces_object = data.replaces_object, None
        replaced_etag = data.replaces_etag
        core.invalidate_attrs(inode.ino)
        # Written files stay hot: with the stub in place, staging becomes its cached blocks.
        taken = await take_staging(core, sid, fd, info.size,
                                   stub is not None and st is not None and not followed)
        if old is not None:
            await core.warm.run(os.close, old)
        if sid is not None:
            self.journal.drop(sid)
        if replaced not in (None, info.key):
            await core.delete_object(replaced, replaced_etag)
        if taken is not None and stub is not None:
            await keep_object(core, taken, stub, upload.missing())

    async def settle_replaced(self, inode: Inode, data: OpenFile) -> None:
        """Before a publish replaces a cold file's stub: the object it names
        (``replaces_object``) is deleted once the new content is home, or overwritten by the
        completion of an upload to the same key. Only while the name still holds that stub,
        alone: a stub hard-linked on the warm tree (``ln``, ``cp -al``: the other names need
        the object) or moved to another name by another node meanwhile keeps its object, and
        an upload to its key goes to a key of its own instead, its parts sent again from
        staging. One whose parts left staging cannot: rather than complete over the object
        the other names need, it is given up (``lose_upload``: what is staged set aside, EIO).
        A link or a move between this look and the swap still loses the old content (one warm
        call apart for a warm publish, the upload's completion for a cold one)."""
        old = data.replaces_object
        if old is None:
            return
        core = self.core
        async with core.ns_lock.shared():
            rel = core.rel_or_none(inode)
            if rel is None:
                return
            link = await core.warm.run(core.warm.lstat_link_if_any, rel)
        held = None if link is None or link[0].st_nlink != 1 else core.parse_stub(*link, rel)
        if held is not None and held.key == old:
            return
        log.info("%s no longer names the object %s alone (hard-linked, or moved by another "
                 "node): the object is left to its other names", show(rel), old)
        data.replaces_object = None
        upload = data.upload
        if upload is None or upload.key != old:
            return
        if upload.punched:
            await upload.abort()
            await self.lose_upload(inode, data, f"the object {old} has other names now, and "
                                   "its rewrite cannot complete over it")
            raise err(errno.EIO)
        await self.drop_upload(data)
        data.route_after = 0.0
        await self.route(inode, data)  # (declined, hard-linked now: to the warm tier)

    async def _delete_own(self, info: ObjectInfo, token: str) -> None:
        """Delete the object this upload (``token``) completed, unless another upload to the
        same key (another node writing the file at once) has replaced it since: that one is
        the other file's content, even where its bytes, and so its ETag, are the same."""
        core = self.core
        try:
            now = await core.cold.run(core.cold.store.head, info.key)
        except NoSuchObject:
            return
        except (ObjectStoreError, OSError) as e:
            log.error("could not check %s before deleting it (kept: at worst garbage): %s",
                      info.key, e)
            return
        if now.metadata.get(UPLOAD_TOKEN) == token:
            await core.delete_object(info.key, now.etag)

    async def _follow_later_upload(self, inode: Inode, stub: Stub, st: os.stat_result,
                                   token: str) -> tuple[Stub, os.stat_result]:
        """The stub just put in place, or the one of the object that replaced ours meanwhile.

        Another node may rewrite the file at the same moment, to the same key (the file's
        own, or a path both found free): the later completion holds the key, and whichever
        stub went in last names what the file is. If ours went in last after the other
        upload's completion, it names an object that is gone, and every node but this one
        (which still has the bytes cached) would get EIO. So once ours is in place the
        bucket is asked whose object the key holds; if it is another upload's, the name is
        pointed at that object, unless a newer stub took it meanwhile. Either way the file
        ends as the later completion wrote it.

        Ours is in place when this is called, so a failure here is logged and leaves ours:
        raised, it would skip the switch of the inode to the stub, and every attribute
        change would then find another file at the name (ESTALE) until the next publish."""
        core = self.core
        bucket = core.config.bucket
        try:
            info = await core.cold.run(core.cold.store.head, stub.key)
        except (ObjectStoreError, OSError) as e:  # (gone: deleted by a later write's publish)
            log.warning("could not check %s after its upload: %s", stub.key, e)
            return stub, st
        if info.etag == stub.etag or info.metadata.get(UPLOAD_TOKEN) == token:
            return stub, st
        later = stub_for(info)
        async with core.ns_lock:
            rel = core.rel_or_none(inode)
            if rel is None:
                return stub, st
            try:
                moved = await core.warm.run(core.warm.retarget_symlink, rel,
                                            stub.encode(bucket), later.encode(bucket))
            except OSError as e:
                log.warning("%s: could not point it at the later upload to %s: %s", show(rel),
                            stub.key, e)
                return stub, st
            core.forget_dir_attrs()
        if moved is None:
            return stub, st  # (the name changed meanwhile: the next lookup finds it)
        log.warning("%s: another upload to %s completed after this one (another node "
                    "writing the file at the same time): the file is that one's",
                    show(rel), stub.key)
        return later, moved

    async def lose_upload(self, inode: Inode, data: OpenFile,
                          why: str = "the bucket dropped the unfinished upload",
                          fate: str = "that content is lost") -> None:
        """The bucket dropped an unfinished upload after some of its parts had left staging
        (a lifecycle rule that aborts old incomplete uploads, or another client), or it cannot
        be completed (``settle_replaced``): those bytes exist nowhere else. Trying again could
        never succeed, and write-back and unmount would wait for it for ever; so the file
        keeps what it had before this write, what is still staged is set aside for a person
        (as recovery does), and the writer gets EIO. Caller holds ``data.lock``."""
        core = self.core
        if data.upload is not None:
            await data.upload.release()  # (before its descriptor is closed)
        upload, data.upload = data.upload, None
        entry = self.journal.entry_of(data)
        sid, fd = data.staging_id, data.staging_fd
        data.staging_id = data.staging_fd = None
        data.to(DataState.CLEAN)
        data.size = data.written = 0
        core.counters.add("uploads_lost")
        kept = None
        if fd is not None:
            await core.hot.run(os.close, fd)
        if sid is not None:
            note = entry.encode() if entry is not None else b""
            kept = await core.hot.run(core.hot.set_aside, sid, note)
            self.journal.drop(sid)
        inode.cached_version = None
        core.invalidate_attrs(inode.ino)
        rel = core.rel_or_none(inode)
        log.error("%s of %s (%s) after parts of it had left the hot tier: %s, the file keeps "
                  "its previous content; what was still staged is kept as %s", why,
                  show(rel) if rel is not None else "an unlinked file",
                  upload.key if upload is not None else "?", fate, kept)

    async def _bring_back(self, inode: Inode, data: OpenFile, stub: Stub, since: AttrMark,
                          swapping: trio.Event) -> os.stat_result | None:
        """Copy a completed object into a temp file beside its warm target and rename it into
        place (the bytes pass through memory only, never the hot tier). It takes the
        attributes of the file it replaces, and ``stub``'s mode if that is a stub; one
        changed during the copy is applied again at the rename, so only the rename is
        ``swapping``."""
        core = self.core
        rel = core.rel_or_none(inode)
        if rel is None:
            return None
        part = core.config.part_size
        tmp, fd = await core.warm.run(core.warm.open_temp, split(rel)[0])
        try:
            for offset in range(0, stub.size, part):
                block = await core.get_object(stub, offset, part)
                await core.warm.run(pwrite_all, fd, block, offset)
        except BaseException:
            await core.warm.run(core.warm.drop_temp, tmp, fd)
            raise
        made = await core.warm.run(core.warm.finish_temp, tmp, fd, stub.size, rel,
                                   (data.atime_ns, data.mtime_ns), mode_override(inode))
        data.swapping = swapping
        return await self.warm.rename_into_place(inode, data, tmp, made, since)

    async def drop_upload(self, data: OpenFile) -> None:
        """Abort a file's multipart upload; its data stays staged."""
        upload, data.upload = data.upload, None
        assert upload is not None
        if data.state is DataState.STREAMING:
            data.to(DataState.DIRTY)
        await upload.abort()
        self.journal.forget_upload(data)


def _close_and_remove(core: Core, sid: str | None, fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
    if sid is not None:
        core.hot.remove_staging(sid)
