"""The filesystem core: namespace and data operations in tierfs's own terms, and their policy.

The FUSE layer calls these methods with inode numbers and names and translates the results; it
decides nothing. Everything that touches a disk goes through a tier's ``run`` (a worker thread
in that tier's threads); the inode table and open-file state change only on the event loop.

Ordering rules (see docs/architecture.md, "Concurrency contract"):

- ``_ns_lock`` serialises the namespace changes that can race with publishing: unlink, rmdir,
  rename and the final rename of a publish. The kernel already serialises operations inside one
  directory, but a publish is started by close, not by a directory operation. Every other call
  that reaches the warm tier by a path holds it shared, so that the path names the same file
  for the whole call (tierfs/vfs/nslock.py). Changes of a
  file's owner, mode, times and extended attributes take it too, and count themselves in
  ``Inode.attr_changes``: a publish copies them early and checks that count (and the count of
  renames) at its rename (``_attr_mark``).
- ``OpenFile.lock`` serialises writes, truncation and publishing of one file; reads never take
  it (they read either the warm descriptor or the staging file, both always valid).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import fnmatch
import itertools
import logging
import os
import secrets
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from tierfs.cache import counters as counter_names
from tierfs.cache.blocks import BlockCache, Source, cold_source_id, warm_source_id
from tierfs.cache.counters import Counters
from tierfs.cache.eviction import make_policy
from tierfs.cache.store import is_no_space
from tierfs.config import Config, resolve_capacity
from tierfs.index import FLUSH_INTERVAL, Batch, Index
from tierfs.objects.base import (KeyInTheWay, NoSuchObject, ObjectStoreError, UploadGone,
                                 key_text)
from tierfs.stubs import Stub, StubError, looks_like_stub, parse_stub
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier
from tierfs.tiers.warm import (RENAME_EXCHANGE, RENAME_NOREPLACE, LinkedMeanwhile, Reapply,
                               WarmTier, copy_to_new, is_internal, join, split)
from tierfs.vfs.blockread import CachedReader, Prefetch
from tierfs.vfs.files import Handle, OpenFile, WarmId, warm_id
from tierfs.vfs.inodes import ROOT_INODE, Inode, InodeTable, PageVersion, identity, key_ids
from tierfs.vfs.journal import Entry, Journal, Upload
from tierfs.vfs.mirror import Mirror, write_and_start_writeback
from tierfs.vfs.nslock import NamespaceLock
from tierfs.vfs.streaming import UPLOAD_TOKEN, StreamingUpload

log = logging.getLogger(__name__)

#: Preferred I/O size reported to applications (coreutils and others size buffers from it).
BLOCK_SIZE = 128 * 1024
#: (``Inode.attr_changes``, renames through the mount): see ``FileSystem._attr_mark``.
AttrMark = tuple[int, int]
#: Seconds before a write-back file whose upload could not start tries again.
ROUTE_RETRY = 5.0
#: Longest wait between two tries of a failing write-back publish.
WRITEBACK_MAX_DELAY = 15.0
#: Bytes of cached blocks evicted when an index commit finds the hot disk full: LMDB needs
#: room for the pages a commit copies, a few MiB for the largest batches.
INDEX_ROOM = 16 * 1024 * 1024
#: Seconds a tier may take to answer a health check.
HEALTH_TIMEOUT = 10.0


def _stage_times(data: OpenFile, changes: SetAttr) -> None:
    """Times set on a staged file are published with its data (the warm file's would be
    overwritten then)."""
    if changes.atime_ns is not None:
        data.atime_ns = changes.atime_ns
    if changes.mtime_ns is not None:
        data.mtime_ns = changes.mtime_ns


def _version(st: os.stat_result, key: bytes) -> PageVersion:
    """The version of a warm file's content that the kernel's cached pages of it hold (the
    ctime too, for the reason given at ``files.warm_id``)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, key)


def _mode_override(inode: Inode) -> int | None:
    """The mode a file's new warm file takes, where the file it replaces has none worth
    copying: a stub's symlink (the mode is in the stub)."""
    return inode.stub.mode if inode.stub is not None else None


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclasses.dataclass(frozen=True)
class Attrs:
    """The attributes tierfs reports for an inode (the warm file's, with staged data overlaid)."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int

    @property
    def blocks(self) -> int:
        return (self.size + 511) // 512

    @classmethod
    def from_stat(cls, ino: int, st: os.stat_result) -> Attrs:
        return cls(ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev, st.st_size,
                   st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


@dataclasses.dataclass(frozen=True)
class DirEntry:
    name: bytes
    st: os.stat_result
    #: The inode number an earlier mount gave this file, if any.
    persisted: int | None
    #: Its extended attribute names, if they could be listed.
    xattrs: frozenset[bytes] | None
    #: Its target, if it is a symlink, and the stub that target makes it, if any.
    target: bytes | None = None
    stub: Stub | None = None
    #: ``FileSystem._name_changes`` and ``InodeTable.replacements`` when the entry was read
    #: (see ``FileSystem._fresh_entries``).
    as_of: tuple[int, int] = (0, 0)
    #: No longer under this name (renamed or unlinked since): not handed to the kernel.
    gone: bool = False


@dataclasses.dataclass(eq=False)
class DirHandle:
    inode: Inode
    entries: list[DirEntry] | None = None
    #: (``FileSystem._name_changes``, ``InodeTable.replacements``, index): the entries from
    #: the index on are known to be current as of those counts.
    checked: tuple[int, int, int] = (0, 0, 0)


@dataclasses.dataclass(frozen=True)
class SetAttr:
    """Which attributes a setattr changes; None leaves one alone."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


R = TypeVar("R")

#: Times a lookup or listing is read again when tierfs replaced the file meanwhile, and a
#: publish's warm call is made again when the file was renamed under it.
STALE_TRIES = 4
#: Entries of a listing read again per readdir call after a rename (see ``_fresh_entries``).
FRESH_BATCH = 64


#: Objects in the way of a key's folders moved past before giving up (each move is a new
#: random suffix, so one is almost always enough).
MAX_KEY_MOVES = 8


def unique_key(key: str) -> str:
    """A key beside ``key`` that no other file's object has."""
    return f"{key}~{uuid.uuid4().hex[:12]}"


