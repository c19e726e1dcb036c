"""The filesystem core's face: the operations the FUSE layer (and the control socket, and the
core tests) call, each delegated to the part that does it.

The parts, built here around one ``Core``: the namespace (``vfs.namespace``), directory
listings (``vfs.listing``), open files (``vfs.openfiles``), reads (``vfs.reads``), and the
write path (``write``: staging, placement, warm and cold publishing, write-back, the journal).
Nothing here decides anything; see docs/architecture.md for the read and write paths.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

import trio

from tierfs.paths import show
from tierfs.cache.blocks import BlockCache
from tierfs.cache.entries import Source
from tierfs.cache.counters import Counters
from tierfs.config import Config
from tierfs.core.attrs import BLOCK_SIZE, Attrs, SetAttr, err
from tierfs.core.context import Core
from tierfs.core.garbage import AT_MOUNT
from tierfs.core.inodes import Inode, InodeTable
from tierfs.core.naming import never_named
from tierfs.core.openfile import WarmId
from tierfs.index import Index
from tierfs.stubs import Stub
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier
from tierfs.tiers.warm import WarmTier
from tierfs.vfs.listing import DirEntry, Listing
from tierfs.vfs.namespace import Namespace
from tierfs.vfs.openfiles import OpenFiles
from tierfs.vfs.reads import Reads
from tierfs.vfs.upkeep import Upkeep
from tierfs.write.cold import ColdPublisher
from tierfs.write.demote import Demoter
from tierfs.write.acklog import NAME as ACKS, AckLog, committed_seq
from tierfs.write.journal import Journal
from tierfs.write.publish import Publisher
from tierfs.write.recovery import Recovery, Report, publishable
from tierfs.write.staging import Staging
from tierfs.write.warm import WarmPublisher
from tierfs.write.writeback import WriteBack
from tierfs.write.writer import Writer

__all__ = ["BLOCK_SIZE", "Attrs", "DirEntry", "FileSystem", "SetAttr"]

log = logging.getLogger(__name__)

#: Asked by the kernel before every write to a file (to clear it): see ``getxattr``.
CAPABILITY = b"security.capability"


class FileSystem:
    def __init__(self, config: Config, hot: HotTier, warm: WarmTier, cold: ColdTier,
                 index: Index, cache_warm: bool = False) -> None:
        self.core = core = Core.open(config, hot, warm, cold, index, cache_warm)
        self.journal = Journal(core.batch, hot.run,
                               AckLog(hot.index_dir / ACKS, committed_seq(index)))
        self.staging = Staging(core, self.journal)
        self.warm_publisher = WarmPublisher(core, self.journal)
        self.cold_publisher = ColdPublisher(core, self.journal, self.warm_publisher)
        self.publisher = Publisher(core, self.journal, self.warm_publisher,
                                   self.cold_publisher)
        self.writer = Writer(core, self.journal, self.staging, self.warm_publisher,
                             self.cold_publisher)
        self.writeback = WriteBack(core, self.journal, self.publisher, self.staging)
        self.namespace = Namespace(core, self.journal)
        self.listing = Listing(core, self.namespace)
        self.files = OpenFiles(core, self.journal, self.namespace, self.staging, self.writer,
                               self.publisher, self.writeback)
        self.reads = Reads(core, self.publisher)
        self.upkeep = Upkeep(core)
        self.demoter = Demoter(core, self.journal, self.cold_publisher)
        self.upkeep.jobs.append(self.demoter.run_quota)
        self.upkeep.jobs.append(core.garbage.run)

    # -- what the mount, the control socket and the tests look at --------------------------

    @property
    def config(self) -> Config:
        return self.core.config

    @property
    def hot(self) -> HotTier:
        return self.core.hot

    @property
    def warm(self) -> WarmTier:
        return self.core.warm

    @property
    def cold(self) -> ColdTier:
        return self.core.cold

    @property
    def index(self) -> Index:
        return self.core.index

    @property
    def inodes(self) -> InodeTable:
        return self.core.inodes

    @property
    def cache(self) -> BlockCache:
        return self.core.cache

    @property
    def counters(self) -> Counters:
        return self.core.counters

    @property
    def cache_warm(self) -> bool:
        return self.core.cache_warm

    @property
    def nursery(self) -> trio.Nursery | None:
        """Where background tasks of the filesystem run (None before run_background)."""
        return self.core.nursery

    @property
    def history(self) -> collections.deque[tuple[float, dict[str, int]]]:
        return self.upkeep.history

    @property
    def invalidate_attrs(self) -> Callable[[int], None]:
        return self.core.invalidate_attrs

    @invalidate_attrs.setter
    def invalidate_attrs(self, fn: Callable[[int], None]) -> None:
        self.core.invalidate_attrs = fn

    def cold_source(self, stub: Stub) -> Source:
        return self.reads.cold_source(stub)

    def warm_source(self, version: WarmId, fetch: Callable[[int, int], Awaitable[bytes]]
                    ) -> Source:
        return self.reads.warm_source(version, fetch)

    # -- lifecycle ------------------------------------------------------------------------

    async def run_background(self,
                             task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                             ) -> None:
        await self.upkeep.run(task_status=task_status)

    async def save_index(self) -> None:
        await self.upkeep.save_index()

    async def health(self) -> dict[str, dict[str, object]]:
        return await self.upkeep.health()

    async def recover(self, rebooted: bool = False) -> Report:
        """Finish or undo what the journal says was in flight when tierfs last stopped (at
        mount, before serving; see ``write.recovery``)."""
        report = await Recovery(self.core, self.journal, self.publisher, self.staging,
                                self.writeback
                                ).run(rebooted)
        await self.demoter.recover()
        garbage = self.core.garbage
        await self.core.hot.run(garbage.load, self.core.index)
        if garbage.owed:
            owed = len(garbage.owed)
            try:
                left = await garbage.retry(AT_MOUNT)
            except Exception:  # (what is owed waits for the running mount's retries)
                log.exception("recovery: retrying the cleanups owed to the bucket failed")
            else:
                log.info("recovery: %d cleanup(s) of the bucket were owed, %d left", owed,
                         left)
        return report

    async def shutdown(self) -> list[str]:
        """Publish whatever is still dirty and commit. What could not be published stays
        journaled (and staged) for the next mount: its paths are returned, and written on the
        hot tier for ``tierfs unmount`` to report."""
        await self.settle_names()
        failed = await self.files.publish_all()
        for inode, e in failed:
            data = inode.data
            log.error("could not publish %s at shutdown, staged data kept as %s: %s",
                      show(self.core.rel_or_none(inode) or b"(unlinked)"),
                      data.staging_id if data is not None else "?", e)
        await self.core.cache.settle()  # fetched blocks waiting to be stored, then indexed
        await self.save_index()
        unpublished = await self._unpublished()
        await self.core.hot.run(self.core.hot.write_unpublished, unpublished)
        return unpublished

    async def _unpublished(self) -> list[str]:
        """Staged data not home: an open file's that is still dirty (what failed just now),
        and what the journal keeps for no open file that recovery would publish (a release
        or write-back failed to publish it before)."""
        staged = set(await self.core.hot.run(self.core.hot.staged_ids))
        live = {d.staging_id: d for _, d in self.writeback.files.values()}
        live.update((h.data.staging_id, h.data) for h in self.files.handles.values())
        out = []
        for sid, entry in self.journal.entries.items():
            if not entry.path or sid not in staged:
                continue
            data = live.get(sid)
            if data.dirty if data is not None else publishable(entry, False) is not None:
                out.append(show(entry.path))
        return sorted(out)

    def pending_uploads(self) -> tuple[int, int]:
        return self.writeback.pending()

    async def flush_all(self) -> list[tuple[str, str]]:
        """Publish every write-back file now (``tierfs flush``): what failed, (path, why),
        after trying them all."""
        await self.settle_names()
        failed = await self.writeback.publish_all()
        return [(show(self.core.rel_or_none(inode) or b"(unlinked)"), e.strerror or str(e))
                for inode, e in failed]

    async def settle_names(self) -> None:
        """Until every new file's name being made on the warm tier when the call came is
        made, or has failed (``core.naming``): what reads or changes the namespace but a
        lookup, and what acts on a file but through its own handle, waits for that first,
        and finds every name of a create that returned before it."""
        await self.core.namings.settle()

    # -- namespace ------------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> tuple[Inode, Attrs]:
        pending = self.core.namings.child(parent, name)
        if pending is not None:  # (its name is being made: the inode is the one it names)
            self.core.inodes.lookup(pending)
            return pending, await self.namespace.getattr(pending.ino)
        return await self.namespace.lookup(parent, name)

    async def getattr(self, ino: int) -> Attrs:
        return await self.namespace.getattr(ino)

    async def setattr(self, ino: int, changes: SetAttr) -> Attrs:
        await self.settle_names()
        inode = self.core.inodes[ino]
        if changes.size is not None:
            changes = await self.files.resize(inode, changes)
        return await self.namespace.setattr(inode, changes)

    async def readlink(self, ino: int) -> bytes:
        return await self.namespace.readlink(ino)

    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        await self.settle_names()
        return await self.namespace.mkdir(parent, name, mode, uid, gid)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        await self.settle_names()
        return await self.namespace.mknod(parent, name, mode, rdev, uid, gid)

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int
                      ) -> tuple[Inode, Attrs]:
        await self.settle_names()
        return await self.namespace.symlink(parent, name, target, uid, gid)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> tuple[Inode, Attrs]:
        await self.settle_names()
        return await self.namespace.link(ino, new_parent, new_name)

    async def unlink(self, parent: int, name: bytes) -> None:
        await self.settle_names()
        going = self.core.inodes.child(parent, name)
        await self.namespace.unlink(parent, name)
        await self.files.lost_name(going)

    async def rmdir(self, parent: int, name: bytes) -> None:
        await self.settle_names()
        await self.namespace.rmdir(parent, name)

    async def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                     flags: int) -> None:
        await self.settle_names()
        replaced = self.core.inodes.child(new_parent, new_name)
        await self.namespace.rename(parent, name, new_parent, new_name, flags)
        await self.files.lost_name(replaced)

    async def forget(self, items: Sequence[tuple[int, int]]) -> None:
        await self.namespace.forget(items)

    async def statfs(self) -> os.statvfs_result:
        return await self.namespace.statfs()

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        inode = self.core.inodes[ino]
        if name == CAPABILITY and self.core.namings.pending(inode):
            # (asked before every write: a file just made has none, and waits for nothing)
            raise err(errno.ENODATA)
        await self.core.namings.wait(inode)
        return await self.namespace.getxattr(ino, name)

    async def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        await self.settle_names()
        await self.namespace.setxattr(ino, name, value)

    async def listxattr(self, ino: int) -> list[bytes]:
        await self.core.namings.wait(self.core.inodes[ino])
        return await self.namespace.listxattr(ino)

    async def removexattr(self, ino: int, name: bytes) -> None:
        await self.settle_names()
        await self.namespace.removexattr(ino, name)

    # -- directories ----------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        await self.settle_names()
        return await self.listing.opendir(ino)

    async def readdir(self, fh: int, start: int) -> list[tuple[int, DirEntry]]:
        await self.settle_names()
        return await self.listing.readdir(fh, start)

    def dir_entry(self, fh: int, entry: DirEntry) -> tuple[Inode, Attrs]:
        return self.listing.dir_entry(fh, entry)

    def count_lookup(self, inode: Inode, sent: bool) -> None:
        self.listing.count_lookup(inode, sent)

    async def releasedir(self, fh: int) -> None:
        await self.listing.releasedir(fh)

    async def fsyncdir(self, fh: int) -> None:
        await self.settle_names()
        await self.listing.fsyncdir(fh)

    # -- files ----------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> tuple[int, bool, bool]:
        inode = self.core.inodes[ino]
        await self.core.namings.wait(inode)
        if never_named(inode):
            # (its name could not be made: the kernel looks the name up again, and finds
            # what is there, or nothing; a create then makes it anew)
            raise err(errno.ESTALE)
        return await self.files.open(ino, flags)

    async def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int, gid: int
                     ) -> tuple[int, bool, Inode, Attrs]:
        return await self.files.create(parent, name, mode, flags, uid, gid)

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        handle = self.files.handles[fh]
        await self.core.namings.wait(handle.inode)
        return await self.reads.read(fh, handle.inode, handle.data, offset, size)

    async def write(self, fh: int, offset: int, buf: bytes) -> int:
        return await self.files.write(fh, offset, buf)

    async def flush(self, fh: int) -> None:
        await self.files.flush(fh)

    async def fsync(self, fh: int) -> None:
        await self.files.fsync(fh)

    async def release(self, fh: int) -> None:
        await self.files.release(fh)
