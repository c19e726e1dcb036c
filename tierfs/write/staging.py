"""Staging: a file's data on the hot tier while it is written, from the first write (or
truncate) until the state is retired.

The first change copies the file's current data into a new staging file (``copy_to_new``
for a warm file, holes kept; a ranged download for a cold one, of any size, if the hot disk
has room for it; nothing for a file just created or truncated to zero) and journals where it
belongs. ``retire`` ends an open file's state: what is published goes, what is not stays
staged and journaled for the next close, fsync or mount.
"""

from __future__ import annotations

import errno
import logging
import os
import weakref
from pathlib import Path

import trio

from tierfs.cache.store import is_no_space
from tierfs.core.attrs import err
from tierfs.core.context import Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import DataState, OpenFile
from tierfs.paths import show
from tierfs.tiers.base import pwrite_all
from tierfs.tiers.copying import copy_to_new
from tierfs.tiers.hot import INLINE_WRITE
from tierfs.transfer.streaming import give_back_all
from tierfs.write.entries import Entry
from tierfs.write.journal import Journal
from tierfs.write.keephot import keep_warm, take_staging
from tierfs.write.warm import drop_mirror

log = logging.getLogger(__name__)

#: Ranged GETs at a time while a cold file is downloaded into staging.
PARALLEL_GETS = 4

#: The free margin staging a cold file leaves on the hot disk (for the index, the block
#: cache's next blocks and other writers): a twentieth of the disk, at most this.
MARGIN_MAX = 1 << 30