class FileSystem:
    def __init__(self, config: Config, hot: HotTier, warm: WarmTier, cold: ColdTier,
                 index: Index, cache_warm: bool = False) -> None:
        self.config = config
        self.hot = hot
        self.warm = warm
        self.cold = cold
        self.index = index
        self.batch = Batch(index)
        self.journal = Journal(self.batch, hot.run)
        self.counters = Counters()
        self.counters.restore(index.get("meta", counter_names.KEY))
        disk = os.statvfs(hot.root)
        capacity = resolve_capacity(config.hot_capacity, disk.f_blocks * disk.f_frsize)
        self.cache = BlockCache(hot, index, self.batch, make_policy(config.eviction, capacity),
                                config.block_size, capacity, config.cache_high_watermark,
                                config.cache_low_watermark, config.read_memory, self.counters)
        self.cache.load()
        # The cache is what fills the hot disk; the index must still be able to commit.
        self.batch.make_room = lambda: self.cache.free(INDEX_ROOM)
        #: Whether warm files are read through the block cache too.
        self.cache_warm = cache_warm
        # Read-ahead may fill at most half the memory pool, so blocks fetched ahead are still
        # there when their reader arrives.
        self._prefetch = Prefetch(config.read_memory // config.block_size // 2)
        self._window = max(1, config.prefetch_limit // config.block_size)
        self.inodes = InodeTable(self.batch, warm.lstat(b"."))
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._fh = itertools.count(1)
        self._ns_lock = NamespaceLock()
        #: Renames through the mount (under ``_ns_lock``): see ``_attr_mark``.
        self._renames = 0
        #: Renames, unlinks and rmdirs through the mount (under ``_ns_lock``): a listing read
        #: before one may name files by where they were (``_fresh_entries``).
        self._name_changes = 0
        self._as_root = os.geteuid() == 0
        self.namemax = warm.statvfs().f_namemax
        #: The hot and warm tiers share a file system (a single disk, the zero-config
        #: default): files are published by renaming their staging file into place instead
        #: of copying it. Off for good at the first EXDEV.
        self.publish_by_rename = _same_file_system(hot.staging_dir, warm.root)
        if self.publish_by_rename:
            log.info("the hot and warm tiers share a file system: publishing by rename")
        #: A directory's attributes as read just after tierfs created a file in it (or
        #: published one into it): the kernel drops them at every create and asks again at
        #: the next, to check permissions. Answered from here once, within attr_timeout, and
        #: forgotten at any other change made through the mount. Deadline and attributes.
        self._dir_attrs: dict[int, tuple[float, os.stat_result]] = {}
        #: Called with an inode number when tierfs changed attributes behind the kernel's back.
        self.invalidate_attrs = lambda ino: None
        #: Where streaming uploads run their part tasks (set by run_background).
        self._nursery: trio.Nursery | None = None
        #: Write-back: files closed but not yet home, each with the task publishing it.
        self.writeback: dict[int, tuple[Inode, OpenFile]] = {}
        #: Staging files being removed (set when done): a write that finds the hot disk full
        #: waits for them, since a writer's close returns before its release frees staging.
        self._staging_going: set[trio.Event] = set()
        #: (monotonic time, counters) once per flush interval, for throughput figures.
        self.history: collections.deque[tuple[float, dict[str, int]]] = \
            collections.deque(maxlen=11)

    # -- lifecycle ------------------------------------------------------------------------

    async def run_background(self,
                             task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                             ) -> None:
        """Commit index batches every FLUSH_INTERVAL, and host streaming-upload, read-ahead
        and write-back tasks, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.cache.bind(nursery)
            task_status.started()
            self.history.append((time.monotonic(), dict(self.counters.values)))
            while True:
                await trio.sleep(FLUSH_INTERVAL)
                self.history.append((time.monotonic(), dict(self.counters.values)))
                try:
                    await self.save_index()
                except OSError as e:  # a hot disk full of staged data, say
                    log.warning("committing the index failed, retrying in %.0f s: %s",
                                FLUSH_INTERVAL, e)
                except Exception:
                    log.exception("committing the index failed; retrying later")

    @property
    def nursery(self) -> trio.Nursery | None:
        """Where background tasks of the filesystem run (None before run_background)."""
        return self._nursery

    async def save_index(self) -> None:
        """Queue cache entries and counters into the batch, and commit it."""
        self.cache.persist()
        if self.counters.changed:
            self.batch.put("meta", counter_names.KEY, self.counters.encode())
        await self.batch.flush(self.hot.run)

    async def shutdown(self) -> None:
        """Publish whatever is still dirty (a handle the kernel never released, write-back
        files not yet home) and commit. What cannot be published stays journaled."""
        pending = [(h.inode, h.data) for h in self._handles.values()]
        pending += list(self.writeback.values())
        for inode, data in pending:
            if data.dirty:
                try:
                    await self._publish(inode, data)
                except OSError as e:
                    log.error("could not publish %r at shutdown, staged data kept as %s: %s",
                              inode.links, data.staging_id, e)
        await self.save_index()

    def pending_uploads(self) -> tuple[int, int]:
        """Write-back files not yet home: (count, bytes). Also called from the Prometheus
        thread: list() copies the table in one step under the GIL."""
        dirty = [d for _, d in list(self.writeback.values()) if d.dirty]
        return len(dirty), sum(d.size for d in dirty)

    async def flush_all(self) -> None:
        """Publish every write-back file now (``tierfs flush``); raises the first failure,
        after trying them all."""
        errors: list[OSError] = []
        for inode, data in list(self.writeback.values()):
            try:
                await self._publish(inode, data)
            except OSError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    async def health(self) -> dict[str, dict[str, object]]:
        """Each tier's state, checked now: reachable, writable, free space."""
        out: dict[str, dict[str, object]] = {}
        for name, tier, path in (("hot", self.hot, self.config.hot),
                                 ("warm", self.warm, self.config.warm)):
            try:
                with trio.fail_after(HEALTH_TIMEOUT):
                    st = await tier.run(os.statvfs, path)
                writable = await tier.run(os.access, path, os.W_OK)
                out[name] = {"ok": writable, "free": st.f_bavail * st.f_frsize,
                             "detail": "ok" if writable else "not writable"}
            except (OSError, trio.TooSlowError) as e:
                out[name] = {"ok": False, "free": None, "detail": f"unreachable: {e!r}"}
        try:
            with trio.fail_after(HEALTH_TIMEOUT):
                await self.cold.run(self.cold.store.check)
            out["cold"] = {"ok": True, "free": None, "detail": "ok"}
        except (ObjectStoreError, OSError, trio.TooSlowError) as e:
            out["cold"] = {"ok": False, "free": None, "detail": str(e) or "timed out"}
        return out

    # -- helpers --------------------------------------------------------------------------

    def _check_name(self, name: bytes) -> None:
        if len(name) > self.namemax:
            raise _err(errno.ENAMETOOLONG)
        if is_internal(name):
            raise _err(errno.EPERM)

    def _owner(self, uid: int, gid: int, parent_st: os.stat_result) -> tuple[int, int]:
        # The group of a new entry comes from a set-group-ID parent directory, as on any Unix.
        if parent_st.st_mode & stat.S_ISGID:
            gid = parent_st.st_gid
        return uid, gid

    def _new_entry(self, rel: bytes, make: Callable[[], None], mode: int | None, uid: int,
                   gid: int, inherit_setgid: bool = False) -> tuple[os.stat_result, int | None]:
        """Create an entry as tierfs, then give it the caller's owner and mode (blocking).

        New directories in a set-group-ID directory keep that bit, as on any Unix.
        """
        pst = self.warm.lstat(split(rel)[0])
        make()
        self._chown_new(rel, self.warm.lstat(rel), *self._owner(uid, gid, pst))
        if mode is not None:
            extra = pst.st_mode & stat.S_ISGID if inherit_setgid else 0
            self.warm.chmod(rel, stat.S_IMODE(mode) | extra)
        return self._stat_and_number(rel)

    def _chown_new(self, rel: bytes, st: os.stat_result, uid: int, gid: int) -> os.stat_result:
        """Give an entry the caller's ownership (blocking; tierfs creates as itself)."""
        if (st.st_uid, st.st_gid) == (uid, gid):
            return st
        try:
            self.warm.chown(rel, uid, gid)
        except PermissionError:
            if self._as_root:
                raise
            return st  # an unprivileged mount owns everything it creates
        return self.warm.lstat(rel)

    def _attrs(self, inode: Inode, st: os.stat_result, read: Stub | None = None) -> Attrs:
        """``read``: the stub found with ``st``, for an inode whose open state does not take
        it (a listing older than the file now being written under that name)."""
        attrs = Attrs.from_stat(inode.ino, st)
        stub = inode.stub if inode.stub is not None else read
        if stub is not None:  # the symlink's owner and ctime, the file's mode, size and mtime
            attrs = dataclasses.replace(attrs, mode=stat.S_IFREG | stub.mode, nlink=1,
                                        size=stub.size, atime_ns=stub.mtime_ns,
                                        mtime_ns=stub.mtime_ns)
        if not inode.links and inode.ino != ROOT_INODE:
            attrs = dataclasses.replace(attrs, nlink=0)  # NFS shows a silly-renamed file as 1
        data = inode.data
        if data is None or not data.staged:
            return attrs
        return dataclasses.replace(attrs, size=data.size, mtime_ns=data.mtime_ns,
                                   atime_ns=data.atime_ns)

    def _stat_inode_blocking(self, inode: Inode, rel: bytes | None
                             ) -> tuple[os.stat_result, bytes | None]:
        """Attributes and, for a symlink, its target (which may make it a stub)."""
        data = inode.data
        if rel is not None:
            return self.warm.lstat_link(rel)
        # Unlinked but still open: the warm descriptor still reaches the file.
        fd = None if data is None else data.warm_fd
        if fd is None:
            if inode.stub is not None and data is not None and data.base is not None:
                return data.base, None  # an unlinked cold file: its stub is remembered
            raise _err(errno.ENOENT)
        return os.fstat(fd), None

    def _stub(self, st: os.stat_result, target: bytes | None, where: bytes) -> Stub | None:
        """The stub a warm entry stands for, if any; a bad one is refused, never followed."""
        if target is None or not looks_like_stub(target):
            return None
        try:
            return parse_stub(target, self.config.bucket)
        except StubError as e:
            log.warning("refusing stub %r: %s", where, e)
            raise _err(errno.EIO) from None

    def _rel_or_none(self, inode: Inode) -> bytes | None:
        if inode.ino != ROOT_INODE and not inode.links:
            return None
        return self.inodes.path(inode)

    def _stat_and_number(self, rel: bytes) -> tuple[os.stat_result, int | None]:
        """lstat plus the inode number an earlier mount gave the file, in one worker call."""
        st = self.warm.lstat(rel)
        return st, self.inodes.persisted_number(identity(st))

    def _probe(self, rel: bytes) -> tuple[os.stat_result, bytes | None, int | None]:
        """lstat, symlink target and earlier inode number, in one worker call."""
        st, target = self.warm.lstat_link(rel)
        return st, target, self.inodes.persisted_number(identity(st))

    def _stale(self, parent: int, name: bytes, seen: int) -> bool:
        """Whether tierfs replaced the warm file behind a name after ``seen`` (a publish by
        rename, a new stub): what was read of that name before then is the replaced file
        (another type, perhaps: a stub is a symlink there), so it is read again."""
        inode = self.inodes.child(parent, name)
        return inode is not None and inode.rekeyed > seen

    def _register(self, parent: int, name: bytes, st: os.stat_result, persisted: int | None,
                  stub: Stub | None) -> Inode:
        inode = self.inodes.resolve(parent, name, st, persisted,
                                    stat.S_IFREG if stub is not None else None)
        if inode.data is None:
            # An open file's state knows better than a listing, which may be older than the
            # publish that just turned it into a stub or back (a symlink's attributes without
            # its stub would change the file's type under the kernel: EIO).
            inode.stub = stub
        return inode

    def _entry(self, parent: int, name: bytes, st: os.stat_result, persisted: int | None,
               stub: Stub | None = None) -> tuple[Inode, Attrs]:
        """Register a name just created or found, count the kernel's lookup, give attributes.
        ``persisted`` comes from the same worker call that found the entry."""
        inode = self._register(parent, name, st, persisted, stub)
        self.inodes.lookup(inode)
        return inode, self._attrs(inode, st, stub)

    # -- namespace ------------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> tuple[Inode, Attrs]:
        if name in (b".", b".."):  # asked when the mount is exported (NFS, say)
            inode = self.inodes[parent]
            if name == b".." and inode.ino != ROOT_INODE:
                if not inode.links:
                    raise _err(errno.ENOENT)
                inode = self.inodes[inode.links[0][0]]
            self.inodes.lookup(inode)
            return inode, await self.getattr(inode.ino)
        if is_internal(name):
            raise _err(errno.ENOENT)
        if len(name) > self.namemax:
            raise _err(errno.ENAMETOOLONG)
        async with self._ns_lock.shared():
            rel = self.inodes.child_path(parent, name)
            for _ in range(STALE_TRIES):
                seen = self.inodes.replacements
                st, target, persisted = await self.warm.run(self._probe, rel)
                if not self._stale(parent, name, seen):
                    break
            stub = self._stub(st, target, rel)
            inode, attrs = self._entry(parent, name, st, persisted, stub)
        if inode.data is not None and inode.data.base is not None:
            return inode, self._attrs(inode, inode.data.base)
        return inode, attrs

    async def getattr(self, ino: int) -> Attrs:
        inode = self.inodes[ino]
        data = inode.data
        if data is not None and data.base is not None:
            return self._attrs(inode, data.base)
        fresh = self._dir_attrs.pop(ino, None)
        if fresh is not None and time.monotonic() <= fresh[0]:
            return self._attrs(inode, fresh[1])
        return await self._refresh(inode)

    def _dir_changed(self, inode: Inode, parent_st: os.stat_result) -> None:
        """A file was published into its directory: keep what getattr answers for that
        directory current (only where a create put it)."""
        if len(inode.links) == 1 and inode.links[0][0] in self._dir_attrs:
            self._dir_attrs[inode.links[0][0]] = \
                (time.monotonic() + self.config.attr_timeout, parent_st)

    async def _refresh(self, inode: Inode) -> Attrs:
        """Attributes read from the tiers; remembered while the file is open."""
        async with self._ns_lock.shared():
            rel = self._rel_or_none(inode)
            st, target = await self.warm.run(self._stat_inode_blocking, inode, rel)
        if target is not None:
            inode.stub = self._stub(st, target, rel or b"")
        if inode.data is not None:
            inode.data.base = st
        return self._attrs(inode, st)

    async def setattr(self, ino: int, changes: SetAttr) -> Attrs:
        self._dir_attrs.clear()
        inode = self.inodes[ino]
        if changes.size is not None:
            # As for an open for writing: what the last close acknowledged reaches home
            # before a truncate changes it (and a file that went to the bucket is cold then).
            while ((data := inode.data) is not None and inode.ino in self.writeback
                   and data.dirty):
                await self._publish(inode, data)
            if inode.stub is not None and not (inode.data is not None and inode.data.staged):
                await self._resize_cold(inode, changes.size)
                changes = dataclasses.replace(changes, size=None)
        if changes.size is not None:
            if inode.is_dir:
                raise _err(errno.EISDIR)
            data = inode.data
            if data is not None:
                # Held for the change: a last release meanwhile leaves the publishing of it
                # (and the retiring of the state) to the end of this call.
                self._hold(inode, data)
                try:
                    async with data.lock:
                        if data.upload is not None and changes.size < data.upload.cut:
                            raise _err(errno.EOPNOTSUPP)  # already on its way to the bucket
                        await self._stage(inode, data, keep=changes.size)
                        self._reopened(data)
                        await self.hot.run(os.ftruncate, data.staging_fd, changes.size)
                        data.size = changes.size
                        data.written = min(data.written, changes.size)
                        data.mtime_ns = time.time_ns()
                        data.dirty = True
                        if data.mirror is not None:
                            data.mirror.changed(changes.size)
                        await self._route(inode, data)  # a size past the threshold: at once
                        _stage_times(data, changes)  # before the let-go may publish
                finally:
                    await self._let_go(inode, data)
            else:
                async with self._ns_lock.shared():
                    if (rel := self._rel_or_none(inode)) is not None:
                        await self.warm.run(self.warm.truncate, rel, changes.size)
        if (changes.mode, changes.uid, changes.gid, changes.atime_ns,
                changes.mtime_ns) != (None,) * 5:
            async with self._ns_lock:
                await self._set_attributes(inode, changes)
        return await self._refresh(inode)

    async def _resize_cold(self, inode: Inode, size: int) -> None:
        """A new size for a cold file brings it back to the warm tier (below the large-file
        threshold): it is staged, truncated there and published at the last let-go, as at a
        last close."""
        stub = inode.stub
        assert stub is not None
        if size != stub.size:
            data = inode.data
            if data is None:
                data = inode.data = OpenFile(stub=stub)
            self._hold(inode, data)
            try:
                async with data.lock:
                    await self._stage(inode, data, keep=size)
                    await self.hot.run(os.ftruncate, data.staging_fd, size)
                    data.size = size
                    data.mtime_ns = time.time_ns()
                    data.dirty = True
            finally:
                await self._let_go(inode, data)

    async def _set_attributes(self, inode: Inode, changes: SetAttr) -> None:
        """Owner, mode and times, wherever the file is now: a cold file's mode and mtime are
        in its stub (and a staged file's times in its staged data, published with it). Caller
        holds ``_ns_lock``: see ``Inode.attr_changes``."""
        rel = self._rel_or_none(inode)
        data = inode.data
        staged = data is not None and data.staged
        if rel is not None:
            if inode.stub is not None:
                mtime_ns = None if staged else changes.mtime_ns
                if changes.mode is not None or mtime_ns is not None:
                    await self._replace_stub(inode, rel, changes.mode, mtime_ns)
                changes = dataclasses.replace(changes, mode=None)
                if not staged:  # (the stub keeps no atime)
                    changes = dataclasses.replace(changes, atime_ns=None, mtime_ns=None)
            await self.warm.run(self._setattr_blocking, inode, rel, changes)
        if data is not None and staged:
            _stage_times(data, changes)
        inode.attr_changes += 1

    async def _replace_stub(self, inode: Inode, rel: bytes, mode: int | None,
                            mtime_ns: int | None) -> None:
        """Put a new mode or mtime into a cold file's stub, atomically. Caller holds
        ``_ns_lock``."""
        stub = inode.stub
        assert stub is not None
        new = dataclasses.replace(
            stub, mode=stub.mode if mode is None else stat.S_IMODE(mode),
            mtime_ns=stub.mtime_ns if mtime_ns is None else mtime_ns)
        with self.inodes.replacing(inode):
            st = await self.warm.run(self.warm.replace_symlink, rel,
                                     new.encode(self.config.bucket))
            inode.stub = new
            self.inodes.rekey(inode, st)
        if inode.data is not None:
            inode.data.stub, inode.data.base = new, st

    def _setattr_blocking(self, inode: Inode, rel: bytes, changes: SetAttr) -> None:
        if changes.uid is not None or changes.gid is not None:
            self.warm.chown(rel, -1 if changes.uid is None else changes.uid,
                            -1 if changes.gid is None else changes.gid)
        if changes.mode is not None:
            if inode.kind == stat.S_IFLNK:
                raise _err(errno.EOPNOTSUPP)
            self.warm.chmod(rel, changes.mode)
        if changes.atime_ns is not None or changes.mtime_ns is not None:
            self.warm.utime(rel, changes.atime_ns, changes.mtime_ns)

    async def readlink(self, ino: int) -> bytes:
        inode = self.inodes[ino]
        async with self._ns_lock.shared():
            return await self.warm.run(self.warm.readlink, self.inodes.path(inode))

    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        self._dir_attrs.clear()
        self._check_name(name)
        async with self._ns_lock.shared():
            rel = self.inodes.child_path(parent, name)
            st, persisted = await self.warm.run(
                self._new_entry, rel, lambda: self.warm.mkdir(rel, 0o700), mode, uid, gid, True)
            return self._entry(parent, name, st, persisted)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        self._dir_attrs.clear()
        self._check_name(name)
        kind = stat.S_IFMT(mode)
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFREG):
            raise _err(errno.EPERM)  # device nodes: see docs/semantics.md
        async with self._ns_lock.shared():
            rel = self.inodes.child_path(parent, name)
            st, persisted = await self.warm.run(
                self._new_entry, rel, lambda: self.warm.mknod(rel, kind | 0o600, 0), mode, uid,
                gid)
            return self._entry(parent, name, st, persisted)

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int
                      ) -> tuple[Inode, Attrs]:
        self._dir_attrs.clear()
        self._check_name(name)
        if looks_like_stub(target):
            raise _err(errno.EPERM)  # it would read as a stub: a way to reach other objects
        async with self._ns_lock.shared():
            rel = self.inodes.child_path(parent, name)
            st, persisted = await self.warm.run(
                self._new_entry, rel, lambda: self.warm.symlink(target, rel), None, uid, gid)
            return self._entry(parent, name, st, persisted)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> tuple[Inode, Attrs]:
        self._dir_attrs.clear()
        self._check_name(new_name)
        inode = self.inodes[ino]
        while (data := inode.data) is not None:
            # Not while a publish of the file is under way: it checked the link count before
            # renaming a new file over the name, and the rename would split the links (the
            # new name keeping the old content). Publishing holds the file's lock throughout.
            async with data.lock:
                if inode.data is not data:
                    continue  # retired while we waited
                if data.upload is not None:
                    raise _err(errno.EPERM)  # on its way to the bucket: as for a stub
                await self._link(inode, new_parent, new_name)
                break
        else:
            await self._link(inode, new_parent, new_name)
        return inode, await self._refresh(inode)

    async def _link(self, inode: Inode, new_parent: int, new_name: bytes) -> None:
        if inode.is_dir or inode.stub is not None:
            # A stub is one symlink per object: a second name could outlive the object.
            raise _err(errno.EPERM)
        async with self._ns_lock:
            rel = self.inodes.path(inode)
            new_rel = self.inodes.child_path(new_parent, new_name)
            await self.warm.run(self.warm.link, rel, new_rel)
            self.inodes.add_link(inode, new_parent, new_name)
            self.inodes.lookup(inode)

    async def unlink(self, parent: int, name: bytes) -> None:
        self._dir_attrs.clear()
        async with self._ns_lock:
            rel = self.inodes.child_path(parent, name)
            self._name_changes += 1
            await self.warm.run(self.warm.unlink, rel)
            removed = self.inodes.remove_link(parent, name)
            _forget_base(removed)
            if self._rejournal(removed):
                await self.journal.sync()  # an unlinked name must not come back at recovery
        await self._drop_unreferenced(removed)

    async def rmdir(self, parent: int, name: bytes) -> None:
        self._dir_attrs.clear()
        async with self._ns_lock:
            rel = self.inodes.child_path(parent, name)
            self._name_changes += 1
            await self.warm.run(self._rmdir_blocking, rel)
            self.inodes.remove_link(parent, name)

    def _rmdir_blocking(self, rel: bytes) -> None:
        try:
            self.warm.rmdir(rel)
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
            # Temp files left by a crashed publish must not keep an empty directory alive.
            if self.warm.listdir(rel):
                raise
            self.warm.purge_temps(rel)
            self.warm.rmdir(rel)

    async def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                     flags: int) -> None:
        self._dir_attrs.clear()
        self._check_name(new_name)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise _err(errno.EINVAL)
        async with self._ns_lock:
            rel = self.inodes.child_path(parent, name)
            new_rel = self.inodes.child_path(new_parent, new_name)
            self._name_changes += 1
            await self.warm.run(self.warm.rename, rel, new_rel, flags)
            self._renames += 1
            moved = self.inodes.child(parent, name)
            replaced = self.inodes.child(new_parent, new_name)
            if flags & RENAME_EXCHANGE:
                self.inodes.exchange(parent, name, new_parent, new_name)
                _forget_base(replaced)
                replaced = None
            else:
                self.inodes.move(parent, name, new_parent, new_name)
                _forget_base(replaced)  # (after the move: it may have lost its last name)
            _forget_base(moved)
            # Staged data must be published under the new names after a crash too.
            changed = self._rejournal(replaced)
            for sid, entry in list(self.journal.entries.items()):
                if entry.path in (rel, new_rel) or entry.path.startswith((rel + b"/",
                                                                          new_rel + b"/")):
                    changed = self._rejournal_sid(sid) or changed
            if changed:
                await self.journal.sync()
        await self._drop_unreferenced(replaced)

    def _rejournal(self, inode: Inode | None) -> bool:
        """Re-point an inode's journal entry at its current path (nothing to publish if it
        has none left); True if the entry said its data may be published."""
        if inode is None or inode.data is None or inode.data.staging_id is None:
            return False
        return self._rejournal_sid(inode.data.staging_id, inode)

    def _rejournal_sid(self, sid: str, inode: Inode | None = None) -> bool:
        entry = self.journal.entries.get(sid)
        if entry is None:
            return False
        if inode is None:
            inode = next((h.inode for h in self._handles.values()
                          if h.data.staging_id == sid), None)
            if inode is None:
                inode = next((i for i, d in self.writeback.values() if d.staging_id == sid),
                             None)
        if inode is None:
            return False
        was_closed = entry.closed
        rel = self._rel_or_none(inode)
        entry.path = rel if rel is not None else b""
        if rel is None:
            entry.closed = False
        self.journal.record(sid, entry)
        return was_closed

    async def _drop_unreferenced(self, inode: Inode | None) -> None:
        """A cold file that lost its last name: its object goes now, or when the last handle
        closes (an open file keeps its data, as on any POSIX file system)."""
        if inode is None or inode.links or inode.stub is None or inode.data is not None:
            return
        await self._delete_object(inode.stub.key)

    async def forget(self, items: Sequence[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)

    # -- directories ----------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        inode = self.inodes[ino]
        fh = next(self._fh)
        self._dirs[fh] = DirHandle(inode)
        self.inodes.opened(inode)
        return fh

    def _list_blocking(self, rel: bytes) -> list[DirEntry]:
        return [DirEntry(name, st, self.inodes.persisted_number(identity(st)), xattrs, target)
                for name, st, xattrs, target in self.warm.listdir(rel)]

    async def readdir(self, fh: int, start: int) -> list[tuple[int, DirEntry]]:
        """The directory's entries from offset ``start``, each with its offset; a listing is
        a snapshot taken when it is read from the start, so offsets stay valid while entries
        come and go."""
        handle = self._dirs[fh]
        if handle.entries is None or start == 0:
            replacements = self.inodes.replacements  # (one during the call makes entries stale)
            async with self._ns_lock.shared():
                as_of = (self._name_changes, replacements)
                rel = self.inodes.path(handle.inode)
                entries = await self.warm.run(self._list_blocking, rel)
            handle.entries = []
            for entry in entries:
                try:
                    stub = self._stub(entry.st, entry.target, join(rel, entry.name))
                except OSError:
                    continue  # a refused stub is not listed (and its lookup gives EIO)
                handle.entries.append(dataclasses.replace(entry, stub=stub, as_of=as_of))
            handle.checked = (*as_of, 0)
        while True:
            stop = await self._fresh_entries(handle, start)
            out = [(i + 1, entry) for i, entry in enumerate(handle.entries[start:stop], start)
                   if not entry.gone]
            if out or stop >= len(handle.entries):
                return out  # (an empty reply would end the listing)
            start = stop

    async def _fresh_entries(self, handle: DirHandle, start: int) -> int:
        """Read again the entries from ``start`` that may name another file than when the
        listing was read; returns where the entries that may be handed out end.

        A listing is handed to the kernel over several calls, and for every entry the kernel
        takes the file's identity and attributes: an entry read before a rename through the
        mount (a large listing, a rename between two getdents calls) would put this name on
        the file that was under it, and tierfs would take that for a change made behind its
        back and move names between inodes (a hard-linked file then read through the wrong
        name). So entries read before the last rename or unlink are read again, a batch at a
        time, and an entry whose name is gone is left out. Likewise an entry whose warm file
        tierfs itself replaced since (a staged file's old warm file, or the warm file that a
        stub has since replaced)."""
        entries = handle.entries
        assert entries is not None
        parent = handle.inode.ino
        stop = len(entries)
        for _ in range(STALE_TRIES):
            now = (self._name_changes, self.inodes.replacements)
            if handle.checked[:2] == now and start >= handle.checked[2]:
                return len(entries)  # (the usual case: nothing to look at)
            stale: list[int] = []
            for i in range(start, len(entries)):
                changes, replacements = entries[i].as_of
                if changes != now[0] or (replacements != now[1] and
                                         self._stale(parent, entries[i].name, replacements)):
                    stale.append(i)
                    if len(stale) == FRESH_BATCH:
                        break  # the kernel takes a few dozen per call: the rest later
            if not stale:
                handle.checked = (*now, start)
                return len(entries)
            whole = len(stale) < FRESH_BATCH
            stop = len(entries) if whole else stale[-1] + 1
            replacements = self.inodes.replacements
            async with self._ns_lock.shared():
                as_of = (self._name_changes, replacements)
                rel = self.inodes.path(handle.inode)
                found = await self.warm.run(self._probe_names, rel,
                                            [entries[i].name for i in stale])
            for i, probed in zip(stale, found):
                entry = entries[i]
                stub = None
                if probed is not None:
                    try:
                        stub = self._stub(probed[0], probed[1], join(rel, entry.name))
                    except OSError:
                        probed = None  # refused: not listed
                if probed is None:
                    entries[i] = dataclasses.replace(entry, gone=True, as_of=as_of)
                else:
                    st, target, persisted = probed
                    entries[i] = DirEntry(entry.name, st, persisted, None, target, stub,
                                          as_of=as_of)
            if as_of == (self._name_changes, self.inodes.replacements):
                if whole:
                    handle.checked = (*as_of, start)
                return stop
        return stop  # (changing all the time: what was read last is the best there is)

    def _probe_names(self, rel: bytes, names: list[bytes]
                     ) -> list[tuple[os.stat_result, bytes | None, int | None] | None]:
        """``_probe`` of each name in a directory; None for a name that is gone."""
        out: list[tuple[os.stat_result, bytes | None, int | None] | None] = []
        for name in names:
            try:
                out.append(self._probe(join(rel, name)))
            except OSError:
                out.append(None)
        return out

    def dir_entry(self, fh: int, entry: DirEntry) -> tuple[Inode, Attrs]:
        """Register one readdirplus entry (no lookup counted yet: see ``count_lookup``)."""
        parent = self._dirs[fh].inode.ino
        inode = self._register(parent, entry.name, entry.st, entry.persisted, entry.stub)
        if entry.xattrs is not None:
            self._remember_xattrs(inode, entry.xattrs)
        if inode.data is not None and inode.data.base is not None:
            return inode, self._attrs(inode, inode.data.base)
        return inode, self._attrs(inode, entry.st, entry.stub)

    def count_lookup(self, inode: Inode, sent: bool) -> None:
        if sent:
            self.inodes.lookup(inode)
        else:
            self.inodes.forget(inode.ino, 0)

    async def releasedir(self, fh: int) -> None:
        handle = self._dirs.pop(fh)
        self.inodes.closed(handle.inode)

    async def fsyncdir(self, fh: int) -> None:
        handle = self._dirs[fh]
        async with self._ns_lock.shared():
            await self.warm.run(self.warm.fsync_dir, self.inodes.path(handle.inode))

    # -- files ----------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> tuple[int, bool, bool]:
        """Open a file: (handle, keep the kernel's cached pages, direct I/O)."""
        inode = self.inodes[ino]
        if inode.is_dir:
            raise _err(errno.EISDIR)
        version: PageVersion | None
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        # The open-file state is shared by every handle of the inode, and retired (by the
        # last release or the end of a write-back) once no handle holds it: after each wait
        # below, make sure it is still the inode's before making a handle on it.
        while True:
            data = inode.data
            if data is None:
                data, version = await self._open_state(inode)
                if inode.data is not None:  # another open made one meanwhile: share that
                    if data.warm_fd is not None:
                        await self.warm.run(os.close, data.warm_fd)
                    continue
                inode.data = data
            else:
                version = inode.cached_version
                if writable and inode.ino in self.writeback and data.dirty:
                    # What the last close acknowledged must reach home before new writes
                    # change the staging file under it (a crash would otherwise lose both).
                    await self._publish(inode, data)
                    if inode.data is not data:
                        continue  # that write-back ended meanwhile and retired the state
            break
        if data.stub is not None and not data.staged and writable and not flags & os.O_TRUNC:
            # Objects cannot be changed in place; see docs/semantics.md.
            if data.handles == 0:
                await self._discard(inode, data)
            raise _err(errno.EOPNOTSUPP)
        keep_cache = version is not None and version == inode.cached_version
        inode.cached_version = version
        handle = self._new_handle(inode, data, flags)
        if flags & os.O_TRUNC and handle.writable:
            async with data.lock:
                await self._stage(inode, data, keep=0)
                await self.hot.run(os.ftruncate, data.staging_fd, 0)
                data.size = 0
                data.mtime_ns = time.time_ns()
                data.dirty = True
                if data.mirror is not None:
                    data.mirror.changed(0)
            keep_cache = False
        return handle.fh, keep_cache, handle.direct

    async def _open_state(self, inode: Inode
                          ) -> tuple[OpenFile, PageVersion | None]:
        """New open-file state for an inode that has none, and the version of its content
        (for the kernel's cached pages)."""
        cold = inode.stub is not None
        async with self._ns_lock.shared():
            rel = self.inodes.path(inode)
            if cold:
                st, target = await self.warm.run(self.warm.lstat_link, rel)
            else:
                fd, st = await self.warm.run(self.warm.open_read, rel)
        if cold:
            inode.stub = stub = self._stub(st, target, rel)
            if stub is None:
                raise _err(errno.ESTALE)  # no longer a stub: the kernel will look it up again
            return (OpenFile(stub=stub, base=st),
                    (stub.size, stub.mtime_ns, 0, stub.etag.encode()))
        return OpenFile(warm_fd=fd, base=st, warm_id=warm_id(st)), _version(st, inode.key)

    def _new_handle(self, inode: Inode, data: OpenFile, flags: int) -> Handle:
        accmode = flags & os.O_ACCMODE
        handle = Handle(next(self._fh), inode, data,
                        writable=accmode in (os.O_WRONLY, os.O_RDWR),
                        append=bool(flags & os.O_APPEND), direct=bool(flags & os.O_DIRECT))
        self._hold(inode, data, handle.writable)
        self._handles[handle.fh] = handle
        return handle

    async def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int, gid: int
                     ) -> tuple[int, bool, Inode, Attrs]:
        self._check_name(name)

        def make(rel: bytes) -> tuple[int, os.stat_result, int | None, frozenset[bytes] | None,
                                      os.stat_result]:
            pst = self.warm.lstat(split(rel)[0])
            # Read-only is enough: the descriptor only keeps the file reachable once unlinked.
            fd = self.warm.open(rel, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                self._chown_new(rel, os.fstat(fd), *self._owner(uid, gid, pst))
                os.fchmod(fd, stat.S_IMODE(mode))
                st = os.fstat(fd)
                try:
                    # The kernel asks for security.capability before the first write: known
                    # names answer it without another trip to the warm tier.
                    xattrs = frozenset(os.fsencode(n) for n in os.listxattr(fd))
                except OSError:
                    xattrs = None
                # The kernel asks for the directory's attributes before the next create.
                after = self.warm.lstat(split(rel)[0])
                return fd, st, self.inodes.persisted_number(identity(st)), xattrs, after
            except BaseException:
                os.close(fd)
                raise

        self._dir_attrs.clear()  # the directory changes during the call
        async with self._ns_lock.shared():
            warm_fd, st, persisted, xattrs, parent_st = await self.warm.run(
                make, self.inodes.child_path(parent, name))
            self._dir_attrs.clear()  # (another change may have come meanwhile)
            self._dir_attrs[parent] = (time.monotonic() + self.config.attr_timeout, parent_st)
            inode, attrs = self._entry(parent, name, st, persisted)
        if xattrs is not None:
            self._remember_xattrs(inode, xattrs)
        # Staging starts at the first write: a file created empty never needs it.
        data = OpenFile(warm_fd=warm_fd, base=st, atime_ns=st.st_atime_ns,
                        mtime_ns=st.st_mtime_ns, created=True)
        inode.data = data
        inode.cached_version = None
        handle = self._new_handle(inode, data, flags)
        return handle.fh, handle.direct, inode, attrs

    async def _stage(self, inode: Inode, data: OpenFile, keep: int | None = None,
                     first: tuple[bytes, int] | None = None) -> int | None:
        """Make sure the file's data is in a staging file; copy at most ``keep`` bytes of the
        warm data into it (all of it when None). ``first``, a write (bytes, offset) of the
        caller's: done with the staging file's creation if there is nothing to copy; returns
        the bytes it wrote, None if it was not done. Caller holds ``data.lock``."""
        if data.staged:
            return None
        written = None
        if first is not None and data.created:
            sid, fd, written = await self.hot.run(self.hot.new_staging_with, *first)
        else:
            sid, fd = await self.hot.run(self.hot.new_staging)
        try:
            size = 0
            if data.created:  # created empty by this open: nothing to copy
                pass
            elif data.stub is not None:
                size = data.stub.size if keep is None else min(data.stub.size, keep)
                if size >= self.config.large_file_threshold:
                    raise _err(errno.EOPNOTSUPP)  # would be re-uploaded whole: not supported
                data.atime_ns = data.mtime_ns = data.stub.mtime_ns
                await self._download(data.stub, fd, size)
                data.replaces_object = data.stub.key
            elif data.warm_fd is not None:
                st = await self.warm.run(os.fstat, data.warm_fd)
                data.atime_ns, data.mtime_ns = st.st_atime_ns, st.st_mtime_ns
                size = st.st_size if keep is None else min(st.st_size, keep)
                if size:
                    await self.warm.run(copy_to_new, data.warm_fd, fd, size)
        except BaseException:
            os.close(fd)
            await self.hot.run(self.hot.remove_staging, sid)
            raise
        data.staging_id, data.staging_fd, data.size = sid, fd, size
        data.written = size
        data.flushed_ahead = 0
        rel = self._rel_or_none(inode)
        if rel is not None:
            self.journal.record(sid, Entry(rel, size=size, atime_ns=data.atime_ns,
                                           mtime_ns=data.mtime_ns,
                                           replaces=data.replaces_object))
        return written

    async def _download(self, stub: Stub, fd: int, size: int) -> None:
        """Copy the first ``size`` bytes of a stub's object into a staging file."""
        chunk = self.config.part_size
        for start in range(0, size, chunk):
            block = await self._get(stub, start, min(chunk, size - start))
            await self.hot.run(os.pwrite, fd, block, start)

    async def _get(self, stub: Stub, offset: int, size: int) -> bytes:
        """A ranged GET pinned to the stub's ETag: a changed object is an error, never a mix of
        old and new bytes."""
        size = max(0, min(size, stub.size - offset))
        try:
            return await self.cold.run(self.cold.store.get_range, stub.key, offset, size,
                                       stub.etag)
        except ObjectStoreError as e:
            log.error("reading %s at %d: %s", stub.key, offset, e)
            raise _err(errno.EIO) from None

    async def _delete_object(self, key: str) -> None:
        """Delete an object nothing refers to any more; a failure only leaves garbage."""
        try:
            await self.cold.run(self.cold.store.delete, key)
        except ObjectStoreError as e:
            log.error("could not delete unreferenced object %s: %s", key, e)

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        handle = self._handles[fh]
        data = handle.data
        while True:
            if data.upload is not None and offset < data.upload.cut:
                if data.writers:
                    log.warning("read of a range already streamed to %s: readable after close",
                                data.upload.key)
                    raise _err(errno.EIO)
                # Closed, its upload still going (write-back): the bytes are readable once
                # the object is complete, so finish it now rather than fail the read.
                await self._publish(handle.inode, data)
            if not data.staged:
                break
            sid = data.staging_id
            out = await self.hot.run(os.pread, data.staging_fd, size, offset)
            if data.staging_id != sid or (data.upload is not None
                                          and offset < data.upload.cut):
                # Published, or cut for the bucket, while the thread read: the range may have
                # been punched out (zeros) or the descriptor closed and reused. Read again.
                continue
            self.counters.add("bytes_staged", len(out))
            return out
        reader = self._reader(data)
        if reader is not None:
            return await reader.read(fh, offset, size)
        if data.warm_fd is None:
            return b""
        out = await self.warm.run(os.pread, data.warm_fd, size, offset)
        self.counters.add("bytes_warm", len(out))
        return out

    def _reader(self, data: OpenFile) -> CachedReader | None:
        """The block-cache reader of an unstaged file: always for a cold file, for a warm one
        when warm caching is on."""
        reader = data.reader
        if data.stub is not None:
            if reader is not None and reader.made_for is data.stub:
                return reader
            source = self.cold_source(data.stub)
            made_for: object = data.stub
        elif self.cache_warm and data.warm_fd is not None and data.warm_id is not None:
            if reader is not None and reader.made_for is data.warm_id:
                return reader
            fd = data.warm_fd
            source = self.warm_source(
                data.warm_id, lambda start, length: self.warm.run(os.pread, fd, length, start))
            made_for = data.warm_id
        else:
            return None
        data.reader = CachedReader(self.cache, source, self.counters, self._nursery,
                                   self._prefetch, self._window)
        data.reader.made_for = made_for
        return data.reader

    def cold_source(self, stub: Stub) -> Source:
        """A cold file's blocks, named by object and ETag."""
        return Source(cold_source_id(str(self.config.bucket), stub.key, stub.etag), stub.size,
                      "cold", lambda start, length: self._get(stub, start, length))

    def warm_source(self, version: WarmId, fetch: Callable[[int, int], Awaitable[bytes]]
                    ) -> Source:
        """A warm file's blocks, named by its version (``files.warm_id``)."""
        ino, size, mtime_ns, ctime_ns = version
        return Source(warm_source_id(str(self.config.warm), ino, size, mtime_ns, ctime_ns),
                      size, "warm", fetch)

    async def write(self, fh: int, offset: int, buf: bytes) -> int:
        handle = self._handles[fh]
        data = handle.data
        async with data.lock:
            # A file created empty by this open has no data to copy in: its first write goes
            # with the staging file's creation (it lands at 0 with O_APPEND, the size being 0).
            done = await self._stage(handle.inode, data,
                                     first=(buf, 0 if handle.append else offset))
            if handle.append:
                offset = data.size
            if data.upload is not None and offset < data.upload.cut:
                raise _err(errno.EOPNOTSUPP)  # that range is already on its way to the bucket
            self._reopened(data)
            if done is not None:
                written = done
            else:
                try:
                    ahead = self._flush_ahead_from(data, offset, len(buf))
                    if ahead is None:
                        written = await self.hot.run(os.pwrite, data.staging_fd, buf, offset)
                    else:
                        written = await self.hot.run(write_and_start_writeback,
                                                     data.staging_fd, buf, offset, ahead)
                        data.flushed_ahead = offset + written
                except OSError as e:
                    if not is_no_space(e):
                        raise
                    # The hot disk is full: cached blocks can go (staging and pins cannot),
                    # and staging files whose release is under way soon will.
                    for going in list(self._staging_going):
                        await going.wait()
                    await self.cache.free(4 * len(buf) + self.config.block_size)
                    written = await self.hot.run(os.pwrite, data.staging_fd, buf, offset)
            data.size = max(data.size, offset + written)
            grew = offset <= data.written < offset + written
            if grew:
                data.written = offset + written
            data.mtime_ns = time.time_ns()
            data.dirty = True
            if handle.direct:
                data.direct_written = True
            if data.mirror is not None:
                data.mirror.changed(offset)
            await self._route(handle.inode, data)
            if grew:
                # Only a file growing in order is copied ahead: for rewrites in place (a
                # database's pages) each copy would be undone by the next write.
                self._copy_ahead(handle.inode, data)
        return written

    def _flush_ahead_from(self, data: OpenFile, offset: int, size: int) -> int | None:
        """Sync mode, publishing by rename: where the staging file's write to disk should start
        along with this write (None: not now). Only for a file growing in order, a step of
        ``publish_ahead`` at a time. Not in write-back mode: there the writer would wait for
        the disk's queue, which made checkpoints slower (bench/checkpoint.py)."""
        step = self.config.publish_ahead
        if (not step or self.config.durability != "sync" or not self.publish_by_rename
                or data.upload is not None or offset != data.written):
            return None
        start = min(data.flushed_ahead, offset)
        return start if offset + size - start >= step else None

    def _copy_ahead(self, inode: Inode, data: OpenFile) -> None:
        """Sync mode: copy what is written so far to the warm temp file in the background, so
        that close has only the tail left to copy. Caller holds ``data.lock``."""
        step = self.config.publish_ahead
        if (not step or self.config.durability != "sync" or self._nursery is None
                or self.publish_by_rename
                or data.upload is not None or data.staging_fd is None):
            return
        mirror = data.mirror
        if mirror is None:
            base = data.base
            if data.written < step or (base is not None and base.st_nlink > 1):
                return  # small so far, or hard-linked (published in place, not renamed)
            rel = self._rel_or_none(inode)
            if rel is None:
                return
            mirror = data.mirror = Mirror(self.warm, split(rel)[0])
            log.debug("copying %r ahead to the warm tier", rel)
        elif mirror.busy or mirror.broken or data.written - mirror.copied < step:
            return
        mirror.start(self._nursery, data.staging_fd, data.written)

    async def _drop_mirror(self, data: OpenFile) -> None:
        """Remove a file's head-start temp file (it will not be published from)."""
        mirror, data.mirror = data.mirror, None
        if mirror is None:
            return
        await mirror.wait()
        try:
            await self.warm.run(mirror.drop)
        except OSError as e:
            log.warning("could not remove a warm temp file: %s", e)

    async def _route(self, inode: Inode, data: OpenFile) -> None:
        """Send a file that has grown past the threshold straight to the bucket, and keep its
        upload fed. Caller holds ``data.lock``."""
        if data.upload is None:
            if data.rule is None:
                data.rule = self._rule_for(inode)
            if data.rule == "warm":
                return
            start = 1 if data.rule == "cold" else self.config.large_file_threshold
            if self.config.stream_after is not None and data.written == data.size:
                start = min(start, self.config.stream_after)  # written in order: stream early
            if data.size < start or self._nursery is None:
                return
            rel = self._rel_or_none(inode)
            if rel is None:
                return  # unlinked: stays staged
            base = await self._fresh_base(inode, data)
            if base is not None and base.st_nlink > 1:
                return  # hard-linked: stays staged (a stub cannot be hard-linked)
            mode = self._file_mode(inode, data)
            metadata = {"mode": f"{mode:04o}", "mtime-ns": str(data.mtime_ns)}
            assert data.staging_fd is not None and data.staging_id is not None  # after _stage
            if time.monotonic() < data.route_after:
                return
            entry = self.journal.entries.get(data.staging_id)
            try:
                key = await self._object_key(rel, data, entry)
                token = secrets.token_hex(8)
                if entry is not None and entry.upload is not None:
                    token = entry.upload.token
                metadata[UPLOAD_TOKEN] = token
                upload_id = await self.cold.run(self.cold.store.create_multipart, key, metadata,
                                                self.cold.store.part_checksum)
            except ObjectStoreError as e:
                # (A failed HEAD in _object_key comes here before any key is chosen.)
                log.error("could not start the upload of %r: %s", rel, e)
                if self.config.durability == "writeback":
                    # The writer goes on into staging; streaming is tried again later.
                    data.route_after = time.monotonic() + ROUTE_RETRY
                    return
                raise _err(errno.EIO) from None
            if entry is not None:
                assert entry.upload is not None
                entry.upload.upload_id = upload_id
                self.journal.record(data.staging_id, entry)
            await self._drop_mirror(data)  # bound for the bucket, not the warm tier
            data.upload = StreamingUpload(self.cold, self.hot, self._nursery, data.staging_fd,
                                          key, upload_id, self.config.part_size,
                                          self.config.upload_window,
                                          self.part_recorder(data.staging_id), token,
                                          patient=self.config.durability == "writeback",
                                          checksum=self.cold.store.part_checksum)
            log.info("streaming %s to %s (upload %s)", rel, key, upload_id)
        await data.upload.feed(data.written)

    async def _object_key(self, rel: bytes, data: OpenFile, entry: Entry | None) -> str:
        """The key of a new object, recorded in the journal before its upload is created (so
        that no crash leaves an upload nobody knows of).

        It is the file's path at upload time, unless another file's object has that key: a
        cold file renamed away keeps its object, and a new file written under the old name
        (a checkpoint written to a temp name and renamed, again and again) must not overwrite
        it. Then the key gets a suffix, ``<path>~<12 hex digits>``. In a local folder, where
        an object cannot also be a folder, an object in the way of the key's folders gets the
        suffix in the key instead (``ckpt~<hex>/model.pt``). A key the store would refuse for
        its length is cut to fit (``ObjectStore.fit_key``). A file's own previous object is
        overwritten. Keys already headed for are held by their journal entries; this one is
        taken before the HEAD, so two uploads can never choose the same key."""
        fit = self.cold.store.fit_key
        key = fit(self.config.bucket.key(key_text(rel)))
        moves = 0
        own = data.replaces_object
        checked = key == own
        if not checked and any(e.upload is not None and e.upload.key == key
                               for sid, e in self.journal.entries.items()
                               if sid != data.staging_id):
            key, checked = fit(unique_key(key)), True
        while True:
            if entry is not None:
                entry.upload = Upload(key, time.time(), self.config.part_size,
                                      checksum=self.cold.store.part_checksum)
                self.journal.record(data.staging_id, entry)  # type: ignore[arg-type]
                await self.journal.sync()
            if checked:
                return key
            try:
                await self.cold.run(self.cold.store.head, key)
            except NoSuchObject:
                return key
            except KeyInTheWay as e:
                log.info("%s", e)
                moves += 1
                if moves > MAX_KEY_MOVES:  # a key the cut keeps putting under an object
                    raise ObjectStoreError(f"no free key found for {key}") from None
                key = fit(unique_key(e.at) + key[len(e.at):])
                continue  # (that folder may be taken too: look again)
            log.info("%s already holds another file's object: this one gets a key of its own",
                     key)
            key, checked = fit(unique_key(key)), True

    async def _fresh_base(self, inode: Inode, data: OpenFile) -> os.stat_result | None:
        """The open file's attributes on the warm tier (mode, link count), read again if a
        namespace change made them stale (``_forget_base``)."""
        if data.base is None and inode.data is data:
            try:
                await self._refresh(inode)
            except OSError as e:  # (renamed or unlinked meanwhile, say)
                log.warning("could not read the attributes of inode %d again: %s",
                            inode.ino, e)
        return data.base

    @staticmethod
    def _file_mode(inode: Inode, data: OpenFile) -> int:
        """A file's permission bits: a cold file's are in its stub (the symlink's own mode
        means nothing). ``data.base`` must be fresh (``_fresh_base``)."""
        if inode.stub is not None:
            return inode.stub.mode
        return stat.S_IMODE(data.base.st_mode) if data.base is not None else 0o644

    def part_recorder(self, sid: str) -> Callable[[int, str], Awaitable[None]]:
        """Make each completed part durable in the journal before its bytes leave staging."""

        async def record(number: int, receipt: str) -> None:
            entry = self.journal.entries.get(sid)
            if entry is None or entry.upload is None:
                return
            entry.upload.parts[number] = receipt
            self.journal.record(sid, entry)
            await self.journal.sync()

        return record

    def _rule_for(self, inode: Inode) -> str:
        """The tier a path rule pins this file to ("warm", "cold"), or "" for none."""
        rules = self.config.rules
        rel = self._rel_or_none(inode) if rules else None
        if rel is None:
            return ""
        path = os.fsdecode(rel)
        for pattern, tier in rules:
            if fnmatch.fnmatchcase(path, pattern):
                return tier
        return ""

    async def flush(self, fh: int) -> None:
        handle = self._handles[fh]
        data = handle.data
        if not handle.writable:
            return
        if data.error is not None and data.writers <= 1:
            error, data.error = data.error, None
            raise error  # a write-back publish failed since the last close: say so once
        if not data.dirty:
            return
        if data.upload is not None and data.writers > 1:
            await data.upload.wait_idle()  # another writer goes on: the object is not done
            return
        if data.writers <= 1:
            self._mark_closed(data)
            if self.config.durability == "writeback":
                # Staged and journaled is enough: the last release hands it to write-back.
                await self.journal.sync()
                return
        try:
            await self._publish(handle.inode, data)
        except OSError:
            # The writer hears of it; the staged data is kept, and durably so, for the next
            # close, fsync or mount to try again.
            await self._keep_staged(data)
            raise

    def _reopened(self, data: OpenFile) -> None:
        """New writes to staged content that a close had released: it may not be published
        as it is any more (it would be half-written)."""
        entry = self._journal_entry(data)
        if entry is not None and entry.closed:
            entry.closed = False
            if entry.upload is None:
                entry.synced = None  # what was on disk is being changed
            self.journal.record(data.staging_id, entry)  # type: ignore[arg-type]

    async def _keep_staged(self, data: OpenFile) -> None:
        """Publishing closed data failed, and it stays staged until a later try: flush it to
        the hot disk and say so in the journal, so that it outlives a restart of the system
        too (after one, recovery publishes only staged data known to be on disk)."""
        entry = self._journal_entry(data)
        if (entry is None or not entry.closed or entry.synced == entry.size
                or data.staging_fd is None):
            await self.journal.sync()
            return
        try:
            await self.hot.run(os.fdatasync, data.staging_fd)
        except OSError as e:
            log.error("flushing the staged data of %s to the hot disk failed: %s",
                      data.staging_id, e)
            await self.journal.sync()
            return
        entry.synced = entry.size
        self.journal.record(data.staging_id, entry)  # type: ignore[arg-type]
        await self.journal.sync(durable=True)

    def _mark_closed(self, data: OpenFile) -> None:
        """The last writer closed the file: its staged content may be published, and will
        be by recovery if a crash comes first."""
        entry = self._journal_entry(data)
        if entry is None:
            return
        entry.closed = True
        entry.size, entry.atime_ns, entry.mtime_ns = data.size, data.atime_ns, data.mtime_ns
        self.journal.record(data.staging_id, entry)  # type: ignore[arg-type]

    async def fsync(self, fh: int) -> None:
        handle = self._handles[fh]
        data = handle.data
        if data.upload is not None:
            # What was cut into parts is stored; the object appears when the last writer
            # closes, or at recovery after a crash (the journal keeps the fsynced size).
            await data.upload.wait_idle()
            entry = self.journal.entries.get(data.staging_id or "")
            if entry is not None and data.staging_fd is not None:
                # The tail not yet cut into parts is on the hot disk only: flush it first.
                await self.hot.run(os.fdatasync, data.staging_fd)
                entry.synced = data.size
                self.journal.record(data.staging_id, entry)  # type: ignore[arg-type]
                await self.journal.sync(durable=True)  # fsync's promise: past a power loss
        elif data.dirty:
            await self._publish(handle.inode, data)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if handle.data.reader is not None:
            handle.data.reader.closed(fh)
        await self._let_go(handle.inode, handle.data, handle.writable)

    def _hold(self, inode: Inode, data: OpenFile, writable: bool = False) -> None:
        """Keep an inode's open-file state alive: a handle does, and so does an operation
        that stages a change without one (a truncate by path) until ``_let_go``."""
        data.handles += 1
        data.writers += writable
        self.inodes.opened(inode)

    async def _let_go(self, inode: Inode, data: OpenFile, writable: bool = False) -> None:
        """The end of a ``_hold``; the last one publishes what is staged (write-back: in the
        background) and retires the state."""
        data.handles -= 1
        data.writers -= writable
        try:
            if data.handles == 0:
                if data.dirty and inode.links and self.config.durability == "writeback":
                    self._start_writeback(inode, data)
                    return
                if data.dirty:
                    try:
                        await self._publish(inode, data)
                    except OSError as e:
                        log.error("publishing inode %d failed at release; staged data kept "
                                  "as %s: %s", inode.ino, data.staging_id, e)
                        await self._keep_staged(data)
                # (Something that took hold of the state during that publish retires it.)
                if (inode.ino not in self.writeback and data.handles == 0
                        and inode.data is data):
                    await self._discard(inode, data)
        finally:
            self.inodes.closed(inode)

    def _start_writeback(self, inode: Inode, data: OpenFile) -> None:
        """Publish a closed file in the background, retrying until it is home."""
        if inode.ino in self.writeback or self._nursery is None:
            return
        self.writeback[inode.ino] = (inode, data)
        self.inodes.opened(inode)  # the inode stays known until its data is home
        self._nursery.start_soon(self._writeback, inode, data)

    async def _writeback(self, inode: Inode, data: OpenFile) -> None:
        delay = 1.0
        try:
            while data.dirty and inode.links:
                try:
                    await self._publish(inode, data)
                    data.error = None
                except OSError as e:
                    self.counters.add("upload_errors")
                    data.error = e
                    log.error("write-back of inode %d failed, retrying in %.0f s: %s",
                              inode.ino, delay, e)
                    await self._keep_staged(data)
                    await trio.sleep(delay)
                    delay = min(delay * 2, WRITEBACK_MAX_DELAY)
        finally:
            del self.writeback[inode.ino]
            if data.handles == 0 and inode.data is data:
                await self._discard(inode, data)
            self.inodes.closed(inode)

    async def _publish_cold(self, inode: Inode, data: OpenFile) -> None:
        """Complete a streaming upload and put its stub in place of the warm file.

        On failure the writer gets EIO and everything stays (staging, the multipart upload
        and its parts) so that the next close or fsync tries again.
        """
        upload = data.upload
        assert upload is not None
        await self._drop_mirror(data)
        since = self._attr_mark(inode)  # a change from here on is taken again below
        await self._fresh_base(inode, data)  # the stub takes the file's mode
        try:
            try:
                info = await upload.finish(data.size)
            except UploadGone:
                if upload.punched:
                    await self._lose_upload(inode, data)
                    raise _err(errno.EIO) from None
                log.warning("the bucket dropped the unfinished upload of %s; all of the file is "
                            "still staged: uploading it again", upload.key)
                await self._drop_upload(data)
                data.route_after = 0.0
                await self._route(inode, data)
                if data.upload is None:
                    raise _err(errno.EIO) from None
                upload = data.upload
                info = await upload.finish(data.size)
        except (ObjectStoreError, OSError) as e:
            log.error("completing the upload of %s failed; staged data kept: %s", upload.key, e)
            raise _err(errno.EIO) from None
        mode = self._file_mode(inode, data)
        stub: Stub | None = Stub(info.key, info.size, info.etag, mode, data.mtime_ns)
        fresh: int | None = None  # a descriptor on the warm file, if it comes back there
        old: int | None = None
        assert stub is not None
        if info.size < self.config.large_file_threshold and data.rule != "cold":
            # Streamed early (stream_after) but small in the end: it belongs on the warm tier.
            st = await self._bring_back(inode, data, stub, since)
            stub = None
            if st is not None and inode.links:
                # Opened now, while reads still go to staging: the switch below has no await.
                async with self._ns_lock.shared():
                    fresh = await self.warm.run(self.warm.open, self.inodes.path(inode),
                                                os.O_RDONLY)
            await self._delete_object(info.key)
        else:
            async with self._ns_lock:
                rel = self._rel_or_none(inode)
                if rel is None:  # unlinked while we completed it
                    await self._delete_object(info.key)
                    st = None
                else:
                    if self._attr_mark(inode) != since:  # (chmod, utime, rename meanwhile)
                        data.base = None
                        await self._fresh_base(inode, data)
                        stub = dataclasses.replace(stub, mode=self._file_mode(inode, data),
                                                   mtime_ns=data.mtime_ns)
                    st = await self.warm.run(self.warm.replace_symlink, rel,
                                             stub.encode(self.config.bucket))
                    self._dir_attrs.clear()
        # One step, no await: a getattr in between would see neither the staged size nor the
        # stub, and the kernel would cache what it saw.
        data.upload = None
        data.dirty = False
        sid, fd = data.staging_id, data.staging_fd
        data.staging_id = data.staging_fd = None
        data.created = False  # staging again starts from the object (or the warm file)
        if st is not None:
            inode.stub = data.stub = stub
            self.inodes.rekey(inode, st)
            data.base = st
            if fresh is not None:  # back on the warm tier: read it there from now on
                old, data.warm_fd = data.warm_fd, fresh
                data.warm_id = warm_id(st)
        inode.cached_version = None
        replaced, data.replaces_object = data.replaces_object, None
        self.invalidate_attrs(inode.ino)
        await self.hot.run(_close_and_remove, self.hot, sid, fd)
        if old is not None:
            await self.warm.run(os.close, old)
        if sid is not None:
            self.journal.drop(sid)
        if replaced not in (None, info.key):
            await self._delete_object(replaced)

    async def _lose_upload(self, inode: Inode, data: OpenFile) -> None:
        """The bucket dropped an unfinished upload after some of its parts had left staging
        (a lifecycle rule that aborts old incomplete uploads, or another client): those bytes
        exist nowhere any more. Trying again could never succeed, and write-back and unmount
        would wait for it for ever; so the file keeps what it had before this write, what is
        still staged is set aside for a person (as recovery does), and the writer gets EIO.
        Caller holds ``data.lock``."""
        upload, data.upload = data.upload, None
        entry = self._journal_entry(data)
        sid, fd = data.staging_id, data.staging_fd
        data.staging_id = data.staging_fd = None
        data.dirty = False
        data.size = data.written = 0
        self.counters.add("uploads_lost")
        kept = None
        if fd is not None:
            await self.hot.run(os.close, fd)
        if sid is not None:
            note = entry.encode() if entry is not None else b""
            kept = await self.hot.run(self.hot.set_aside, sid, note)
            self.journal.drop(sid)
        inode.cached_version = None
        self.invalidate_attrs(inode.ino)
        log.error("the bucket dropped the unfinished upload of %s (%s) after parts of it had "
                  "left the hot tier: that content is lost, the file keeps its previous content; "
                  "what was still staged is kept as %s", self._rel_or_none(inode),
                  upload.key if upload is not None else "?", kept)

    async def _bring_back(self, inode: Inode, data: OpenFile, stub: Stub, since: AttrMark
                          ) -> os.stat_result | None:
        """Copy a completed object into a temp file beside its warm target and rename it into
        place (the bytes pass through memory only, never the hot tier). It takes the
        attributes of the file it replaces, and ``stub``'s mode if that is a stub."""
        rel = self._rel_or_none(inode)
        if rel is None:
            return None
        tmp, fd = await self.warm.run(self.warm.open_temp, split(rel)[0])
        try:
            for offset in range(0, stub.size, self.config.part_size):
                block = await self._get(stub, offset, self.config.part_size)
                await self.warm.run(os.pwrite, fd, block, offset)
        except BaseException:
            await self.warm.run(self.warm.drop_temp, tmp, fd)
            raise
        await self.warm.run(self.warm.finish_temp, tmp, fd, stub.size, rel,
                            (data.atime_ns, data.mtime_ns), _mode_override(inode))
        return await self._rename_into_place(inode, data, tmp, since)

    async def _discard(self, inode: Inode, data: OpenFile) -> None:
        """Drop the open-file state after the last handle; staging goes unless still needed."""
        inode.data = None
        going = trio.Event()  # before any await: a write finding the disk full waits for it
        self._staging_going.add(going)
        try:
            await self._free_open_file(inode, data)
        finally:
            self._staging_going.discard(going)
            going.set()

    async def _free_open_file(self, inode: Inode, data: OpenFile) -> None:
        if data.upload is not None:
            if not inode.links:
                await data.upload.abort()  # unlinked: nobody will want the object
            else:
                log.error("upload %s of %s left unfinished for recovery", data.upload.upload_id,
                          data.upload.key)
        if not inode.links and inode.stub is not None:
            await self._delete_object(inode.stub.key)  # unlinked while open
        await self._drop_mirror(data)  # before staging_fd closes: a copy may read it
        sid = data.staging_id
        remove = None if data.dirty and inode.links else sid

        def close() -> None:
            data.close_fds()
            if remove is not None:
                self.hot.remove_staging(remove)

        await self.hot.run(close)
        if remove is not None:
            self.journal.drop(remove)

    def _journal_entry(self, data: OpenFile) -> Entry | None:
        """The journal entry of a file's staged data, if it has one."""
        return None if data.staging_id is None else self.journal.entries.get(data.staging_id)

    async def _drop_upload(self, data: OpenFile) -> None:
        """Abort a file's multipart upload; its data stays staged."""
        upload, data.upload = data.upload, None
        assert upload is not None
        await upload.abort()
        entry = self._journal_entry(data)
        if entry is not None and entry.upload is not None:
            entry.upload = None
            self.journal.record(data.staging_id, entry)  # type: ignore[arg-type]

    def _mark_published(self, data: OpenFile) -> None:
        """The staged content is home: recovery has nothing to publish for it."""
        entry = self._journal_entry(data)
        if entry is not None and entry.closed:
            entry.closed = False
            entry.replaces = None
            self.journal.record(data.staging_id, entry)  # type: ignore[arg-type]

    async def _publish(self, inode: Inode, data: OpenFile) -> None:
        """Put staged data on the warm tier so that readers there see it whole: copied to a
        temp name, fsynced and renamed into place (written in place for hard-linked files),
        or, where the tiers share a file system, the staging file itself fsynced and renamed.
        Takes ``data.lock``."""
        async with data.lock:
            if not data.dirty or data.staging_fd is None:
                return
            rel = self._rel_or_none(inode)
            if rel is None:  # unlinked: nothing to publish, nobody can see it
                data.dirty = False
                await self._drop_mirror(data)
                return
            if data.upload is None:
                # A file past the threshold whose upload could not start while it was written
                # (or was dropped by the bucket) must not end up on the warm tier: start it now.
                data.route_after = 0.0
                await self._route(inode, data)
                if data.route_after:
                    raise _err(errno.EIO)
            if (data.upload is not None and data.upload.cut == 0
                    and data.size < self.config.large_file_threshold and data.rule != "cold"):
                # Past the threshold once, small in the end (truncated), and none of it has
                # left staging: no object for it, it goes to the warm tier from staging.
                await self._drop_upload(data)
            with self.inodes.replacing(inode):
                if data.upload is not None:
                    await self._publish_cold(inode, data)
                    return
                times = (data.atime_ns, data.mtime_ns)
                st = await self._publish_warm(inode, data, rel, times, _mode_override(inode))
                if st is None:  # unlinked meanwhile
                    data.dirty = False
                    return
                self.inodes.rekey(inode, st)
            data.base = st
            data.dirty = False
            self._mark_published(data)
            inode.stub = data.stub = None  # it is a warm file now
            if data.replaces_object is not None:
                await self._delete_object(data.replaces_object)
                data.replaces_object = None
            # The kernel's pages are what was written through it, unless O_DIRECT bypassed them.
            inode.cached_version = None if data.direct_written else _version(st, inode.key)
            data.direct_written = False
        self.invalidate_attrs(inode.ino)

    async def _publish_warm(self, inode: Inode, data: OpenFile, rel: bytes,
                            times: tuple[int, int], mode: int | None
                            ) -> os.stat_result | None:
        """Put the staged data in place on the warm tier: rename the staging file itself
        (tiers on one file system), or finish the head-start temp file if there is one, or
        copy it all; rename. None if the file was unlinked meanwhile."""
        since = self._attr_mark(inode)  # before anything copies them (see Reapply)
        if self.publish_by_rename and data.mirror is None:
            done, st = await self._rename_staging(inode, data, times, mode, since)
            if done:
                return st
        mirror, data.mirror = data.mirror, None
        if mirror is not None:
            await mirror.wait()
            tmp = await self.warm.run(self._finish_mirror, mirror, data, rel, times, mode)
            if tmp is not None:
                try:
                    return await self._rename_into_place(inode, data, tmp, since)
                except LinkedMeanwhile:
                    pass  # the copy below writes it in place
                except FileNotFoundError:
                    pass  # the temp file went with its emptied directory: copy it all
        for _ in range(STALE_TRIES):
            copied = await self._at_path(inode, self.warm.publish_copy, data.staging_fd,
                                         data.size, times, mode, key_ids(inode.key))
            if copied is None:
                return None  # unlinked meanwhile
            tmp, st = copied
            if tmp is None:
                return st  # hard-linked: written in place
            try:
                return await self._rename_into_place(inode, data, tmp, since)
            except LinkedMeanwhile:
                continue  # renamed while it was copied: written in place next time round
        raise _err(errno.EAGAIN)

    async def _at_path(self, inode: Inode, fn: Callable[..., R], *args: Any) -> R | None:
        """``fn(path, *args)`` in a warm worker, on the inode's path as it is when the call
        starts: a rename through the mount meanwhile makes that path vanish under the call
        (FileNotFoundError), and it runs again on the new one. None once unlinked."""
        for _ in range(STALE_TRIES):
            rel = self._rel_or_none(inode)
            if rel is None:
                return None
            try:
                return await self.warm.run(fn, rel, *args)
            except FileNotFoundError:
                if self._rel_or_none(inode) == rel:
                    raise  # not renamed: gone behind tierfs's back
        raise _err(errno.EAGAIN)

    async def _rename_staging(self, inode: Inode, data: OpenFile, times: tuple[int, int],
                              mode: int | None, since: AttrMark
                              ) -> tuple[bool, os.stat_result | None]:
        """Publish by renaming the staging file over the file's name: on one file system a
        copy would write every byte a second time. The staging file becomes the published
        file (kept open as the file's warm descriptor), and a writer that goes on stages a
        fresh copy of it: the bytes a publish by copy would have copied, and only if more
        writes come. (False, None) when this cannot serve and the caller copies: a
        hard-linked file, or tiers on different file systems after all."""
        assert data.staging_fd is not None and data.staging_id is not None
        settled = await self._at_path(inode, self.warm.settle_staged, data.staging_fd,
                                      data.size, times, mode)
        if settled is None:
            return True, None  # unlinked meanwhile
        if not settled:
            return False, None
        sid = data.staging_id
        async with self._ns_lock:
            target = self._rel_or_none(inode)
            if target is None:
                return True, None  # unlinked meanwhile: the staging file goes at discard
            # The replaced file's descriptor is closed in the same call. The file is staged,
            # so reads use the staging descriptor; a warm block read-ahead task still holding
            # the old number can only fail or cache bytes under the old identity, which no
            # reader asks for any more.
            again = self._reapply(inode, data, since)
            try:
                adopted = await self.adopt_staging(
                    sid, target, data.warm_fd,
                    None if again is None else (data.staging_fd, again))
            except LinkedMeanwhile:
                return False, None  # the copy writes it in place
            if adopted is None:
                return False, None
            st, parent_st = adopted
            # No await from the rename to here: reads find the content under either name.
            data.warm_fd, data.staging_fd, data.staging_id = data.staging_fd, None, None
            data.created = False  # staging again starts from the published file
            data.warm_id = warm_id(st)
            self._dir_changed(inode, parent_st)
        self.journal.drop(sid)
        return True, st

    def _attr_mark(self, inode: Inode) -> AttrMark:
        """Taken by a publish before it copies the attributes of the file it will replace:
        if the mark differs at its rename, it takes them again (``Reapply``). An attribute
        change of the file, or any rename (which can move another file to the path the copy
        was read from while the copy ran), moves the mark."""
        return inode.attr_changes, self._renames

    def _reapply(self, inode: Inode, data: OpenFile, since: AttrMark) -> Reapply | None:
        """What a publish must take again from the file it replaces, if the file's attributes
        may have changed since it copied them (``since``). Caller holds ``_ns_lock``."""
        if self._attr_mark(inode) == since:
            return None
        return Reapply(_mode_override(inode), (data.atime_ns, data.mtime_ns))

    async def adopt_staging(self, sid: str, target: bytes, retire: int | None,
                            again: tuple[int, Reapply] | None = None
                            ) -> tuple[os.stat_result, os.stat_result] | None:
        """Rename a settled staging file over ``target`` (``WarmTier.adopt``): the attributes
        of the file and of its directory, or None if the tiers turn out to be on different
        mounts (EXDEV), which turns publishing by rename off for good."""
        try:
            return await self.warm.run(self.warm.adopt, self.hot.staging_dir / sid, target,
                                       retire, again)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
        log.info("the hot and warm tiers are on different mounts: publishing by copy")
        self.publish_by_rename = False
        return None

    async def _rename_into_place(self, inode: Inode, data: OpenFile, tmp: bytes,
                                 since: AttrMark
                                 ) -> os.stat_result | None:
        """Rename a finished temp file over the file's current name, under the namespace lock
        (None, and the temp file removed, if the file was unlinked meanwhile). ``since``:
        ``_attr_mark`` before the temp file took the attributes of the old one."""
        async with self._ns_lock:
            target = self._rel_or_none(inode)
            if target is None:
                await self.warm.run(self.warm.unlink, tmp)
                return None
            st, parent_st = await self.warm.run(self.warm.replace, tmp, target,
                                                self._reapply(inode, data, since))
            self._dir_changed(inode, parent_st)
            return st

    def _finish_mirror(self, mirror: Mirror, data: OpenFile, rel: bytes,
                       times: tuple[int, int], mode: int | None) -> bytes | None:
        """The head-start temp file made whole and fsynced, or None when it cannot serve
        (then it is removed and the caller copies everything). Blocking."""
        try:
            st = self.warm.lstat(rel)
        except FileNotFoundError:
            st = None
        if not mirror.usable or (st is not None and st.st_nlink > 1):
            mirror.drop()  # hard-linked since: it must be published in place
            return None
        assert data.staging_fd is not None
        try:
            return mirror.finish(data.staging_fd, data.size, rel, times, mode)[0]
        except OSError as e:
            log.warning("finishing the head-start copy of %r failed, copying it all: %s",
                        rel, e)
            return None

    # -- file system ----------------------------------------------------------------------

    async def statfs(self) -> os.statvfs_result:
        return await self.warm.run(self.warm.statvfs)

    def _remember_xattrs(self, inode: Inode, names: frozenset[bytes]) -> None:
        inode.xattr_names = names
        inode.xattr_names_until = time.monotonic() + self.config.attr_timeout

    def _known_xattrs(self, inode: Inode) -> frozenset[bytes] | None:
        """The inode's xattr names if listed within attr_timeout (and not changed since)."""
        if inode.xattr_names is not None and time.monotonic() < inode.xattr_names_until:
            return inode.xattr_names
        return None

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        inode = self.inodes[ino]
        known = self._known_xattrs(inode)
        if known is not None and name not in known:
            raise _err(errno.ENODATA)

        def get(rel: bytes) -> tuple[bytes | None, list[bytes]]:
            # List too: one more syscall now saves a request per later absent name.
            names = self.warm.listxattr(rel)
            return (self.warm.getxattr(rel, name) if name in names else None), names

        async with self._ns_lock.shared():
            value, names = await self.warm.run(get, self.inodes.path(inode))
        self._remember_xattrs(inode, frozenset(names))
        if value is None:
            raise _err(errno.ENODATA)
        return value

    async def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        self._dir_attrs.clear()
        inode = self.inodes[ino]
        inode.xattr_names = None
        async with self._ns_lock:  # see Inode.attr_changes
            await self.warm.run(self.warm.setxattr, self.inodes.path(inode), name, value)
            inode.attr_changes += 1

    async def listxattr(self, ino: int) -> list[bytes]:
        inode = self.inodes[ino]
        async with self._ns_lock.shared():
            names = await self.warm.run(self.warm.listxattr, self.inodes.path(inode))
        self._remember_xattrs(inode, frozenset(names))
        return names

    async def removexattr(self, ino: int, name: bytes) -> None:
        self._dir_attrs.clear()
        inode = self.inodes[ino]
        inode.xattr_names = None
        async with self._ns_lock:  # see Inode.attr_changes
            await self.warm.run(self.warm.removexattr, self.inodes.path(inode), name)
            inode.attr_changes += 1


def _same_file_system(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def _close_and_remove(hot: HotTier, sid: str | None, fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
    if sid is not None:
        hot.remove_staging(sid)


def _forget_base(inode: Inode | None) -> None:
    """A namespace change altered an open file's link count or ctime: re-read them, if they
    can be read again (a name or a warm descriptor left; an unlinked cold file has only its
    remembered stub, and the link count comes from the inode)."""
    if inode is None or inode.data is None:
        return
    if inode.links or inode.data.warm_fd is not None:
        inode.data.base = None
