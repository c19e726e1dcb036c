"""Reads of an open file: from staging while it is staged (a streaming file's parts too, until
they are punched out for room: ``transfer.streaming``), else through the block cache
(always for a cold file, for a warm one when warm caching is on), else from the warm file.

A file's blocks are named by its *source*: a cold file by its object, ETag and stub's size, a
warm file by its version (``openfile.warm_id``), so a changed file never gets another
version's blocks.
An open answered from memory (``OpenFile.warm_deferred``) names the version its lookup read:
while its blocks are all cached, it is read without opening the warm file at all.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import cast

import trio

from tierfs.cache.entries import Source, Unkept, block_key, cold_source_id, warm_source_id
from tierfs.cache.reader import CachedReader, Prefetch
from tierfs.core.attrs import err
from tierfs.core.context import Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import DataState, HeldFd, OpenFile, WarmId, warm_id
from tierfs.stubs import Stub
from tierfs.write.publish import Publisher

log = logging.getLogger(__name__)

#: A warm block is fetched in parts of this size read at once, each in its own warm call: one
#: ``pread`` of a whole block keeps only what the warm tier's client reads ahead in flight
#: (over sshfs, once it has served many files, 8 reads of 32 KiB, what a reader of 1 MiB
#: reads gets), and over a network that window, not the link, bounds a reader waiting for the
#: block. Files of at most one part are read whole, with their open when that is answered
#: from memory.
WARM_PART = 2 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Unopened:
    """What a reader of an open answered from memory is made for: the version its lookup
    read, whose blocks it serves from the block cache before the warm file is opened."""

    version: WarmId


class VersionChanged(OSError):
    """A block of an open answered from memory was not cached, and the warm file opened to
    fetch it is not the version the open was answered for (or the open file was let go): its
    bytes must not be cached, nor served, as that version's."""


def _read_of(fd: int, view: memoryview, offset: int, version: WarmId) -> tuple[int, bool]:
    """``preadv`` into ``view``; then whether the descriptor's file changed from ``version``
    (size, mtime or ctime: a rewrite in place that puts size and mtime back, as ``cp -p``
    and ``rsync -t --inplace`` do, moves only the ctime; a chmod or rename moving it costs
    only the keeping of these bytes). A block is cached under its version's name, and two
    things would put other bytes there: another node rewriting the file in place (the
    bytes are served, as any open file's, never kept: ``Unkept``), and the descriptor
    closed while the read waited for a thread (a let-go, a publish) and its number given to
    another file (``VersionChanged``). Blocking."""
    n = os.preadv(fd, [view], offset)
    st = os.fstat(fd)
    if st.st_ino != version[0]:
        raise VersionChanged(errno.ESTALE, "the descriptor names another file now")
    return n, warm_id(st) != version


def _pread_own(fd: int, size: int, offset: int) -> bytes:
    """``pread`` through a descriptor made for this read alone, closed after. Blocking."""
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


async def _no_fetch(start: int, length: int) -> bytes:
    raise AssertionError("a source made only for its id was fetched from")


