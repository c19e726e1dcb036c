"""What the parts of the core share: the tiers, the index and its batch, the cache, the inode
table, the namespace lock, and the few facts every part reads (renames so far, the open
directory attributes, whether publishing renames).

Everything here changes only on the event loop. Construction (capacity of the cache, the
inode table's root, whether the tiers share a file system) is ``Core.open``'s, not the
constructor's, so the parts can be built around a core made any way a test likes.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from tierfs.paths import show
from tierfs.cache import counters as counter_names
from tierfs.cache.blocks import BlockCache
from tierfs.cache.counters import Counters
from tierfs.cache.eviction import make_policy
from tierfs.config import Config, resolve_capacity
from tierfs.core.attrs import Attrs, attrs_of, err
from tierfs.core.garbage import Garbage
from tierfs.core.inodes import ROOT_INODE, Inode, InodeTable
from tierfs.core.naming import Namings
from tierfs.core.nslock import NamespaceLock
from tierfs.core.openfile import DataState, HeldFd, OpenFile, warm_id
from tierfs.index import Batch, Index
from tierfs.objects.base import ObjectChanged, ObjectStoreError, is_copy_of
from tierfs.stubs import Stub, StubError, looks_like_stub, parse_stub
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier
from tierfs.tiers.warm import WarmTier
from tierfs.tiers.xattrs import own_xattrs

log = logging.getLogger(__name__)

#: Directories whose attributes after a create are kept for the next create (``made_in``).
MOST_MADE_IN = 256

#: (``Inode.attr_changes``, renames through the mount): see ``Core.attr_mark``.
AttrMark = tuple[int, int]
#: Bytes of cached blocks evicted when an index commit finds the hot disk full: LMDB needs
#: room for the pages a commit copies, a few MiB for the largest batches.
INDEX_ROOM = 16 * 1024 * 1024


class Core:
    def __init__(self, config: Config, hot: HotTier, warm: WarmTier, cold: ColdTier,
                 index: Index, batch: Batch, counters: Counters, cache: BlockCache,
                 inodes: InodeTable, cache_warm: bool, publish_by_rename: bool,
                 namemax: int) -> None:
        self.config = config
        self.hot = hot
        self.warm = warm
        self.cold = cold
        self.index = index
        self.batch = batch
        self.counters = counters
        self.cache = cache
        self.inodes = inodes
        #: Whether warm files are read through the block cache too.
        self.cache_warm = cache_warm
        #: The hot and warm tiers share a file system (a single disk, the zero-config
        #: default): files are published by renaming their staging file into place instead
        #: of copying it. Off for good at the first EXDEV.
        self.publish_by_rename = publish_by_rename
        self.namemax = namemax
        self.as_root = os.geteuid() == 0
        self.ns_lock = NamespaceLock()
        #: New files whose names are still being made on the warm tier (``core.naming``).
        self.namings = Namings()
        #: Deletes and aborts the bucket failed, tried again until done.
        self.garbage = Garbage(cold, batch)
        cold.abort_upload = self.garbage.abort
        #: Renames through the mount (under ``ns_lock``): see ``attr_mark``.
        self.renames = 0
        #: Renames, unlinks and rmdirs through the mount (under ``ns_lock``): a listing read
        #: before one may name files by where they were (``vfs.listing``).
        self.name_changes = 0
        #: Changes made through the mount (every one that calls ``forget_dir_attrs``, and
        #: the first write of a file): a listing read before one does not answer lookups
        #: (``vfs.listed``).
        self.changes = 0
        #: A directory's attributes as read just after tierfs created a file in it (or
        #: published one into it): the kernel drops them at every create and asks again at
        #: the next, to check permissions. Answered from here once, within attr_timeout, and
        #: forgotten at any other change made through the mount. Deadline and attributes.
        self.dir_attrs: dict[int, tuple[float, os.stat_result]] = {}
        #: The same attributes, kept past the kernel's getattr and through further creates
        #: (which change no directory's group or mode; any other change through the mount
        #: forgets them all): the next create in that directory takes its file's group from
        #: them (a set-group-ID directory's) rather than reading them again, a round trip on
        #: a network file system. Changed by another node meanwhile, they are as stale as
        #: attr_timeout lets any attribute be. At most ``MOST_MADE_IN``, the oldest go first.
        self.made_in: dict[int, tuple[float, os.stat_result]] = {}
        #: Called with an inode number when tierfs changed attributes behind the kernel's back.
        self.invalidate_attrs: Callable[[int], None] = lambda ino: None
        #: Where background tasks run: part uploads, read-ahead, write-back (set by upkeep).
        self.nursery: trio.Nursery | None = None
        #: Staging files being removed (set when done): a write that finds the hot disk full
        #: waits for them, since a writer's close returns before its release frees staging.
        self.staging_going: set[trio.Event] = set()
        #: File and directory handle numbers (one sequence: the kernel keeps them apart).
        self.handle_numbers = itertools.count(1)

    @classmethod
    def open(cls, config: Config, hot: HotTier, warm: WarmTier, cold: ColdTier, index: Index,
             cache_warm: bool = False) -> Core:
        """Build a core on opened tiers and index: the cache loaded from the index, counters
        restored, the inode table rooted at the warm root (blocking: at mount)."""
        batch = Batch(index)
        counters = Counters()
        counters.restore(index.get("meta", counter_names.KEY))
        disk = os.statvfs(hot.root)
        capacity = resolve_capacity(config.hot_capacity, disk.f_blocks * disk.f_frsize)
        cache = BlockCache(hot, index, batch, make_policy(config.eviction, capacity),
                           config.block_size, capacity, config.cache_high_watermark,
                           config.cache_low_watermark, config.read_memory, counters)
        cache.load()
        # The cache is what fills the hot disk; the index must still be able to commit.
        batch.make_room = lambda: cache.free(INDEX_ROOM)
        inodes = InodeTable(batch, warm.lstat(b"."))
        by_rename = _same_file_system(hot.staging_dir, warm.root)
        if by_rename:
            log.info("the hot and warm tiers share a file system: publishing by rename")
        return cls(config, hot, warm, cold, index, batch, counters, cache, inodes, cache_warm,
                   by_rename, warm.statvfs().f_namemax)

    # -- names and stubs ------------------------------------------------------------------

    def drop_reader_fd(self, data: OpenFile) -> None:
        """The warm readers' descriptor (``OpenFile.reader_fd``) takes no new fetch: closed
        once those under way end (its reader replaced, the file it reads replaced)."""
        fd = self.let_go_reader_fd(data)
        if fd is not None:
            self._close_in_thread(fd)

    def let_go_reader_fd(self, data: OpenFile) -> int | None:
        """``drop_reader_fd``, for a caller about to close the file's descriptors in a thread
        anyway (the file let go): the descriptor it closes with them, if no fetch uses it;
        else the last fetch closes it."""
        held, data.reader_fd = data.reader_fd, None
        if held is None:
            return None
        held.dropped = True
        if not held.idle_after_drop():
            return None
        fd, held.fd = held.fd, -1
        return fd if fd >= 0 else None

    def close_held(self, held: HeldFd) -> None:
        """Close a reader's descriptor, once."""
        fd, held.fd = held.fd, -1
        if fd >= 0:
            self._close_in_thread(fd)

    def _close_in_thread(self, fd: int) -> None:
        """In a warm thread: a network file system's close may wait on the server."""
        async def close() -> None:
            try:
                await self.warm.run(os.close, fd)
            except OSError as e:
                log.warning("closing a warm reader's descriptor: %s", e)

        if self.nursery is None:
            os.close(fd)
            return
        try:
            self.nursery.start_soon(close)
        except RuntimeError:  # (unmounting: no thread to hand it to)
            os.close(fd)

    def rel_or_none(self, inode: Inode) -> bytes | None:
        """An inode's warm path, or None once it has no name left."""
        if inode.ino != ROOT_INODE and not inode.links:
            return None
        return self.inodes.path(inode)

    @staticmethod
    def has_home(inode: Inode) -> bool:
        """Whether staged data of the inode has somewhere to be published: a name this mount
        knows, or names only the warm file knows (``OpenFile.linked_elsewhere``)."""
        return bool(inode.links) or (inode.data is not None and inode.data.linked_elsewhere)

    def parse_stub(self, st: os.stat_result, target: bytes | None, where: bytes
                   ) -> Stub | None:
        """The stub a warm entry stands for, if any; a bad one is refused, never followed."""
        if target is None or not looks_like_stub(target):
            return None
        try:
            return parse_stub(target, self.config.bucket)
        except StubError as e:
            log.warning("refusing stub %s: %s", show(where), e)
            raise err(errno.EIO) from None

    @staticmethod
    def seen_mark(inode: Inode) -> tuple[bytes, OpenFile | None, int]:
        """What must not change while attributes are read to be remembered (``Inode.seen``,
        ``OpenFile.base``): the warm file behind the inode (a publish by rename rekeys it),
        its open state, and its attributes changed through the mount (a truncate, a chmod).
        Attributes read across such a change may be the old file's, and an open answered
        from them would find another version: ESTALE for a reader of a change made here."""
        return inode.key, inode.data, inode.attr_changes

    def attr_mark(self, inode: Inode) -> AttrMark:
        """Taken by a publish before it copies the attributes of the file it will replace:
        if the mark differs at its rename, it takes them again (``Reapply``). An attribute
        change of the file, or any rename (which can move another file to the path the copy
        was read from while the copy ran), moves the mark."""
        return inode.attr_changes, self.renames

    # -- attributes -----------------------------------------------------------------------

    def _stat_inode_blocking(self, rel: bytes | None, own_fd: int | None,
                             base: os.stat_result | None
                             ) -> tuple[os.stat_result, bytes | None]:
        """Attributes and, for a symlink, its target (which may make it a stub). ``own_fd``:
        a descriptor made for this call alone (``_own_warm_fd``), closed here."""
        if rel is not None:
            return self.warm.lstat_link(rel)
        if own_fd is not None:  # unlinked but still open: the descriptor still reaches it
            try:
                return os.fstat(own_fd), None
            finally:
                os.close(own_fd)
        if base is not None:
            # An unlinked cold file (its stub is remembered), or a staged one whose created
            # warm file a publish closed (``WarmPublisher._let_go_of_created``).
            return base, None
        raise err(errno.ENOENT)

    @staticmethod
    def _own_warm_fd(data: OpenFile | None) -> int | None:
        """A ``dup`` of an unlinked open file's warm descriptor, made on the event loop (no
        file system is reached): a close of the last handle may close ``warm_fd`` in another
        thread while the attributes' thread waits, and the number, given to the next file
        opened, would answer that file's attributes. A number read here is open: every
        closer takes it out of ``OpenFile`` before its thread closes it, but
        ``WarmTier.adopt``, which runs under the exclusive namespace lock on a file that has
        a name (this is read under the shared lock, for one that has none)."""
        if data is None or data.warm_fd is None:
            return None
        return os.dup(data.warm_fd)

    async def refresh(self, inode: Inode) -> Attrs:
        """Attributes read from the tiers; remembered while the file is open."""
        started = time.monotonic()
        mark = self.seen_mark(inode)
        data = inode.data
        async with self.ns_lock.shared():
            rel = self.rel_or_none(inode)
            own = None if rel is not None else self._own_warm_fd(data)
            base = None if data is None else data.base
            st, target = await self.warm.run(self._stat_inode_blocking, rel, own, base)
        if target is not None:
            inode.stub = self.parse_stub(st, target, rel or b"")
        if self.seen_mark(inode) != mark:
            return attrs_of(inode, st)  # (answered, not remembered: see ``seen_mark``)
        if data is not None:
            data.base = st
        else:
            inode.seen = (started, st)
        return attrs_of(inode, st)

    async def open_warm(self, inode: Inode, data: OpenFile,
                        read: tuple[int, int] | None = None, served: bool = False
                        ) -> bytes | None:
        """Open the warm file of an open file whose open was answered from memory
        (``OpenFile.warm_deferred``); with ``read`` (offset, size), read that range in the
        same warm call and return it (None: the file was opened already). ``served``: the
        open file has already served bytes of the version it was opened for (from the block
        cache, ``Reads``), so a file whose content changed in place since (another size or
        mtime) is stale too: reading on from it would mix two versions. So is it when an open
        kept the kernel's pages of that version (``OpenFile.kept_pages``)."""
        while data.warm_deferred:
            if data.warm_opening is not None:
                await data.warm_opening.wait()
                continue
            opening = data.warm_opening = trio.Event()
            warm = self.warm

            def open_and_read(rel: bytes) -> tuple[int, os.stat_result, bytes | None]:
                fd, st = warm.open_read(rel)
                try:
                    if read is None:
                        return fd, st, None
                    out = os.pread(fd, read[1], read[0])
                    if warm_id(os.fstat(fd)) != warm_id(st):
                        # Changed in place while it was read (another node): the bytes are
                        # not the version opened, and the caller would name them so. The
                        # read is made again from the file as opened.
                        return fd, st, None
                    return fd, st, out
                except BaseException:
                    os.close(fd)
                    raise

            try:
                async with self.ns_lock.shared():
                    rel = self.rel_or_none(inode)
                    if rel is None:
                        raise err(errno.ENOENT)
                    try:
                        fd, st, out = await warm.run(open_and_read, rel)
                    except OSError as e:
                        if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ESTALE):
                            raise
                        # now a stub, a link or another kind of file, or a directory on its
                        # way is a link: replaced
                        fd, st, out = -1, None, None
            finally:
                data.warm_opening = None
                opening.set()
            if (st is None or data.warm_id is None or st.st_ino != data.warm_id[0]
                    or ((served or data.kept_pages)
                        and warm_id(st)[:3] != data.warm_id[:3])):
                # Replaced by another node since the lookup this open was answered from: the
                # kernel may hold that version's pages (the open kept them), and the new
                # file's bytes must not fill the gaps between them. The handle is stale, as
                # an NFS handle to a replaced file is; the next open reads the new file. The
                # same file changed in place (a truncate, a rename changing its ctime) is
                # read as it is now, as any open file is, unless bytes of the version opened
                # were served already (from the block cache, or the kernel's pages an open
                # kept) and its content changed: only its ctime moving (a rename or chmod
                # through this mount) keeps the bytes. (A new file that got the freed inode
                # number, as local file systems give it at once, has another mtime.)
                if fd >= 0:
                    await warm.run(os.close, fd)
                inode.seen = None
                self.invalidate_attrs(inode.ino)
                log.info("%s was replaced since the lookup its open was answered from: "
                         "ESTALE", show(rel))
                raise err(errno.ESTALE)
            if data.state is DataState.RETIRED:
                # Let go while it opened (a read-ahead's open: no handle holds the state).
                await warm.run(os.close, fd)
                raise err(errno.EBADF)
            if not data.warm_deferred:
                await warm.run(os.close, fd)  # (cannot happen while a caller holds it)
                continue
            data.warm_fd, data.warm_deferred = fd, False
            data.base, data.warm_id = st, warm_id(st)
            return out
        return None

    def remember_xattrs(self, inode: Inode, names: frozenset[bytes]) -> None:
        inode.xattr_names = names
        inode.xattr_names_until = time.monotonic() + self.config.attr_timeout

    def known_xattrs(self, inode: Inode) -> frozenset[bytes] | None:
        """The inode's xattr names if listed within attr_timeout (and not changed since)."""
        if inode.xattr_names is not None and time.monotonic() < inode.xattr_names_until:
            return inode.xattr_names
        return None

    async def has_xattrs(self, inode: Inode, rel: bytes, st: os.stat_result) -> bool:
        """Whether the warm file ``st`` at ``rel`` has extended attributes, which a stub
        cannot keep: such a file stays on the warm tier, whatever its size. Asked of the tier
        (a round trip) only if not listed within attr_timeout and the tier has any; a tier
        that cannot say keeps the file too (lost attributes are not found again)."""
        if self.warm.lacks_xattrs(st.st_dev):
            return False
        names = self.known_xattrs(inode)
        if names is None:
            try:
                names = frozenset(await self.warm.run(self.warm.listxattr, rel))
            except OSError as e:
                if self.warm.lacks_xattrs(st.st_dev):
                    return False
                log.warning("kept %s on the warm tier: cannot list its extended attributes: "
                            "%s", show(rel), e)
                return True
            self.remember_xattrs(inode, names)
        return bool(own_xattrs(names))

    async def fresh_base(self, inode: Inode, data: OpenFile) -> os.stat_result | None:
        """The open file's attributes on the warm tier (mode, link count), read again if a
        namespace change made them stale (``attrs.forget_base``)."""
        if data.base is None and inode.data is data:
            try:
                await self.refresh(inode)
            except OSError as e:  # (renamed or unlinked meanwhile, say)
                log.warning("could not read the attributes of inode %d again: %s",
                            inode.ino, e)
        return data.base

    def forget_dir_attrs(self, create: bool = False) -> None:
        """A change through the mount: no directory's attributes are answered from memory,
        no lookup from a listing read before it. ``create``: the change is a create, which
        leaves ``made_in`` (it changes no directory's group or mode)."""
        self.dir_attrs.clear()
        if not create:
            self.made_in.clear()
        self.changes += 1

    def remember_dir(self, ino: int, st: os.stat_result, made_in: bool = True) -> None:
        """``made_in`` False: for the kernel's next getattr only, not for the next create
        (attributes read before the last create: ``Names.pending``)."""
        deadline = time.monotonic() + self.config.attr_timeout
        self.dir_attrs[ino] = (deadline, st)
        if not made_in:
            return
        self.made_in.pop(ino, None)  # (to the end: the oldest go first)
        if len(self.made_in) >= MOST_MADE_IN:
            del self.made_in[next(iter(self.made_in))]
        self.made_in[ino] = (deadline, st)

    def made_in_attrs(self, ino: int) -> os.stat_result | None:
        """A directory's attributes as read after the last create in it, if no other change
        came through the mount since and attr_timeout has not passed (``made_in``)."""
        known = self.made_in.get(ino)
        if known is None or time.monotonic() > known[0]:
            return None
        return known[1]

    def dir_changed(self, inode: Inode, parent_st: os.stat_result | None) -> None:
        """A file was published into its directory: keep what getattr answers for that
        directory current (only where a create put it); ``parent_st`` None: they could not be
        read, and are read again when asked."""
        if len(inode.links) == 1 and inode.links[0][0] in self.dir_attrs:
            if parent_st is None:
                self.dir_attrs.pop(inode.links[0][0], None)
                self.made_in.pop(inode.links[0][0], None)
            else:
                self.remember_dir(inode.links[0][0], parent_st)

    # -- objects --------------------------------------------------------------------------

    async def get_object(self, stub: Stub, offset: int, size: int) -> bytes:
        """A ranged GET pinned to the stub's ETag: a changed object is an error, never a mix of
        old and new bytes; so is an object shorter than its stub says (a stub is anyone's to
        write), never bytes cut short or padded."""
        size = max(0, min(size, stub.size - offset))
        try:
            try:
                out = await self.cold.run(self.cold.store.get_range, stub.key, offset, size,
                                          stub.etag)
            except ObjectChanged:
                # A chmod or chown copies the object onto itself; one whose answer and
                # the HEAD after were lost left the stub naming the version copied from.
                # The copy names that version: the same bytes, read at the copy's ETag.
                info = await self.cold.run(self.cold.store.head, stub.key)
                if not is_copy_of(info, stub.etag, stub.size):
                    raise
                out = await self.cold.run(self.cold.store.get_range, stub.key, offset, size,
                                          info.etag)
        except ObjectStoreError as e:
            log.error("reading %s at %d: %s", stub.key, offset, e)
            raise err(errno.EIO) from None
        if len(out) != size:
            log.error("reading %s at %d: %d bytes, where its stub says %d", stub.key, offset,
                      len(out), size)
            raise err(errno.EIO)
        return out

    async def delete_object(self, key: str, etag: str | None = None) -> None:
        """Delete an object nothing refers to any more; a failure is owed (``garbage``).
        ``etag``: the version a stub named. Another node may have rewritten the file under
        the same key since, its stub on its way: its object is not this one's to delete."""
        await self.garbage.delete(key, etag)


def _same_file_system(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False