def shortfall(path: str | os.PathLike[str], size: int) -> int:
    """Bytes the disk holding ``path`` lacks to take ``size`` more bytes and keep its margin
    free (0: they fit). Blocking: run it in a hot-tier thread."""
    st = os.statvfs(path)
    margin = min(MARGIN_MAX, st.f_blocks * st.f_frsize // 20)
    return max(0, size + margin - st.f_bavail * st.f_frsize)


class Staging:
    def __init__(self, core: Core, journal: Journal) -> None:
        self.core = core
        self.journal = journal
        #: Open files refused staging for want of room: logged once each, not at every write.
        self._refused: weakref.WeakSet[OpenFile] = weakref.WeakSet()

    async def stage(self, inode: Inode, data: OpenFile, keep: int | None = None,
                    first: tuple[bytes, int] | None = None) -> int | None:
        """Make sure the file's data is in a staging file; copy at most ``keep`` bytes of the
        warm data into it (all of it when None). ``first``, a write (bytes, offset) of the
        caller's: done with the staging file's creation if there is nothing to copy; returns
        the bytes it wrote, None if it was not done. Caller holds ``data.lock``."""
        if data.staged:
            return None
        core = self.core
        # What a lookup read of the warm file may soon be out of date: no open is answered
        # from it (``OpenFiles.open``) until the file is looked up again.
        inode.seen = None
        core.changes += 1  # (nor a lookup from a listing: ``vfs.listed``)
        await core.open_warm(inode, data)
        written = None
        if first is not None and data.created and len(first[0]) <= INLINE_WRITE:
            sid, fd, written = core.hot.new_staging_with(*first)  # (local disk)
        elif first is not None and data.created:
            sid, fd, written = await core.hot.run(core.hot.new_staging_with, *first)
        else:
            sid, fd = await core.hot.run(core.hot.new_staging)
        try:
            size = 0
            if data.created:  # created empty by this open: nothing to copy
                pass
            elif data.stub is not None:
                size = data.stub.size if keep is None else min(data.stub.size, keep)
                await self._room_for(inode, data, size)
                data.atime_ns = data.mtime_ns = data.stub.mtime_ns
                await self._download(inode, data, fd, size)
                data.replaces_object, data.replaces_etag = data.stub.key, data.stub.etag
            elif data.warm_fd is not None:
                st = await core.warm.run(os.fstat, data.warm_fd)
                data.atime_ns, data.mtime_ns = st.st_atime_ns, st.st_mtime_ns
                size = st.st_size if keep is None else min(st.st_size, keep)
                if size:
                    await self._copy_in(data.warm_fd, fd, size)
        except BaseException:
            os.close(fd)
            await core.hot.run(core.hot.remove_staging, sid)
            raise
        data.staging_id, data.staging_fd, data.size = sid, fd, size
        data.stagings += 1
        data.written = size
        # An object's content, any byte of which the writer may change: whole until it is done.
        data.rewrite = data.stub is not None and size > 0
        data.flushed_ahead = 0
        data.to(DataState.STAGED)
        rel = core.rel_or_none(inode)
        if rel is not None:
            self.journal.record(sid, Entry(rel, size=size, atime_ns=data.atime_ns,
                                           mtime_ns=data.mtime_ns,
                                           replaces=data.replaces_object))
        return written

    async def _copy_in(self, warm_fd: int, fd: int, size: int) -> None:
        """Copy a warm file's first ``size`` bytes into a new staging file; a hot disk found
        full makes room as a write into staging does (``make_room``), and the copy is made
        again from the start."""
        try:
            await self.core.warm.run(copy_to_new, warm_fd, fd, size)
        except OSError as e:
            if not is_no_space(e):
                raise
            await self.make_room(size)
            await self.core.hot.run(os.ftruncate, fd, 0)
            await self.core.warm.run(copy_to_new, warm_fd, fd, size)

    async def _room_for(self, inode: Inode, data: OpenFile, size: int) -> None:
        """Make sure the hot disk can take a cold file's ``size`` bytes and still keep a
        margin free (``shortfall``), before anything is downloaded: cached blocks can make
        room, and so can staging files on their way out. ENOSPC if it cannot, logged with the
        path (once for each open file), since the writer sees only the errno."""
        core = self.core
        where = core.hot.staging_dir
        short = await core.hot.run(shortfall, where, size)
        if 0 < short <= core.cache.used:
            for going in list(core.staging_going):
                await going.wait()
            await core.cache.free(short)
            short = await core.hot.run(shortfall, where, size)
        if short > 0:
            self._no_room(inode, data, size, short)
            raise err(errno.ENOSPC)

    def _no_room(self, inode: Inode, data: OpenFile, size: int, short: int | None) -> None:
        if data in self._refused:
            return
        self._refused.add(data)
        rel = self.core.rel_or_none(inode)
        name = show(rel) if rel is not None else f"unlinked inode {inode.ino}"
        if short is None:
            log.warning("%s is not staged to be changed: the hot tier filled up while its %d "
                        "bytes were downloaded", name, size)
        else:
            log.warning("%s is not staged to be changed: its %d bytes would leave the hot "
                        "tier %d bytes short of its free margin", name, size, short)

    async def _download(self, inode: Inode, data: OpenFile, fd: int, size: int) -> None:
        """Copy the first ``size`` bytes of a stub's object into a staging file, a few ranged
        GETs at a time (a large file changed in place waits for all of it), each pinned to
        the stub's ETag: a changed object fails the change, never mixes versions."""
        core = self.core
        stub = data.stub
        assert stub is not None
        chunk = core.config.part_size
        starts = iter(range(0, size, chunk))
        failures: list[OSError] = []

        async def fetch() -> None:
            for start in starts:  # (shared: each task takes the next chunk)
                if failures:
                    return
                try:
                    block = await core.get_object(stub, start, min(chunk, size - start))
                    await core.hot.run(pwrite_all, fd, block, start)
                except OSError as e:
                    failures.append(e)
                    return

        async with trio.open_nursery() as nursery:
            for _ in range(min(PARALLEL_GETS, core.config.cold_threads)):
                nursery.start_soon(fetch)
        if failures:
            if is_no_space(failures[0]):  # filled up by others since the room was checked
                self._no_room(inode, data, size, None)
            raise failures[0]

    async def make_room(self, nbytes: int) -> None:
        """A write into staging found the hot disk full: the parts of streaming files already
        uploaded leave staging (``streaming.give_back_all``), cached blocks can go (other
        staging and pins cannot), and staging files whose release is under way soon will."""
        if await give_back_all(self.core.hot, nbytes) >= nbytes:
            return
        for going in list(self.core.staging_going):
            await going.wait()
        await self.core.cache.free(4 * nbytes + self.core.config.block_size)

    async def retire(self, inode: Inode, data: OpenFile) -> None:
        """Drop the open-file state after the last holder; staging goes unless still needed
        (data not yet home, for a later try)."""
        inode.data = None
        going = trio.Event()  # before any await: a write finding the disk full waits for it
        self.core.staging_going.add(going)
        try:
            await self._free(inode, data)
        finally:
            self.core.staging_going.discard(going)
            going.set()

    async def _free(self, inode: Inode, data: OpenFile) -> None:
        core = self.core
        keep = data.dirty and bool(inode.links)
        # Not home, and its names left are made elsewhere: its journal entry has no path for
        # a later try to publish at, so the data is kept for a person instead of dropped.
        stranded = data.dirty and not inode.links and data.linked_elsewhere
        # Published by copy and unchanged since: staging becomes the warm file's cached blocks.
        published = data.published_as if inode.links else None
        data.to(DataState.RETIRED)
        if data.upload is not None:
            if not inode.links:
                await data.upload.abort()  # unlinked: nobody will want the object
            else:
                log.error("upload %s of %s left unfinished for recovery", data.upload.upload_id,
                          data.upload.key)
                await data.upload.release()  # (its staging descriptor is closed below)
        if data.drop_object is not None:  # unlinked while open
            await core.delete_object(data.drop_object.key, data.drop_object.etag)
        await drop_mirror(core.warm, data)  # before staging_fd closes: a copy may read it
        sid = data.staging_id
        remove = None if keep else sid
        kept_fd = None
        if published is not None and remove is not None:
            kept_fd, data.staging_fd, remove = data.staging_fd, None, None
        entry = self.journal.entry_of(data)
        note = entry.encode() if entry is not None else b""

        aside = remove is not None and stranded and await core.warm.run(_still_named,
                                                                         data.warm_fd)

        # Out of ``data`` before the thread closes them: a task still holding the file (a
        # read-ahead) finds no number there that may be another file's by then.
        fds = [fd for fd in (core.let_go_reader_fd(data), data.warm_fd, data.staging_fd)
               if fd is not None]
        data.warm_fd = data.staging_fd = None

        def close() -> Path | None:
            failed: OSError | None = None
            for fd in fds:  # (each closed once, even after one failed)
                try:
                    os.close(fd)
                except OSError as e:
                    failed = failed or e
            if failed is not None:
                raise failed
            if remove is not None and aside:
                return core.hot.set_aside(remove, note)
            if remove is not None:
                core.hot.remove_staging(remove)
            return None

        if fds or remove is not None:
            kept = await core.hot.run(close)
            if kept is not None:
                log.error("the data written to inode %d could not be published through its "
                          "names made elsewhere; kept as %s", inode.ino, kept)
        if kept_fd is not None and published is not None:
            taken = await take_staging(core, sid, kept_fd, data.size, True)
            if sid is not None:
                self.journal.drop(sid)
            if taken is not None:
                await keep_warm(core, taken, published)
        elif remove is not None:
            self.journal.drop(remove)


def _still_named(fd: int | None) -> bool:
    """Whether the warm file a descriptor holds has a name left anywhere (blocking): its
    other names may have gone since (another node), and then nobody could ever read what a
    publish would have put there. Not known without a descriptor: taken as named."""
    if fd is None:
        return True
    try:
        return os.fstat(fd).st_nlink > 0
    except OSError:  # (ESTALE: removed on the server)
        return False
