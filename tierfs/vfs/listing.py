"""Directory listings: read once from the warm tier, handed to the kernel over several calls,
and kept true while names change under them.

A listing is a snapshot of the directory's names taken when it is read from the start, so
offsets stay valid while entries come and go. The names come first, in one call; their
attributes then a batch at a time, as the kernel's calls reach them: the first reply waits for
one batch, not for every entry's attributes (an `ls` of a large directory on a network file
system showed nothing until all were read), and no step of the event loop costs in proportion
to the directory's size, which anyone sharing the tree decides. (Read ahead in a background
task instead, the batches took the GIL from the replies: more CPU, no sooner done.) Entries
read before a rename or unlink through the mount (or before tierfs replaced the warm file
behind a name) are read again before they are handed out.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from typing import NamedTuple

from tierfs.core.attrs import Attrs, attrs_of
from tierfs.core.context import Core
from tierfs.core.inodes import Inode, identity
from tierfs.stubs import Stub
from tierfs.tiers.scan import entries_at, names_at
from tierfs.tiers.beneath import join
from tierfs.vfs.namespace import STALE_TRIES, Namespace

#: Entries of a listing read again per readdir call after a rename (see ``_fresh_entries``).
FRESH_BATCH = 64
#: Entries offered per readdir call: the kernel takes a page of them (a few dozen with their
#: attributes) and asks again from where it stopped, so offering the whole rest of a long
#: listing each time would make reading it quadratic.
OFFERED = 128
#: Entries whose attributes the first warm call of a listing reads: its first reply waits
#: for this many, whatever the directory's size. Each batch after it is twice the one before
#: (fewer hand-offs for a long listing), up to ``MOST_BATCH``, which bounds what one step of
#: the event loop takes in.
READ_BATCH = 128
MOST_BATCH = 4096
#: Listings that hold their directory's descriptor at a time; those started past it open the
#: directory again for each batch (a program keeping many directory streams half read must
#: not use up the daemon's descriptors).
MOST_HELD = 64


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
    #: Its identity, if it is a directory known under another name whose names were found
    #: in it (``InodeTable.witnesses``): that directory, renamed elsewhere.
    confirmed: bytes | None = None


@dataclasses.dataclass(eq=False)
class Reading:
    """A listing's names whose attributes are still to be read, a batch at a time."""

    names: list[bytes]
    #: The directory's path when the names were read: for the stubs' paths if its inode has
    #: none now (another node renamed it, and a lookup found another directory there).
    rel: bytes
    #: The directory's descriptor the names were read from (``tiers.scan``), held until the
    #: last batch is read or the handle is released or read again from the start; None past
    #: ``MOST_HELD``: each batch opens the directory at its path.
    dfd: int | None
    #: Where in ``names`` the next batch starts, and its size.
    next: int = READ_BATCH
    size: int = 2 * READ_BATCH


@dataclasses.dataclass(eq=False)
class DirHandle:
    inode: Inode
    #: None: not read yet. Entries are only ever added, so offsets given out stay valid.
    entries: list[DirEntry] | None = None
    #: (``Core.name_changes``, ``InodeTable.replacements``, index): the entries from
    #: the index on are known to be current as of those counts.
    checked: tuple[int, int, int] = (0, 0, 0)
    #: The names still to be read; None once the listing is all in ``entries``.
    reading: Reading | None = None


