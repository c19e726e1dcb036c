"""Where a path's bytes are, and moving its blocks into or out of the hot tier on request.

The operator's commands (``tierfs warm``, ``pin``, ``evict``, ``where``, ``stats PATH``) work on
paths, not open files: a path is walked on the warm tier (a stub is a cold file, a regular file
a warm one) and each file becomes a block-cache ``Source`` named exactly as reads name it, so
what ``warm`` fetches is what a later read finds. Warm files have cached blocks only when warm
caching is on (``cache_warm``); otherwise they are read from the warm tier and have none.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio

from tierfs.cache.entries import Source
from tierfs.stubs import StubError, looks_like_stub, parse_stub
from tierfs.core.inodes import identity
from tierfs.core.openfile import warm_id
from tierfs.core.ownership import ALL_BLOCKS
from tierfs.tiers.beneath import ROOT, join

if TYPE_CHECKING:
    from tierfs.vfs.filesystem import FileSystem

log = logging.getLogger(__name__)


#: Files whose state is read between two chances for the mount to serve (``Residency``).
BATCH = 256
#: Pins looked at again per round, and seconds between rounds (``Residency.follow_pins``).
PINS_PER_ROUND = 256
PINS_EVERY = 30.0

@dataclasses.dataclass
class FileState:
    path: str  # relative to the mount's root
    tier: str  # "warm" or "cold"
    size: int
    #: Bytes of it cached on the hot tier.
    hot: int = 0
    uri: str | None = None
    pinned: bool = False
    #: Its blocks as the cache names them; None when they are never cached.
    source: Source | None = dataclasses.field(default=None, repr=False)
    #: Written through the mount and not home yet: no version to name (a pin at its path
    #: stays, for ``follow_pins`` to move once it is published).
    pending: bool = False

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "tier": self.tier, "size": self.size, "hot": self.hot,
                "uri": self.uri, "pinned": self.pinned}


class Residency:
    def __init__(self, fs: FileSystem) -> None:
        self.fs = fs

    def _walk(self, rel: bytes) -> list[tuple[bytes, os.stat_result, bytes | None]]:
        """Regular files and symlinks at or under ``rel`` (blocking; the warm tier's thread)."""
        warm = self.fs.warm
        st, target = warm.lstat_link(rel)
        if not stat.S_ISDIR(st.st_mode):
            return [(rel, st, target)]
        out = []
        pending = [rel]
        while pending:
            here = pending.pop()
            try:
                found = warm.listdir(here)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                if here == rel:
                    raise
                # Removed or replaced since its parent was listed (in use), or another
                # user's that the mount may not read: left out alone, as ``tierfs scan``'s
                # walk counts it unreadable and goes on.
                continue
            for name, est, _, etarget in found:
                child = join(here, name)
                if stat.S_ISDIR(est.st_mode):
                    pending.append(child)
                elif stat.S_ISREG(est.st_mode) or stat.S_ISLNK(est.st_mode):
                    out.append((child, est, etarget))
        return sorted(out)

    async def files(self, rel: bytes) -> list[FileState]:
        """Every file at or under ``rel`` with what of it is hot; symlinks that are not stubs
        and refused stubs are left out."""
        found = await self.fs.warm.run(self._walk, rel)
        return await self._states(found)

    async def _states(self, found: list[tuple[bytes, os.stat_result, bytes | None]]
                      ) -> list[FileState]:
        """``_state`` of each file found, a batch at a time: a directory on the shared tree
        holds as many files as anyone put there, and the mount serves between batches."""
        out = []
        for i, f in enumerate(found):
            if i % BATCH == BATCH - 1:
                await trio.lowlevel.checkpoint()
            state = self._state(*f)
            if state is not None:
                out.append(state)
        return out

    async def resolve(self, rels: list[bytes]) -> list[list[FileState] | None]:
        """``files`` of many paths in one warm-tier call (a plan names thousands): for each,
        its files, or None if it does not exist."""
        def walk_all() -> list[list[tuple[bytes, os.stat_result, bytes | None]] | None]:
            out: list[list[tuple[bytes, os.stat_result, bytes | None]] | None] = []
            for rel in rels:
                try:
                    out.append(self._walk(rel))
                except (FileNotFoundError, NotADirectoryError, PermissionError):
                    out.append(None)  # (one path the mount may not read fails alone)
            return out

        walked = await self.fs.warm.run(walk_all)
        return [None if found is None else await self._states(found) for found in walked]

    def _state(self, path: bytes, st: os.stat_result, target: bytes | None
               ) -> FileState | None:
        fs = self.fs
        if target is not None:
            if not looks_like_stub(target):
                return None
            try:
                stub = parse_stub(target, fs.config.bucket)
            except StubError:
                return None
            source: Source | None = fs.cold_source(stub)
            state = FileState(os.fsdecode(path), "cold", stub.size,
                              uri=fs.config.bucket.uri_of(stub.key), source=source)
        else:
            source = None
            if fs.cache_warm:
                source = fs.warm_source(warm_id(st), self._warm_fetch(path, st))
            state = FileState(os.fsdecode(path), "warm", st.st_size, source=source)
        inode = fs.core.inodes.known(identity(st))
        if inode is not None and inode.data is not None and inode.data.dirty:
            # Written through this mount and not home yet (write-back, or a writer still at
            # it): what the mount shows, all of it on the hot tier, nothing to fetch.
            state.size = state.hot = inode.data.size
            state.source, state.pending = None, True
        elif source is not None:
            nblocks = source.blocks(fs.cache.block_size)
            state.hot = fs.cache.cached_bytes(source.id, nblocks)
            state.pinned = source.id in fs.cache.pins
        return state

    def _warm_fetch(self, rel: bytes, st: os.stat_result
                    ) -> Callable[[int, int], Awaitable[bytes]]:
        warm = self.fs.warm
        # The whole version the blocks are named by, ctime included: a rewrite in place that
        # puts size and mtime back (``cp -p``) must not have its bytes cached under the old
        # version's name. (A change through the mount meanwhile only costs this fetch.)
        expected = warm_id(st)

        def read(start: int, length: int) -> bytes:
            fd = warm.open(rel, os.O_RDONLY)
            try:
                # After the read: another file at the name, or this one rewritten meanwhile.
                out = os.pread(fd, length, start)
                if warm_id(os.fstat(fd)) != expected:
                    raise OSError(errno.ESTALE, "the file changed while it was being fetched")
                return out
            finally:
                os.close(fd)

        async def fetch(start: int, length: int) -> bytes:
            return await warm.run(read, start, length)

        return fetch

    async def warm(self, states: list[FileState], progress: Callable[[int], None]) -> int:
        """Fetch every block not yet hot, in parallel up to the cold tier's limit; calls
        ``progress`` with the bytes of each block done (fetched or found). Returns the bytes
        fetched."""
        cache = self.fs.cache
        slots = trio.Semaphore(self.fs.config.cold_threads)
        fetched = 0
        failures: list[OSError] = []
        #: Sources a block of which could not be fetched: the rest of them is not tried (a
        #: stub may claim terabytes its object does not hold, a block of 64 KiB at a time).
        failed: set[bytes] = set()

        async def one(source: Source, block: int) -> None:
            nonlocal fetched
            try:
                fetched += await cache.fill(source, block)
            except OSError as e:
                # A file removed or rewritten since the walk (ENOENT, ESTALE) is not one to
                # fetch any more, nor a failure: the directory is in use.
                if e.errno not in (errno.ENOENT, errno.ESTALE):
                    failures.append(e)
                failed.add(source.id)
                return
            finally:
                slots.release()
            start = block * cache.block_size
            progress(min(cache.block_size, source.size - start))

        async with trio.open_nursery() as nursery:
            for state in states:
                if state.source is None:
                    continue
                for block in range(state.source.blocks(cache.block_size)):
                    await slots.acquire()  # bounds the tasks and the blocks in memory
                    if state.source.id in failed:
                        slots.release()
                        break
                    nursery.start_soon(one, state.source, block)
        if failures:
            raise failures[0]
        return fetched

    async def evict(self, states: list[FileState]) -> int:
        """Drop the cached blocks of ``states``; they count in the eviction counters (the
        cache counts only its policy's)."""
        cache = self.fs.cache
        freed = 0
        for i, state in enumerate(states):
            if i % BATCH == BATCH - 1:
                await trio.lowlevel.checkpoint()
            if state.source is not None:
                nblocks = state.source.blocks(cache.block_size)
                # (Counted from what the cache holds: a stub's size is anyone's to claim.)
                cached = cache.cached_count(state.source.id, nblocks)
                nbytes = await cache.evict_source(state.source.id, nblocks)
                self.fs.counters.evicted(cached, nbytes)
                freed += nbytes
        return freed

    async def pin(self, states: list[FileState], pinned: bool, under: Sequence[bytes] = (),
                  gone: Sequence[bytes] = ()) -> None:
        """Pin or unpin the versions ``states`` are now. A pin is of a path, kept under its
        version's name: pins that name another version (the file rewritten, replaced or
        removed since) are dropped, whose blocks nothing would read or evict otherwise:
        those made at a path of ``states`` or at one of the paths ``gone``, or at or under
        ``under`` (the paths asked of, walked whole) at a path not in ``states``. A pin at
        the path of a file not home yet stays if ``pinned``: its version is to come."""
        cache = self.fs.cache
        now = {os.fsencode(s.path): s.source.id for s in states if s.source is not None}
        kept = {os.fsencode(s.path) for s in states if s.pending} if pinned else set()
        roots = tuple(b"" if rel == ROOT else rel + b"/" for rel in under)
        stale = [sid for sid, label in cache.pins.items() if label not in kept and (
            now.get(label, sid) != sid or (label not in now and (
                label in under or label in gone or label.startswith(roots))))]
        for i, sid in enumerate(stale):
            if i % BATCH == BATCH - 1:
                await trio.lowlevel.checkpoint()
            cache.set_pinned(sid, ALL_BLOCKS, False)
        for i, state in enumerate(states):
            if i % BATCH == BATCH - 1:
                await trio.lowlevel.checkpoint()
            if state.source is not None:
                cache.set_pinned(state.source.id, state.source.blocks(cache.block_size), pinned,
                                 os.fsencode(state.path))

    async def follow_pins(self) -> None:
        """Pins of paths changed without a pin or unpin since (a checkpoint saved again over
        a pinned one, on this node or another), a round of them at a time: each pin moves
        to the version at its path now, or goes with the file. Without this, each version
        saved would keep its blocks pinned, until the hot tier were full of them."""
        cursor = 0
        while True:
            await trio.sleep(PINS_EVERY)
            pins = self.fs.cache.pins
            cursor = cursor if cursor < len(pins) else 0
            seen = dict(itertools.islice(pins.items(), cursor, cursor + PINS_PER_ROUND))
            cursor += PINS_PER_ROUND
            labels = sorted(set(seen.values()))
            if not labels:
                continue
            try:
                found = await self.resolve(labels)
            except OSError as e:  # (a stalled or failing warm tier: the next round)
                log.warning("could not look at pinned paths again: %s", e)
                continue
            # Only pins still as they were: one unpinned (or pinned anew) while the warm
            # tier was asked is the user's word, newer than this round's.
            still = {label for sid, label in seen.items() if pins.get(sid) == label}
            states = [s for one in found if one is not None for s in one
                      if os.fsencode(s.path) in still]
            here = {os.fsencode(s.path) for s in states if s.source is not None or s.pending}
            moved = [s for s in states if s.source is not None and s.source.id not in pins]
            await self.pin(moved, True, gone=[rel for rel in still if rel not in here])
