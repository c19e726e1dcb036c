"""Directory listings: read once from the warm tier, handed to the kernel over several calls,
and kept true while names change under them.

A listing is a snapshot of the directory's names taken when it is read from the start, so
offsets stay valid while entries come and go. The names come first, in one call; their
attributes then a batch at a time in the background, so the first reply waits for one batch
and the rest are read while the kernel takes the batches before (an `ls -l` of a large
directory on a network file system waited for every entry's attributes before its first
entry). Entries read before a rename or unlink through the mount (or before tierfs replaced
the warm file behind a name) are read again before they are handed out.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from typing import NamedTuple

import trio

from tierfs.core.attrs import Attrs, attrs_of
from tierfs.core.context import Core
from tierfs.core.inodes import Inode, identity
from tierfs.stubs import Stub
from tierfs.tiers.warm import join
from tierfs.vfs.namespace import STALE_TRIES, Namespace

#: Entries of a listing read again per readdir call after a rename (see ``_fresh_entries``).
FRESH_BATCH = 64
#: Entries offered per readdir call: the kernel takes a page of them (a few dozen with their
#: attributes) and asks again from where it stopped, so offering the whole rest of a long
#: listing each time would make reading it quadratic.
OFFERED = 128
#: Entries whose attributes one warm call reads (and the event loop then takes in): a
#: listing's first reply waits for one batch, whatever the directory's size.
READ_BATCH = 128

log = logging.getLogger(__name__)


class DirEntry(NamedTuple):
    """One entry of a listing (a named tuple: a listing makes thousands of them)."""

    name: bytes
    st: os.stat_result
    #: The inode number an earlier mount gave this file, if any.
    persisted: int | None
    #: Its extended attribute names, if they could be listed.
    xattrs: frozenset[bytes] | None
    #: Its target, if it is a symlink, and the stub that target makes it, if any.
    target: bytes | None = None
    stub: Stub | None = None
    #: ``Core.name_changes`` and ``InodeTable.replacements`` when the entry was read
    #: (see ``Listing._fresh_entries``).
    as_of: tuple[int, int] = (0, 0)
    #: No longer under this name (renamed or unlinked since): not handed to the kernel.
    gone: bool = False


@dataclasses.dataclass(eq=False)
class Reading:
    """The attributes of a listing's names still being read, a batch at a time."""

    names: list[bytes]
    #: Where in ``names`` the next batch starts.
    next: int = 0
    #: Set when a batch has been added or the reading ended (then replaced).
    landed: trio.Event = dataclasses.field(default_factory=trio.Event)
    cancel: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)


@dataclasses.dataclass(eq=False)
class DirHandle:
    inode: Inode
    #: None: not read yet. Entries are only ever added, so offsets given out stay valid.
    entries: list[DirEntry] | None = None
    #: (``Core.name_changes``, ``InodeTable.replacements``, index): the entries from
    #: the index on are known to be current as of those counts.
    checked: tuple[int, int, int] = (0, 0, 0)
    #: The rest of the listing being read; None once it is all in ``entries``.
    reading: Reading | None = None
    #: Why the reading ended before the last name, handed to the readdir that reaches there.
    failed: OSError | None = None