class Listing:
    def __init__(self, core: Core, namespace: Namespace) -> None:
        self.core = core
        self.namespace = namespace
        self.handles: dict[int, DirHandle] = {}
        #: Listings holding their directory's descriptor (``MOST_HELD``).
        self.held = 0

    async def opendir(self, ino: int) -> int:
        inode = self.core.inodes[ino]
        fh = next(self.core.handle_numbers)
        self.handles[fh] = DirHandle(inode)
        self.core.inodes.opened(inode)
        return fh

    def _read_blocking(self, dfd: int, names: list[bytes], as_of: tuple[int, int]
                       ) -> list[DirEntry]:
        found = entries_at(dfd, names)
        numbers = self.core.inodes.persisted_numbers([identity(st) for _, st, _, _ in found])
        return [DirEntry(name, st, number, xattrs, target, None, as_of)
                for (name, st, xattrs, target), number in zip(found, numbers)]

    def _first_blocking(self, rel: bytes, as_of: tuple[int, int], hold: bool
                        ) -> tuple[list[DirEntry], Reading | None]:
        dfd = self.core.warm.open_dir(rel)
        try:
            names = names_at(dfd) or []
            first = self._read_blocking(dfd, names[:READ_BATCH], as_of)
        except BaseException:
            os.close(dfd)
            raise
        if len(names) <= READ_BATCH or not hold:
            os.close(dfd)
        if len(names) <= READ_BATCH:
            return first, None
        return first, Reading(names, rel, dfd if hold else None)

    def _batch_blocking(self, reading: Reading, rel: bytes, names: list[bytes],
                        as_of: tuple[int, int]) -> list[DirEntry]:
        if reading.dfd is not None:
            return self._read_blocking(reading.dfd, names, as_of)
        return self.core.warm.in_dir(rel, lambda dfd: self._read_blocking(dfd, names, as_of))

    async def readdir(self, fh: int, start: int) -> list[tuple[int, DirEntry]]:
        """The directory's entries from offset ``start``, each with its offset; a listing is
        a snapshot taken when it is read from the start, so offsets stay valid while entries
        come and go. (The kernel sends one readdir of a handle at a time.)"""
        handle = self.handles[fh]
        if handle.entries is None or start == 0:
            await self._start(handle)
        entries = handle.entries
        assert entries is not None
        tries = 0
        while True:
            while handle.reading is not None and len(entries) <= start:
                await self._read_batch(handle, handle.reading)
            stop = await self._fresh_entries(handle, start)
            end = min(stop, start + OFFERED)
            out = [(i + 1, entry) for i, entry in enumerate(entries[start:end], start)
                   if not entry.gone]
            if out or (end >= len(entries) and handle.reading is None):
                as_of = (self.core.name_changes, self.core.inodes.replacements)
                out = await self._confirm_moved(handle, out)
                if (as_of != (self.core.name_changes, self.core.inodes.replacements)
                        and tries < STALE_TRIES):
                    tries += 1
                    continue  # (checked while names changed: the entries are looked at again)
                return out  # (none: the end)
            start = end

    async def _confirm_moved(self, handle: DirHandle, out: list[tuple[int, DirEntry]]
                             ) -> list[tuple[int, DirEntry]]:
        """Entries that are directories known under another name are checked for the names
        held below them (``InodeTable.witnesses``), as a lookup does, just before the kernel
        gets them."""
        parent = handle.inode.ino
        checks = [(k, witnesses) for k, (_, entry) in enumerate(out)
                  if (witnesses := self.core.inodes.witnesses(parent, entry.name, entry.st))]
        if not checks:
            return out
        out = list(out)
        async with self.core.ns_lock.shared():
            try:
                rel = self.core.inodes.path(handle.inode)
            except OSError:
                return out  # (no path now: nothing to look in; taken for new directories)
            for k, witnesses in checks:
                offset, entry = out[k]
                try:
                    found = await self.core.warm.run(
                        self.core.warm.holds_any, join(rel, entry.name), entry.st.st_dev,
                        entry.st.st_ino, witnesses)
                except OSError:
                    continue
                if found:
                    out[k] = (offset, entry._replace(confirmed=identity(entry.st)))
        return out

    async def _start(self, handle: DirHandle) -> None:
        """Read the names, and the first batch's attributes in the same call."""
        await self._end_reading(handle)
        handle.entries = None  # (until read again: no offset into the old snapshot is valid)
        core = self.core
        # (a replacement during the call makes the entries stale)
        replacements = core.inodes.replacements
        self.held += 1  # (counted before the call: another may start meanwhile)
        try:
            async with core.ns_lock.shared():
                as_of = (core.name_changes, replacements)
                rel = core.inodes.path(handle.inode)
                first, handle.reading = await core.warm.run(
                    self._first_blocking, rel, as_of, self.held <= MOST_HELD)
        finally:
            if handle.reading is None or handle.reading.dfd is None:
                self.held -= 1
        handle.entries = []
        self._add(handle, rel, first)
        handle.checked = (*as_of, 0)

    async def _read_batch(self, handle: DirHandle, reading: Reading) -> None:
        core = self.core
        batch = reading.names[reading.next:reading.next + reading.size]
        replacements = core.inodes.replacements
        async with core.ns_lock.shared():
            as_of = (core.name_changes, replacements)
            try:
                rel = core.inodes.path(handle.inode)
            except OSError:
                rel = reading.rel  # (no path now: what it was is the best there is)
            try:
                entries = await core.warm.run(self._batch_blocking, reading, rel, batch, as_of)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ESTALE):
                    raise
                entries = None
        if entries is None:
            await self._end_reading(handle)  # the directory is gone, and the rest with it
            return
        self._add(handle, rel, entries)
        reading.next += len(batch)
        reading.size = min(2 * reading.size, MOST_BATCH)
        if reading.next >= len(reading.names):
            await self._end_reading(handle)

    async def _end_reading(self, handle: DirHandle) -> None:
        reading, handle.reading = handle.reading, None
        if reading is not None and reading.dfd is not None:
            self.held -= 1
            try:
                await self.core.warm.run(os.close, reading.dfd)
            except OSError:
                pass  # (freed all the same)

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
        inode = self.namespace.register(parent, entry.name, entry.st, entry.persisted, entry.stub,
                                        entry.confirmed)
        if entry.xattrs is not None:
            self.core.remember_xattrs(inode, entry.xattrs)
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
        await self._end_reading(handle)
        self.core.inodes.closed(handle.inode)

    async def fsyncdir(self, fh: int) -> None:
        handle = self.handles[fh]
        async with self.core.ns_lock.shared():
            await self.core.warm.run(self.core.warm.fsync_dir, self.core.inodes.path(handle.inode))
