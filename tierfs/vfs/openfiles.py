"""Open files: open, create, flush, fsync and release, and the handles that hold an open
file's state.

The open-file state (``core.openfile``) is shared by every handle of an inode and retired by
the last holder (``let_go``): a handle from open to release, a truncate by path for the time it
stages its change, a write-back until its data is home. What to do with the data at each step
(publish, keep staged, hand to write-back) is the write package's; this module decides only
when, from what the caller was promised (durability mode, close or fsync).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
import time

import trio

from tierfs.core.attrs import Attrs, SetAttr, attrs_of, err, stage_times, version
from tierfs.core.context import Core
from tierfs.core.inodes import Inode, PageVersion, identity, key_ids
from tierfs.core.openfile import OpenFile, warm_id
from tierfs.vfs.names import Names
from tierfs.vfs.namespace import Namespace
from tierfs.write.journal import Journal
from tierfs.write.publish import Publisher
from tierfs.write.staging import Staging
from tierfs.write.writeback import WriteBack
from tierfs.write.writer import Writer

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Handle:
    fh: int
    inode: Inode
    data: OpenFile
    writable: bool
    append: bool
    direct: bool


class OpenFiles:
    def __init__(self, core: Core, journal: Journal, namespace: Namespace, staging: Staging,
                 writer: Writer, publisher: Publisher, writeback: WriteBack) -> None:
        self.core = core
        self.journal = journal
        self.namespace = namespace
        self.staging = staging
        self.writer = writer
        self.publisher = publisher
        self.writeback = writeback
        self.handles: dict[int, Handle] = {}
        self.names = Names(core, journal, namespace)

    # -- open and create ------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> tuple[int, bool, bool]:
        """Open a file: (handle, keep the kernel's cached pages, direct I/O)."""
        core = self.core
        inode = core.inodes[ino]
        if inode.is_dir:
            raise err(errno.EISDIR)
        cached: PageVersion | None
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        # The open-file state is shared by every handle of the inode, and retired (by the
        # last release or the end of a write-back) once no handle holds it: after each wait
        # below, make sure it is still the inode's before making a handle on it.
        while True:
            data = inode.data
            if data is None:
                known = self._from_memory(inode, flags)
                if known is not None:
                    data, cached = known
                    inode.data = data
                    break
                data, cached = await self._open_state(inode)
                if inode.data is not None:  # another open made one meanwhile: share that
                    if data.warm_fd is not None:
                        await core.warm.run(os.close, data.warm_fd)
                    continue
                inode.data = data
            else:
                cached = inode.cached_version
                if writable and self.writeback.acknowledged(inode, data):
                    # What the last close acknowledged must reach home before new writes
                    # change the staging file under it (a crash would otherwise lose both).
                    await self.publisher.publish(inode, data)
                    if inode.data is not data:
                        continue  # that write-back ended meanwhile and retired the state
            break
        keep_cache = cached is not None and cached == inode.cached_version
        if keep_cache and data.warm_deferred:
            data.kept_pages = True
        inode.cached_version = cached
        handle = self._new_handle(inode, data, flags)
        if flags & os.O_TRUNC:
            try:
                if handle.writable:
                    async with data.lock:
                        await self.writer.truncate(inode, data, 0)
                else:
                    # O_RDONLY | O_TRUNC truncates on Linux (the kernel checked write
                    # permission): a truncate with no writer, published at the last let-go.
                    await self.truncate(inode, SetAttr(), 0)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self.release(handle.fh)  # (the open fails: nobody will close it)
                raise
            keep_cache = False
        return handle.fh, keep_cache, handle.direct

    def _from_memory(self, inode: Inode, flags: int
                     ) -> tuple[OpenFile, PageVersion] | None:
        """New open-file state for a read-only open of a warm file whose attributes were
        read less than ``attr_timeout`` ago (``Inode.seen``), without a warm call: the warm
        file is opened when a call needs it (``Core.open_warm``). An open then sees another
        node's close within ``attr_timeout``, as a stat does through the kernel's cache.
        None when the open must go to the warm tier."""
        core = self.core
        seen = inode.seen
        if (seen is None or flags & (os.O_ACCMODE | os.O_TRUNC) != os.O_RDONLY
                or inode.stub is not None or not core.ns_lock.quiet
                or time.monotonic() - seen[0] > core.config.attr_timeout
                or not stat.S_ISREG(seen[1].st_mode)):
            return None
        st = seen[1]
        return (OpenFile(base=st, warm_id=warm_id(st), warm_deferred=True),
                version(st, inode.key))

    async def _open_state(self, inode: Inode) -> tuple[OpenFile, PageVersion | None]:
        """New open-file state for an inode that has none, and the version of its content
        (for the kernel's cached pages)."""
        core = self.core
        cold = inode.stub is not None
        async with core.ns_lock.shared():
            rel = core.inodes.path(inode)
            if cold:
                st, target = await core.warm.run(core.warm.lstat_link, rel)
            else:
                try:
                    fd, st = await core.warm.run(core.warm.open_read, rel)
                except OSError as e:
                    if e.errno != errno.ELOOP:
                        raise
                    # Now a stub or a link (another node demoted it, or anyone linked there):
                    # the kernel looks the name up again, as for any other kind of file there.
                    raise err(errno.ESTALE) from None
        if cold:
            inode.stub = stub = core.parse_stub(st, target, rel)
            if stub is None:
                raise err(errno.ESTALE)  # no longer a stub: the kernel will look it up again
            # Before any of the object's data is served: the link's owner and the stub's mode
            # are whoever made the link's (docs/stubs.md, "Owners").
            await self.namespace.owners.check(stub, st, rel)
            # Under the lock: a promotion swaps the file in under it, having seen no open
            # state, and this waits for its end instead of passing it midway.
            async with core.ns_lock.shared():
                if inode.stub != stub or core.rel_or_none(inode) is None:
                    # The check waited on the bucket, and an unlink or a promotion through
                    # this mount came meanwhile: it saw no open state, so the object may be
                    # gone (an unlink deletes it at once, a promotion after bringing the
                    # file back). The caller makes the state its own before another await.
                    raise err(errno.ESTALE)
            return (OpenFile(stub=stub, base=st),
                    (stub.size, stub.mtime_ns, 0, stub.etag.encode()))
        return OpenFile(warm_fd=fd, base=st, warm_id=warm_id(st)), version(st, inode.key)

    async def _check_stub(self, inode: Inode) -> None:
        """Refuse a cold file whose stub does not match its object's recorded owner and mode
        (``core.ownership``), as at open. The stub checked is the one read here, and it
        becomes the inode's: what is staged after is that stub's object, never one the
        inode remembered from before (the link may have been swapped since, by its owner)."""
        core = self.core
        async with core.ns_lock.shared():
            rel = core.rel_or_none(inode)
            if rel is None:
                return  # unlinked: only an open handle reaches it, checked at its open
            st, target = await core.warm.run(core.warm.lstat_link, rel)
        if identity(st) != inode.key:
            raise err(errno.ESTALE)  # (another file holds its name now: not this one's)
        inode.stub = stub = core.parse_stub(st, target, rel)
        if stub is None:
            raise err(errno.ESTALE)
        await self.namespace.owners.check(stub, st, rel)
        if inode.stub != stub or core.rel_or_none(inode) is None:
            raise err(errno.ESTALE)  # (changed while the bucket was asked: look again)

    def _new_handle(self, inode: Inode, data: OpenFile, flags: int) -> Handle:
        accmode = flags & os.O_ACCMODE
        handle = Handle(next(self.core.handle_numbers), inode, data,
                        writable=accmode in (os.O_WRONLY, os.O_RDWR),
                        append=bool(flags & os.O_APPEND), direct=bool(flags & os.O_DIRECT))
        self.hold(inode, data, handle.writable)
        self.handles[handle.fh] = handle
        return handle

    async def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int, gid: int
                     ) -> tuple[int, bool, Inode, Attrs]:
        try:
            return await self._create_new(parent, name, mode, flags, uid, gid)
        except FileExistsError:
            if flags & os.O_EXCL:
                raise
            # The kernel sends a create only for a name its lookup just found absent, and
            # another node made it in between. Without O_EXCL, open(2) must open what is
            # there: ESTALE makes the kernel walk the path again, look the name up afresh
            # and open the file as any open, with its own checks (permissions through every
            # group, symlinks, protected files), none of which this call could make alike.
            # It does so once: a name made and removed again at each step fails with ESTALE.
            raise err(errno.ESTALE) from None

    async def _create_new(self, parent: int, name: bytes, mode: int, flags: int, uid: int,
                          gid: int) -> tuple[int, bool, Inode, Attrs]:
        core = self.core
        self.namespace.check_name(name)
        if core.namings.child(parent, name) is not None:
            await core.namings.settle()  # (found absent before its create: made again here)
        self.writeback.busy()  # (write-back publishes wait: this create goes to the warm tier)
        ns = self.namespace
        core.forget_dir_attrs(create=True)  # the directory changes during the call
        async with core.ns_lock.shared():
            # (Read under the lock: a chmod or chown of the directory is made under it
            # exclusively, and forgets them.)
            known = core.made_in_attrs(parent)
            if known is not None and self.names.later(flags):
                inode, attrs, data = self.names.pending(parent, name, mode, uid, gid, known)
                handle = self._new_handle(inode, data, flags)
                return handle.fh, handle.direct, inode, attrs
            warm_fd, st, persisted, xattrs, parent_st, _ = await core.warm.run(
                self.names.make, core.inodes.child_path(parent, name), known, mode, uid, gid,
                False)
            core.forget_dir_attrs(create=True)  # (another change may have come)
            core.remember_dir(parent, parent_st)
            inode, attrs = ns.entry(parent, name, st, persisted)
        if xattrs is not None:
            core.remember_xattrs(inode, xattrs)
        # Staging starts at the first write: a file created empty never needs it.
        data = OpenFile(warm_fd=warm_fd, base=st, atime_ns=st.st_atime_ns,
                        mtime_ns=st.st_mtime_ns, created=True)
        inode.data = data
        inode.cached_version = None
        handle = self._new_handle(inode, data, flags)
        return handle.fh, handle.direct, inode, attrs

    # -- writes ---------------------------------------------------------------------------

    async def write(self, fh: int, offset: int, buf: bytes) -> int:
        handle = self.handles[fh]
        self.writeback.busy()
        # (A close of a descriptor sharing this one, after dup or fork, may have acknowledged
        # what is staged: ``Journal.reopened`` keeps it under an append and takes it back,
        # committed, before a write into it. Not a publish first: for a shell's redirected
        # log, every child's exit would cost the next write a publish of the whole file.)
        return await self.writer.write(handle.inode, handle.data, offset, buf,
                                       append=handle.append, direct=handle.direct)

    async def truncate(self, inode: Inode, changes: SetAttr, size: int) -> None:
        """A new size for a file with open state or a cold file: staged, cut, and published
        at the last let-go, as at a last close."""
        data = inode.data
        if data is None:
            data = inode.data = OpenFile(stub=inode.stub)
        # Held for the change: a last release meanwhile leaves the publishing of it (and the
        # retiring of the state) to the end of this call.
        self.hold(inode, data)
        try:
            async with data.lock:
                await self.writer.truncate(inode, data, size)
                stage_times(data, changes)  # before the let-go may publish
                if data.writers == 0:
                    # No writer to close it: the truncate is acknowledged as a close is, and
                    # recovery publishes it (write-back; sync mode if its publish fails).
                    if self.core.config.durability == "writeback":
                        await self.journal.acknowledge(data)
                    else:
                        self.journal.mark_closed(data)
        finally:
            await self.let_go(inode, data)

    async def resize(self, inode: Inode, changes: SetAttr) -> SetAttr:
        """A setattr's new size; returns the rest of the changes."""
        core = self.core
        core.forget_dir_attrs()
        assert changes.size is not None
        # As for an open for writing: what the last close acknowledged reaches home before a
        # truncate changes it (and a file that went to the bucket is cold then).
        while (data := inode.data) is not None and self.writeback.acknowledged(inode, data):
            await self.publisher.publish(inode, data)
        self.writeback.poke(inode)
        rest = dataclasses.replace(changes, size=None)
        if inode.stub is not None and not (inode.data is not None and inode.data.staged):
            # A new size for a cold file: staged, cut there and published at the last let-go
            # (back to the warm tier below the large-file threshold, else a new object).
            if changes.size != inode.stub.size:
                await self._check_stub(inode)  # (its data is staged from the object)
                await self.truncate(inode, rest, changes.size)
            return rest
        if inode.is_dir:
            raise err(errno.EISDIR)
        if inode.data is None:
            # Held exclusively, as for any attribute change: no open is answered from memory
            # meanwhile (``NamespaceLock.quiet``), from attributes the truncate is changing,
            # nor made from a stat of the file before it.
            async with core.ns_lock:
                if inode.data is None:  # (an open that was under way: staged with it below)
                    if (rel := core.rel_or_none(inode)) is not None:
                        await core.warm.run(core.warm.truncate, rel, changes.size,
                                            key_ids(inode.key))
                        # Staged data kept at this path for a later try (its publish failed,
                        # at recovery or unmount) is older than this change: never published
                        # over it.
                        if self.journal.superseded(rel, None):
                            await self.journal.sync()
                        if await self.publisher.supersede_links(rel):  # (its other names)
                            await self.journal.sync()
                        # Changed here: an open must look again, and attributes a stat read
                        # across the change are not remembered (``Core.seen_mark``).
                        inode.attr_changes += 1
                        inode.seen = None
                    return rest
        await self.truncate(inode, changes, changes.size)
        return rest

    # -- close ----------------------------------------------------------------------------

    async def named(self, handle: Handle) -> None:
        """Until a new file's name is made on the warm tier (``core.naming``); if it could
        not be, the error, for a writer (its data has nowhere to go)."""
        namings = self.core.namings
        await namings.wait(handle.inode)
        failure = namings.failure(handle.inode)
        if failure is not None and handle.writable:
            raise failure

    async def flush(self, fh: int) -> None:
        handle = self.handles[fh]
        await self.named(handle)  # (another node sees the name once close returns)
        data = handle.data
        if not handle.writable:
            return
        self.writeback.busy()
        if data.error is not None and data.writers <= 1:
            error, data.error = data.error, None
            raise error  # a write-back publish failed since the last close: say so once
        if not data.dirty:
            return
        if data.upload is not None and data.writers > 1:
            await self._upload_idle(data)  # another writer goes on: the object is not done
            return
        if data.writers <= 1:
            if self.core.config.durability == "writeback" and handle.inode.links:
                # Staged and journaled is enough: the last release hands it to write-back.
                # (A file with no name left is published now, if anywhere: its journal entry
                # can find no file at recovery.)
                await self.journal.acknowledge(data)
                return
            self.journal.mark_closed(data)
        try:
            await self.publisher.publish(handle.inode, data)
        except OSError:
            # The writer hears of it; the staged data is kept, and durably so, for the next
            # close, fsync or mount to try again.
            await self.journal.keep_staged(data)
            raise

    async def fsync(self, fh: int) -> None:
        handle = self.handles[fh]
        await self.named(handle)
        data = handle.data
        if data.upload is not None and data.writers:
            # What was cut into parts is stored; the object appears when the last writer
            # closes, or at recovery after a crash (the journal keeps the fsynced size). With
            # no writer left (closed, write-back), fsync completes the object below.
            # The tail not yet cut into parts is on the hot disk only: flushed first, under
            # the lock too, so that the size recorded is what the fdatasync covered.
            async with data.lock:
                if data.upload is not None:
                    await data.upload.wait_idle()
                await self.journal.flushed(data)
        elif data.dirty:
            await self.publisher.publish(handle.inode, data)

    @staticmethod
    async def _upload_idle(data: OpenFile) -> None:
        """The parts cut so far stored (``StreamingUpload.wait_idle``, which tries failed
        ones again), under the file's lock: a write or truncate meanwhile would change the
        parts it sends."""
        async with data.lock:
            if data.upload is not None:
                await data.upload.wait_idle()

    async def release(self, fh: int) -> None:
        await self.core.namings.wait(self.handles[fh].inode)
        handle = self.handles.pop(fh)
        if handle.data.handles <= 1:
            self.core.namings.forget(handle.inode)  # (a failed name no close heard: logged)
        if handle.data.reader is not None:
            handle.data.reader.closed(fh)
        await self.let_go(handle.inode, handle.data, handle.writable)

    def hold(self, inode: Inode, data: OpenFile, writable: bool = False) -> None:
        """Keep an inode's open-file state alive: a handle does, and so does an operation
        that stages a change without one (a truncate by path) until ``let_go``."""
        data.handles += 1
        data.writers += writable
        if writable:
            self.writeback.poke(inode)  # (its write-back, if any, ends: the writer's now)
        self.core.inodes.opened(inode)

    async def let_go(self, inode: Inode, data: OpenFile, writable: bool = False) -> None:
        """The end of a ``hold``; the last one publishes what is staged (write-back: in the
        background) and retires the state."""
        data.handles -= 1
        data.writers -= writable
        try:
            if data.handles == 0:
                if (data.dirty and self.core.has_home(inode)
                        and self.core.config.durability == "writeback"):
                    self.writeback.start(inode, data)
                    return
                if data.dirty:
                    self.writeback.releasing[inode.ino] = (inode, data)
                    try:
                        await self.publisher.publish(inode, data)
                    except OSError as e:
                        log.error("publishing inode %d failed at release; staged data kept "
                                  "as %s, tried again in the background: %s",
                                  inode.ino, data.staging_id, e)
                        await self.journal.keep_staged(data)
                        # Its close said EIO; the data goes on as a write-back's would: read
                        # here as written, and home once the tier answers (not at the next
                        # mount only, with the old content read here until then). Not with
                        # names made elsewhere alone: no path for recovery, it is set aside.
                        if inode.links:
                            self.writeback.start(inode, data)
                    finally:
                        self.writeback.releasing.pop(inode.ino, None)
                # (Something that took hold of the state during that publish retires it.)
                if (not self.writeback.holds(inode) and data.handles == 0
                        and inode.data is data):
                    await self.staging.retire(inode, data)
            elif (data.writers == 0 and self.core.has_home(inode)
                    and self.writeback.acknowledged(inode, data)):
                # The last writer's close (or a truncate no writer will close), readers still
                # holding it: published as after any last close, not when the last reader
                # goes (which may be never).
                self.writeback.start(inode, data)
        finally:
            self.core.inodes.closed(inode)

    async def lost_name(self, inode: Inode | None) -> None:
        """After an unlink or a rename over a name: a file whose staged data no writer will
        close again (write-back waits to publish it) and whose names left are all made
        elsewhere (``OpenFile.linked_elsewhere``) is published now. Its journal entry lost
        its path with the name, so a crash before the background publish would lose it. A
        failure is logged: write-back tries again."""
        if (inode is None or inode.links or (data := inode.data) is None
                or not data.linked_elsewhere or data.writers or not data.dirty):
            return
        try:
            await self.publisher.publish(inode, data)
        except OSError as e:
            log.error("publishing inode %d through its other names failed: %s", inode.ino, e)

    def attrs(self, inode: Inode) -> Attrs | None:
        """An open file's attributes from memory (None: not open, or not known)."""
        data = inode.data
        if data is not None and data.base is not None:
            return attrs_of(inode, data.base)
        return None

    async def publish_all(self) -> list[tuple[Inode, OSError]]:
        """Publish whatever is still dirty (a handle the kernel never released, write-back
        files not yet home): at unmount. What could not be published, after trying all."""
        failed: list[tuple[Inode, OSError]] = []
        for handle in list(self.handles.values()):
            if handle.data.dirty:
                try:
                    await self.publisher.publish(handle.inode, handle.data)
                except OSError as e:
                    failed.append((handle.inode, e))
        # (Write-back's own call: its files waiting for a quiet moment go now too.)
        failed += await self.writeback.publish_all()
        return failed