class Listing:
    def __init__(self, core: Core, namespace: Namespace) -> None:
        self.core = core
        self.namespace = namespace
        self.handles: dict[int, DirHandle] = {}

    async def opendir(self, ino: int) -> int:
        inode = self.core.inodes[ino]
        fh = next(self.core.handle_numbers)
        self.handles[fh] = DirHandle(inode)
        self.core.inodes.opened(inode)
        return fh

    def _read_blocking(self, rel: bytes, names: list[bytes], as_of: tuple[int, int]
                       ) -> list[DirEntry]:
        found = self.core.warm.read_entries(rel, names)
        numbers = self.core.inodes.persisted_numbers([identity(st) for _, st, _, _ in found])
        return [DirEntry(name, st, number, xattrs, target, None, as_of)
                for (name, st, xattrs, target), number in zip(found, numbers)]

    def _first_blocking(self, rel: bytes, as_of: tuple[int, int]
                        ) -> tuple[list[bytes], list[DirEntry]]:
        names = self.core.warm.list_names(rel) or []
        return names, self._read_blocking(rel, names[:READ_BATCH], as_of)

    async def readdir(self, fh: int, start: int) -> list[tuple[int, DirEntry]]:
        """The directory's entries from offset ``start``, each with its offset; a listing is
        a snapshot taken when it is read from the start, so offsets stay valid while entries
        come and go."""
        handle = self.handles[fh]
        if handle.entries is None or start == 0:
            await self._start(handle)
        while True:
            await self._until(handle, start)
            entries = handle.entries
            assert entries is not None
            stop = await self._fresh_entries(handle, start)
            end = min(stop, start + OFFERED)
            out = [(i + 1, entry) for i, entry in enumerate(entries[start:end], start)
                   if not entry.gone]
            if out or (end >= len(entries) and handle.reading is None):
                return out  # (an empty reply would end the listing)
            start = end

    async def _start(self, handle: DirHandle) -> None:
        """Read the names and the first batch's attributes, and start reading the rest."""
        self._stop_reading(handle)
        core = self.core
        # (a replacement during the call makes the entries stale)
        replacements = core.inodes.replacements
        async with core.ns_lock.shared():
            as_of = (core.name_changes, replacements)
            rel = core.inodes.path(handle.inode)
            names, first = await core.warm.run(self._first_blocking, rel, as_of)
        handle.entries, handle.failed = [], None
        self._add(handle, rel, first)
        handle.checked = (*as_of, 0)
        if len(names) > READ_BATCH:
            reading = handle.reading = Reading(names, next=READ_BATCH)
            if core.nursery is not None:
                core.nursery.start_soon(self._read_rest, handle, reading)
            else:  # (no background: read it all now)
                await self._read_rest(handle, reading)

    def _add(self, handle: DirHandle, rel: bytes, entries: list[DirEntry]) -> None:
        assert handle.entries is not None
        for entry in entries:
            if entry.target is not None:
                try:
                    stub = self.core.parse_stub(entry.st, entry.target, join(rel, entry.name))
                except OSError:
                    continue  # a refused stub is not listed (and its lookup gives EIO)
                if stub is not None:
                    entry = entry._replace(stub=stub)
            handle.entries.append(entry)

    async def _read_rest(self, handle: DirHandle, reading: Reading) -> None:
        core = self.core
        try:
            with reading.cancel:
                while reading.next < len(reading.names):
                    batch = reading.names[reading.next:reading.next + READ_BATCH]
                    replacements = core.inodes.replacements
                    async with core.ns_lock.shared():
                        as_of = (core.name_changes, replacements)
                        rel = core.inodes.path(handle.inode)
                        entries = await core.warm.run(self._read_blocking, rel, batch, as_of)
                    if handle.reading is not reading:
                        return  # (read again from the start, or released, meanwhile)
                    self._add(handle, rel, entries)
                    reading.next += len(batch)
                    reading.landed.set()
                    reading.landed = trio.Event()
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE):  # (removed: ends)
                handle.failed = e
        except Exception:
            log.exception("reading the rest of a directory listing failed")
            handle.failed = OSError(errno.EIO, "reading the directory failed")
        finally:
            if handle.reading is reading:
                handle.reading = None
            reading.landed.set()

    async def _until(self, handle: DirHandle, start: int) -> None:
        """Wait until the listing holds entries past ``start`` or has been read whole."""
        while ((reading := handle.reading) is not None and handle.entries is not None
               and len(handle.entries) <= start):
            await reading.landed.wait()
        if handle.failed is not None and handle.entries is not None \
                and len(handle.entries) <= start:
            raise handle.failed

    def _stop_reading(self, handle: DirHandle) -> None:
        if handle.reading is not None:
            handle.reading.cancel.cancel()
            handle.reading.landed.set()
            handle.reading = None

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
            now = (self.core.name_changes, self.core.inodes.replacements)
            if handle.checked[:2] == now and start >= handle.checked[2]:
                return len(entries)  # (the usual case: nothing to look at)
            stale: list[int] = []
            for i in range(start, len(entries)):
                changes, replacements = entries[i].as_of
                if changes != now[0] or (replacements != now[1] and
                                         self.namespace.stale(parent, entries[i].name,
                                                              replacements)):
                    stale.append(i)
                    if len(stale) == FRESH_BATCH:
                        break  # the kernel takes a few dozen per call: the rest later
            if not stale:
                handle.checked = (*now, start)
                return len(entries)
            whole = len(stale) < FRESH_BATCH
            stop = len(entries) if whole else stale[-1] + 1
            replacements = self.core.inodes.replacements
            async with self.core.ns_lock.shared():
                as_of = (self.core.name_changes, replacements)
                rel = self.core.inodes.path(handle.inode)
                found = await self.core.warm.run(self._probe_names, rel,
                                            [entries[i].name for i in stale])
            for i, probed in zip(stale, found):
                entry = entries[i]
                stub = None
                if probed is not None:
                    try:
                        stub = self.core.parse_stub(probed[0], probed[1], join(rel, entry.name))
                    except OSError:
                        probed = None  # refused: not listed
                if probed is None:
                    entries[i] = entry._replace(gone=True, as_of=as_of)
                else:
                    st, target, persisted = probed
                    entries[i] = DirEntry(entry.name, st, persisted, None, target, stub,
                                          as_of=as_of)
            if as_of == (self.core.name_changes, self.core.inodes.replacements):
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
                out.append(self.namespace.probe(join(rel, name)))
            except OSError:
                out.append(None)
        return out

    def dir_entry(self, fh: int, entry: DirEntry) -> tuple[Inode, Attrs]:
        """Register one readdirplus entry (no lookup counted yet: see ``count_lookup``)."""
        parent = self.handles[fh].inode.ino
        inode = self.namespace.register(parent, entry.name, entry.st, entry.persisted, entry.stub)
        if entry.xattrs is not None:
            self.namespace.remember_xattrs(inode, entry.xattrs)
        if inode.data is not None and inode.data.base is not None:
            return inode, attrs_of(inode, inode.data.base)
        return inode, attrs_of(inode, entry.st, entry.stub)

    def count_lookup(self, inode: Inode, sent: bool) -> None:
        if sent:
            self.core.inodes.lookup(inode)
        else:
            self.core.inodes.forget(inode.ino, 0)

    async def releasedir(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        self._stop_reading(handle)
        self.core.inodes.closed(handle.inode)

    async def fsyncdir(self, fh: int) -> None:
        handle = self.handles[fh]
        async with self.core.ns_lock.shared():
            await self.core.warm.run(self.core.warm.fsync_dir, self.core.inodes.path(handle.inode))