class Reads:
    def __init__(self, core: Core, publisher: Publisher) -> None:
        self.core = core
        self.publisher = publisher
        config = core.config
        # Read-ahead may fill at most half the memory pool, so blocks fetched ahead are still
        # there when their reader arrives.
        self._prefetch = Prefetch(config.read_memory // config.block_size // 2)
        self._window = max(1, config.prefetch_limit // config.block_size)

    async def read(self, fh: int, inode: Inode, data: OpenFile, offset: int, size: int
                   ) -> bytes | memoryview:
        core = self.core
        while True:
            if data.upload is not None and data.upload.unreadable(offset, size):
                if data.writers:
                    log.warning("read of a range of %s already freed from the hot tier: "
                                "readable after close", data.upload.key)
                    raise err(errno.EIO)
                # Closed, its upload still going (write-back): the bytes are readable once
                # the object is complete, so finish it now rather than fail the read.
                await self.publisher.publish(inode, data)
                if data.upload is not None and data.upload.unreadable(offset, size):
                    # Not completed: unlinked, its upload kept for open handles, no name to
                    # complete it at. Asking again would find the same.
                    log.warning("read of a range of %s already freed from the hot tier: the "
                                "file has no name to complete its upload at", data.upload.key)
                    raise err(errno.EIO)
            if not data.staged:
                break
            sid = data.staging_id
            # Through a descriptor of the read's own: a publish by another handle may close
            # staging's (renamed home, then replaced) while the read waits for a thread.
            assert data.staging_fd is not None
            out = await core.hot.run(_pread_own, os.dup(data.staging_fd), size, offset)
            if data.staging_id != sid or (data.upload is not None
                                          and data.upload.unreadable(offset, size)):
                # Published, or punched out for room, while the thread read: the range may
                # read as zeros. Read again.
                continue
            core.counters.add("bytes_staged", len(out))
            return out
        stagings = data.stagings
        try:
            if data.warm_deferred:
                got = await self._read_unopened(fh, inode, data, offset, size)
                if got is not None:
                    return got
                if data.staged:  # (a writer staged it meanwhile: read there)
                    return await self.read(fh, inode, data, offset, size)
            reader = self._reader(data)
            if reader is not None:
                return await reader.read(fh, offset, size)
        except VersionChanged:
            if not data.staged and data.stagings == stagings:
                raise  # (another node's change: the handle is stale, docs/semantics.md)
            # Changed through this node while the read waited for a block (a write or a
            # truncate by another handle, and its close publishing another version): read
            # again, from what the file is now, as a read racing a write on a local disk
            # gets one version's bytes, not an error.
            return await self.read(fh, inode, data, offset, size)
        if data.warm_fd is None:
            return b""
        # Through a descriptor of the read's own, closed after it (none kept: an open file
        # holds no more descriptors, and a file a publish replaces is not held open, which on
        # NFS leaves a hidden name): a publish or a let-go may close ``warm_fd`` while the read
        # waits for a thread. Made here only while the file is not staged, so no thread can be
        # closing ``warm_fd`` now (``Reads.held``).
        out = await core.warm.run(_pread_own, os.dup(data.warm_fd), size, offset)
        core.counters.add("bytes_warm", len(out))
        return out

    async def _read_unopened(self, fh: int, inode: Inode, data: OpenFile, offset: int,
                             size: int) -> bytes | memoryview | None:
        """A read of an open answered from memory (``OpenFile.warm_deferred``). With warm
        caching on, a range whose blocks are all cached for the version the open was answered
        for (its lookup's attributes) is read from the hot tier, and the warm file stays
        unopened: a file read again costs the warm tier nothing. Otherwise the warm file is
        opened now, with this read in the same call when the block cache is not in the way.
        None: read on from the file as opened."""
        core = self.core
        version = data.warm_id
        if not core.cache_warm or version is None:
            out = await core.open_warm(inode, data, None if core.cache_warm else (offset, size))
            if out is not None:
                core.counters.add("bytes_warm", len(out))
            return out
        reader = data.reader
        served = reader is not None and reader.made_for == Unopened(version)
        if self._cached(version, offset, size):
            if reader is None or not served:
                source = self.warm_source(version, self._fetch_unopened(inode, data, version))
                reader = self._new_reader(data, source, Unopened(version))
            assert reader is not None
            try:
                return await reader.read(fh, offset, size)
            except VersionChanged:
                pass  # a block went meanwhile, and the warm file opened for it had changed
            served = True
        bs = min(core.cache.block_size, WARM_PART)
        if version[1] > bs or offset >= bs:
            await core.open_warm(inode, data, served=served)
            return None
        # A small file (one block and one part, as its lookup saw it), not cached: opened and
        # its block read in one warm call, one hand-off fewer on the path its reader waits on.
        # The block is then what a fetch through the file as opened reads: named by the
        # version opened. Read as long as the lookup saw the file (a read of a whole block's
        # length costs an allocation of that length per file): a file grown since gives a
        # short block, which the reader's fetch reads again.
        block = await core.open_warm(inode, data, (0, version[1]), served=served)
        if block is None or data.staged:
            return None  # opened meanwhile by another call, changed as it was read, or staged
        reader = self._reader(data, block)
        if reader is None:
            return None
        return await reader.read(fh, offset, size)

    def _cached(self, version: WarmId, offset: int, size: int) -> bool:
        """Whether every block of a range of a warm file's version is in memory (or being
        loaded) or on the hot tier."""
        cache = self.core.cache
        end = min(offset + size, version[1])
        if offset >= end:
            return True
        sid = self.warm_source(version, _no_fetch).id
        bs = cache.block_size
        keys = (block_key(sid, b) for b in range(offset // bs, (end - 1) // bs + 1))
        return all(cache.loaded(key) or cache.on_hot_tier(key) for key in keys)

    def _fetch_unopened(self, inode: Inode, data: OpenFile, version: WarmId
                        ) -> Callable[[int, int], Awaitable[bytes]]:
        """How a reader of the version an open from memory was answered for fetches a block
        that is not cached (evicted since the read found it, or read ahead): the warm file is
        opened, and read if it is still that version."""
        core = self.core

        async def fetch(start: int, length: int) -> bytes:
            if data.state is DataState.RETIRED:
                raise VersionChanged(errno.ESTALE, "the open file was let go")
            if data.warm_deferred:
                await core.open_warm(inode, data, served=True)
            got = await self.pread_held(self.held(data, version), start, length, version)
            if isinstance(got, Unkept):  # (the version this open was answered for is gone)
                raise VersionChanged(errno.ESTALE, "the warm file changed in place")
            return got

        return fetch

    def held(self, data: OpenFile, version: WarmId) -> HeldFd:
        """The warm readers' own descriptor of ``version`` of the file: a publish or a let-go
        closes ``warm_fd`` while fetches may still wait for a thread. Made (a ``dup``, inline:
        it reaches no file system) only while the file is that version, not staged, not cold
        and not let go: a publish or a let-go closes ``warm_fd`` in a thread only then.
        VersionChanged when the file is no longer that version."""
        held = data.reader_fd
        if held is not None and held.version == version and held.fd >= 0:
            return held
        if (data.warm_fd is None or data.warm_id != version or data.staged
                or data.stub is not None or data.state is DataState.RETIRED):
            raise VersionChanged(errno.ESTALE, "the warm file is another version now")
        self.core.drop_reader_fd(data)  # (of another version)
        held = data.reader_fd = HeldFd(os.dup(data.warm_fd), version)
        return held

    async def pread_held(self, held: HeldFd, start: int, length: int, version: WarmId
                         ) -> bytes:
        """``pread`` through a reader's descriptor, counted as in use meanwhile."""
        if held.fd < 0:  # (a read-ahead of a reader let go since)
            raise VersionChanged(errno.ESTALE, "the reader was let go")
        held.users += 1
        try:
            return await self.pread(held.fd, start, length, version)
        finally:
            held.users -= 1
            if held.idle_after_drop():
                self.core.close_held(held)

    async def pread(self, fd: int, start: int, length: int, version: WarmId) -> bytes:
        """A block of ``version`` of a warm file (``_read_of``), read in parts of at least
        ``WARM_PART`` at once (all of them if the file ends sooner, as ``os.pread``), in at
        most half the warm tier's threads counting those busy: the rest stay free for the
        lookups and opens readers wait on."""
        warm = self.core.warm
        count = max(1, min(-(-length // WARM_PART), warm.workers.size // 2 - warm.workers.busy))
        step = -(-length // count // 4096) * 4096
        buf = bytearray(length)
        view = memoryview(buf)
        got = [0] * count
        changed = False

        async def part(i: int) -> None:
            nonlocal changed
            got[i], moved = await warm.run(_read_of, fd, view[i * step:(i + 1) * step],
                                           start + i * step, version)
            changed = changed or moved

        if count == 1:
            await part(0)
        else:
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(part, i)
        view.release()
        done = 0
        for i, n in enumerate(got):
            done += n
            if n < min(step, length - i * step):
                break  # the file ends here now: what follows was not read
        if changed:
            return Unkept(buf[:done])
        if done != length:
            return bytes(buf[:done])
        # Served as it is (views, the hot tier's write, the checksum take any buffer): a copy
        # into bytes would cost the event loop a pass over the whole block.
        return cast(bytes, buf)

    def _new_reader(self, data: OpenFile, source: Source, made_for: object) -> CachedReader:
        core = self.core
        data.reader = CachedReader(core.cache, source, core.counters, core.nursery,
                                   self._prefetch, self._window)
        data.reader.made_for = made_for
        return data.reader

    def _reader(self, data: OpenFile, first: bytes | None = None) -> CachedReader | None:
        """The block-cache reader of an unstaged file: always for a cold file, for a warm one
        when warm caching is on. ``first``: the warm file's first block, read as it was
        opened (``_read_unopened``), which the reader's first fetch of that block takes
        instead of reading it again (once: a later fetch, after an eviction, reads it)."""
        core = self.core
        reader = data.reader
        if data.stub is not None:
            if reader is not None and reader.made_for is data.stub:
                return reader
            source = self.cold_source(data.stub, data)
            made_for: object = data.stub
            core.drop_reader_fd(data)  # (a warm reader's, from before the file went cold)
        elif core.cache_warm and data.warm_fd is not None and data.warm_id is not None:
            if reader is not None and reader.made_for is data.warm_id:
                return reader
            version = data.warm_id
            self.held(data, version)  # (made now, while the file is surely that version)
            pending = [first]

            async def fetch(start: int, length: int) -> bytes:
                if start == 0:
                    got, pending[0] = pending[0], None
                    if got is not None and len(got) == length:
                        return got
                held = self.held(data, version)  # (again if a publish dropped it)
                return await self.pread_held(held, start, length, version)

            source = self.warm_source(data.warm_id, fetch)
            made_for = data.warm_id
        else:
            return None
        return self._new_reader(data, source, made_for)

    def cold_source(self, stub: Stub, data: OpenFile | None = None) -> Source:
        """A cold file's blocks, named by object, ETag and size. ``data``: the open file reading
        them, whose rewrite through this node deletes the object: a fetch that fails after
        it raises VersionChanged, for the read to be made again from what the file is now."""
        stagings = None if data is None else data.stagings

        async def fetch(start: int, length: int) -> bytes:
            try:
                return await self.core.get_object(stub, start, length)
            except OSError:
                if data is not None and (data.staged or data.stagings != stagings):
                    raise VersionChanged(errno.ESTALE, "the file was rewritten") from None
                raise

        return Source(cold_source_id(str(self.core.config.bucket), stub.key, stub.etag,
                                     stub.size),
                      stub.size, "cold", fetch)

    def warm_source(self, version: WarmId, fetch: Callable[[int, int], Awaitable[bytes]]
                    ) -> Source:
        """A warm file's blocks, named by its version (``openfile.warm_id``)."""
        ino, size, mtime_ns, ctime_ns = version
        return Source(warm_source_id(str(self.core.config.warm), ino, size, mtime_ns,
                                     ctime_ns), size, "warm", fetch)
