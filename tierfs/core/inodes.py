"""The inode table: tierfs inode numbers, the names each inode has, and kernel lookup counts.

An inode is named by (parent inode, name) links rather than by a path, so renaming a directory
moves one link and every live descendant follows. Numbers are tierfs's own, kept stable across
remounts through the index: the warm file's own inode number changes whenever tierfs publishes
by rename, so it cannot serve. All methods run on the event loop and never block.

Lookup counts follow the kernel exactly: +1 for each entry returned by lookup, create, mkdir,
symlink, link, mknod and readdirplus; -n at forget. An inode leaves the table only when the
kernel has forgotten it and no handle holds it open, so an unlinked open file keeps its data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import os
import stat
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyfuse3

from tierfs.index import Batch, pack_u64, unpack_u64
from tierfs.tiers.beneath import ROOT, join

if TYPE_CHECKING:
    from tierfs.stubs import Stub
    from tierfs.core.openfile import OpenFile

ROOT_INODE = pyfuse3.ROOT_INODE
_KEY = struct.Struct(">QQ")
#: A name below a directory and its file's (device, inode number).
Witness = tuple[bytes, int, int]
#: Names below a directory checked to tell it renamed from a new one with its number.
MAX_WITNESSES = 8
#: The device number of a file's stand-in attributes while its name is still being made
#: (``core.naming``): no mounted file system has it, so no warm file has its identity.
PENDING_DEVICE = 0


def stands_in(key: bytes) -> bool:
    """Whether an identity key comes from stand-in attributes (``PENDING_DEVICE``)."""
    return key_ids(key)[0] == PENDING_DEVICE


def identity(st: os.stat_result) -> bytes:
    """What names one warm file: its device and inode number."""
    return identity_of(st.st_dev, st.st_ino)


def identity_of(dev: int, ino: int) -> bytes:
    return _KEY.pack(dev, ino)


#: What the kernel's cached pages of a file hold: (size, mtime_ns, ctime_ns, identity key) of
#: a warm file; (size, mtime_ns, 0, ETag) of a cold one.
PageVersion = tuple[int, int, int, bytes]


def key_ids(key: bytes) -> tuple[int, int]:
    """The (device, inode number) an identity key (``identity``) was made from."""
    dev, ino = _KEY.unpack(key)
    return dev, ino


def stale() -> OSError:
    return OSError(errno.ESTALE, os.strerror(errno.ESTALE))


@dataclasses.dataclass(eq=False)
class Inode:
    ino: int
    kind: int
    key: bytes
    #: (parent inode, name); the first link is the one paths are built from.
    links: list[tuple[int, bytes]]
    lookups: int = 0
    opens: int = 0
    #: Names in the table that this directory holds, and their inodes: a directory the
    #: kernel forgot stays while an inode below it is still live (a file write-back holds
    #: after its close), or that inode's path could no longer be built. They are also what
    #: tells this directory renamed elsewhere from a new one that got its freed number
    #: (``InodeTable.witnesses``).
    below: dict[bytes, Inode] = dataclasses.field(default_factory=dict)
    #: Data state shared by every handle open on a regular file (staging, dirty flag...).
    data: OpenFile | None = None
    #: For a file whose data is in the bucket: its stub as last read from the warm tier.
    stub: Stub | None = None
    #: The version of the content the kernel last cached pages of.
    cached_version: PageVersion | None = None
    #: The warm file's attributes as a lookup or getattr last read them while the file had no
    #: open state, and when (monotonic seconds, taken before the call): an open within
    #: ``attr_timeout`` of that is answered from them (``OpenFiles.open``), as the kernel
    #: answers a stat from its attribute cache. Forgotten when tierfs changes the file.
    seen: tuple[float, os.stat_result] | None = None
    #: Extended attribute names this inode had when last listed, and until when (monotonic
    #: seconds) that answer may be reused. The kernel asks for security.capability before
    #: every write and ls -l asks for ACLs of every entry; the answer is nearly always "none".
    xattr_names: frozenset[bytes] | None = None
    xattr_names_until: float = 0.0
    #: Calls of tierfs's own under way that put another warm file in place of this one (a
    #: publish by rename, a new stub): see ``InodeTable.replacing``.
    replacing: int = 0
    #: ``InodeTable.replacements`` when tierfs last put another warm file in place of this
    #: one: a listing or lookup read before then describes the file that was replaced.
    rekeyed: int = 0
    #: Changes of owner, mode, times or extended attributes made through the mount on the
    #: warm file (counted under the namespace lock): a publish that copied them before one
    #: of these takes them again before its rename (``tiers.warm.Reapply``).
    attr_changes: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == stat.S_IFDIR


class InodeTable:
    def __init__(self, batch: Batch, root_st: os.stat_result) -> None:
        self.batch = batch
        stored = batch.index.get("meta", b"next_ino")
        self._next = unpack_u64(stored) if stored else ROOT_INODE + 1
        root = Inode(ROOT_INODE, stat.S_IFDIR, identity(root_st), [], lookups=1)
        self._by_ino: dict[int, Inode] = {ROOT_INODE: root}
        self._by_name: dict[tuple[int, bytes], Inode] = {}
        self._by_key: dict[bytes, Inode] = {root.key: root}
        #: Inodes held open (``opened``): files with handles or open state, directories
        #: being listed (``witnesses`` looks at them first).
        self._open: set[Inode] = set()
        #: How many times tierfs has replaced a warm file behind an inode (``rekey``).
        self.replacements = 0

    def __len__(self) -> int:
        return len(self._by_ino)

    def __getitem__(self, ino: int) -> Inode:
        try:
            return self._by_ino[ino]
        except KeyError:
            raise stale() from None

    def get(self, ino: int) -> Inode | None:
        return self._by_ino.get(ino)

    def path(self, inode: Inode) -> bytes:
        """The warm-tier path of an inode, built from its first links up to the root."""
        names: list[bytes] = []
        while inode.ino != ROOT_INODE:
            if not inode.links:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
            parent, name = inode.links[0]
            names.append(name)
            inode = self[parent]
        return b"/".join(reversed(names)) if names else ROOT

    def child_path(self, parent: int, name: bytes) -> bytes:
        return join(self.path(self[parent]), name)

    def child(self, parent: int, name: bytes) -> Inode | None:
        return self._by_name.get((parent, name))

    def persisted_number(self, key: bytes) -> int | None:
        """The number an earlier mount gave this warm file (reads the index: call in a thread)."""
        queued, value = self.batch.pending("inodes", key)
        if not queued:
            value = self.batch.index.get("inodes", key)
        return unpack_u64(value) if value else None

    def persisted_numbers(self, keys: list[bytes]) -> list[int | None]:
        """``persisted_number`` of each key, in one index transaction (blocking)."""
        stored = self.batch.index.get_many("inodes", keys)
        out: list[int | None] = []
        for key, value in zip(keys, stored):
            queued, pending = self.batch.pending("inodes", key)
            if queued:
                value = pending
            out.append(unpack_u64(value) if value else None)
        return out

    def witnesses(self, parent: int, name: bytes, st: os.stat_result) -> list[Witness]:
        """For a directory found at (``parent``, ``name``) with the identity of a directory
        this table knows under another name, some names it holds here and their files'
        (device, inode number): the found directory is that one, renamed elsewhere, only if
        one of them is in it as that file (``WarmTier.holds_any``; ``resolve``'s
        ``confirmed``). A file system gives a removed directory's number to the next new one
        at once, and a new directory taken for a known one would get the files open below
        the known one published into it. Open files come first, however many names came
        after them (they are what must not land in the wrong place, and their names are on
        the tier while open), then the names entered last (the first ones are the likeliest
        to have been changed by another node since). A file tierfs is replacing counts as the
        file it had: the new one may not be there yet, and a name alone would take another
        node's file of that name in a new directory for it. Empty when there is nothing to
        check: an unknown directory, or a known one holding no names."""
        if not stat.S_ISDIR(st.st_mode):
            return []
        inode = self._by_key.get(identity(st))
        if (inode is None or not inode.is_dir or inode.ino == ROOT_INODE
                or (parent, name) in inode.links or not inode.below):
            return []
        chosen: dict[bytes, Inode] = {}
        for child in self._open:  # (the files open on this node: a handful to thousands)
            for at, child_name in child.links:
                if (at == inode.ino and len(chosen) < MAX_WITNESSES
                        and not stands_in(child.key)):
                    chosen[child_name] = child
        for child_name, child in itertools.islice(reversed(inode.below.items()),
                                                  MAX_WITNESSES):
            if len(chosen) < MAX_WITNESSES and not stands_in(child.key):
                chosen.setdefault(child_name, child)
        return [(child_name, *key_ids(child.key)) for child_name, child in chosen.items()]

    def resolve(self, parent: int, name: bytes, st: os.stat_result,
                persisted: int | None, kind: int | None = None,
                confirmed: bytes | None = None) -> Inode:
        """The inode for a name just looked up on the warm tier, created if new. ``kind``
        overrides the warm file's type (a stub is a symlink there, a file here).
        ``confirmed`` is the identity of a directory whose ``witnesses`` were found in it.

        Does not count a lookup; the caller does that once the kernel is sure to get the entry.
        """
        key = identity(st)
        kind = stat.S_IFMT(st.st_mode) if kind is None else kind
        existing = self._by_name.get((parent, name))
        if existing is not None:
            if existing.kind == kind and (existing.key == key or existing.replacing):
                if existing.key == key and kind != stat.S_IFDIR:
                    self._confirm(existing, parent, name, st.st_nlink)
                return existing  # (being replaced by tierfs: the new file is still this one)
            self.remove_link(parent, name)  # replaced behind our back (another node)
        inode = self._by_key.get(key)
        if (inode is not None and inode.kind == kind and inode.ino != ROOT_INODE
                and not inode.replacing):
            # A file's inode number is reused as soon as the file is gone, so a file with a
            # single name is only ever this inode under the name it has here; a directory
            # or a hard-linked file found under another name was renamed or linked elsewhere.
            if kind != stat.S_IFDIR and st.st_nlink > 1:
                self._add(inode, parent, name)  # another hard link to a file we know
                self._confirm(inode, parent, name, st.st_nlink)
                return inode
            if kind == stat.S_IFDIR and (not inode.below or confirmed == key):
                # its only name: it was renamed elsewhere (and the names it holds here are in
                # it, or it holds none)
                for link in list(inode.links):
                    self.remove_link(*link)
                self._add(inode, parent, name)
                return inode
            # Otherwise a new directory that got a removed one's number: the known one keeps
            # its names (whose paths are gone) and the number goes to the new one (below).
        queued, value = self.batch.pending("inodes", key)
        number = unpack_u64(value) if queued and value else persisted
        if number is None or number in self._by_ino or number == ROOT_INODE:
            number = self._allocate(key)
        inode = Inode(number, kind, key, [])
        self._by_ino[number] = inode
        self._by_key[key] = inode
        self._add(inode, parent, name)
        return inode

    def _confirm(self, inode: Inode, parent: int, name: bytes, nlink: int) -> None:
        """A file known under several names was just found at (``parent``, ``name``) on the
        warm tier: its path is built from that name from now on (``path``), since another
        node may have removed or replaced the names found before, and then this node would
        read, and publish over, whatever file holds them now. Found with a single name, the
        others are gone."""
        link = (parent, name)
        if len(inode.links) < 2 or link not in inode.links:
            return
        if inode.links[0] != link:
            inode.links.remove(link)
            inode.links.insert(0, link)
        if nlink == 1:
            for other in inode.links[1:]:
                self.remove_link(*other)

    def _allocate(self, key: bytes) -> int:
        number = self._next
        self._next += 1
        self.batch.put("meta", b"next_ino", pack_u64(self._next))
        self.batch.put("inodes", key, pack_u64(number))
        return number

    def _add(self, inode: Inode, parent: int, name: bytes) -> None:
        if (parent, name) not in inode.links:
            inode.links.append((parent, name))
        self._name(parent, name, inode)

    def _name(self, parent: int, name: bytes, inode: Inode) -> None:
        """Enter a name in ``_by_name`` and in its directory's ``below``."""
        holder = self._by_ino.get(parent)
        if holder is not None:
            holder.below[name] = inode
        self._by_name[(parent, name)] = inode

    def _unname(self, parent: int, name: bytes) -> Inode | None:
        """Take a name out of ``_by_name``; its directory may now leave the table."""
        inode = self._by_name.pop((parent, name), None)
        holder = self._by_ino.get(parent)
        if inode is not None and holder is not None:
            holder.below.pop(name, None)
            self._maybe_drop(holder)
        return inode

    def add_link(self, inode: Inode, parent: int, name: bytes) -> None:
        self._add(inode, parent, name)

    def remove_link(self, parent: int, name: bytes) -> Inode | None:
        """Forget one name; an inode that loses its last name is unlinked but stays until the
        kernel forgets it and its last handle closes."""
        inode = self._unname(parent, name)
        if inode is None:
            return None
        inode.links.remove((parent, name))
        if not inode.links:
            # Its warm file is gone: a new file may get the same warm inode number.
            if self._by_key.get(inode.key) is inode:
                del self._by_key[inode.key]
                self.batch.delete("inodes", inode.key)
            self._maybe_drop(inode)
        return inode

    def move(self, parent: int, name: bytes, new_parent: int, new_name: bytes) -> None:
        """A rename: the target's old inode (if any) loses that name first."""
        inode = self._by_name.get((parent, name))
        self.remove_link(new_parent, new_name)
        if inode is None:
            return
        inode.links[inode.links.index((parent, name))] = (new_parent, new_name)
        self._name(new_parent, new_name, inode)  # (first: the old directory may be dropped)
        self._unname(parent, name)

    def exchange(self, parent: int, name: bytes, new_parent: int, new_name: bytes) -> None:
        a = self._by_name.get((parent, name))
        b = self._by_name.get((new_parent, new_name))
        if a is not None:
            a.links[a.links.index((parent, name))] = (new_parent, new_name)
        if b is not None:
            b.links[b.links.index((new_parent, new_name))] = (parent, name)
        for where, inode in (((new_parent, new_name), a), ((parent, name), b)):
            if inode is not None:
                self._name(*where, inode)
        for where, inode in (((parent, name), b), ((new_parent, new_name), a)):
            if inode is None:
                self._unname(*where)

    @contextlib.contextmanager
    def replacing(self, inode: Inode) -> Iterator[None]:
        """tierfs puts another warm file in place of this inode's (and calls ``rekey``)
        within the block. Until then a lookup of its name may find either file, and the old
        file's inode number, once freed, may already belong to a new file elsewhere: neither
        may be taken for a change made behind tierfs's back."""
        inode.replacing += 1
        try:
            yield
        finally:
            inode.replacing -= 1

    def rekey(self, inode: Inode, st: os.stat_result) -> None:
        """The warm file behind an inode was replaced by tierfs itself (publish by rename)."""
        key = identity(st)
        if key == inode.key:
            return
        self.replacements += 1
        inode.rekeyed = self.replacements
        if self._by_key.get(inode.key) is inode:  # (its old number may name a new file now)
            del self._by_key[inode.key]
            self.batch.delete("inodes", inode.key)
        inode.key = key
        inode.seen = None  # (the file replaced: an open answered from it would find another)
        self._by_key[key] = inode
        self.batch.put("inodes", key, pack_u64(inode.ino))

    def known(self, key: bytes) -> Inode | None:
        """The inode in memory for a warm file's identity (``identity``), if any."""
        return self._by_key.get(key)

    def lookup(self, inode: Inode) -> None:
        inode.lookups += 1

    def forget(self, ino: int, count: int) -> None:
        inode = self._by_ino.get(ino)
        if inode is None:
            return
        inode.lookups = max(0, inode.lookups - count)
        self._maybe_drop(inode)

    def opened(self, inode: Inode) -> None:
        inode.opens += 1
        if inode.opens == 1:
            self._open.add(inode)

    def closed(self, inode: Inode) -> None:
        inode.opens -= 1
        if inode.opens == 0:
            self._open.discard(inode)
        self._maybe_drop(inode)

    def _maybe_drop(self, inode: Inode) -> None:
        if (inode.lookups > 0 or inode.opens > 0 or inode.below
                or inode.ino == ROOT_INODE or self._by_ino.get(inode.ino) is not inode):
            return
        del self._by_ino[inode.ino]
        links = list(inode.links)
        inode.links.clear()
        for parent, name in links:
            if self._by_name.get((parent, name)) is inode:
                self._unname(parent, name)
        if self._by_key.get(inode.key) is inode:
            del self._by_key[inode.key]

    def live(self) -> list[Inode]:
        return list(self._by_ino.values())
