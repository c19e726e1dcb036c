"""Several warm roots in one mount: each named root is a whole ``FileSystem`` of its own (its
warm tier and worker threads, its bucket prefix, its index, journal and block cache on a
folder of the hot tier), shown as the top-level directory NAME of the mount.

``Roots`` answers what ``FileSystem`` answers, for the FUSE layer: it owns the synthetic,
read-only top directory and maps numbers between the kernel and each root. A root's inode
and handle numbers are its own ``FileSystem``'s shifted left by ``SLOT_BITS``, with the root's
slot in the low bits; a slot is given to a name once and kept (``slots.json`` on the hot
tier), so inode numbers stay what each root's index persisted across remounts. The top
directory is inode 1 (no root's number is below ``1 << SLOT_BITS``).

Nothing crosses roots: a rename or hard link from one to another fails with EXDEV, as
between file systems (``mv`` then copies). See docs/semantics.md for the top directory.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from tierfs.config import Config
from tierfs.core.attrs import Attrs, SetAttr, err
from tierfs.core.inodes import ROOT_INODE, Inode
from tierfs.index import Index
from tierfs.places import SLOTS_FILE
from tierfs.tiers.hot import HotTier, create_own_file, open_own_file
from tierfs.vfs.filesystem import FileSystem
from tierfs.vfs.listing import DirEntry

log = logging.getLogger(__name__)

SLOT_BITS = 6
#: Slots of roots; the last one numbers the top directory's handles.
TOP_SLOT = (1 << SLOT_BITS) - 1
TOP_INODE = ROOT_INODE
#: Seconds a listing of the top directory waits for a root's attributes before it shows the
#: ones it last had, and statfs for the roots' disk figures (``ls`` and ``df`` of the top).
TOP_ATTRS_WAIT = 1.0
#: The longest name in the top directory, as in the directories of every warm tier.
NAME_MAX = 255
#: The hot tier's folder holding a folder per root (``roots/NAME``) and the slots file.
ROOTS_DIR = "roots"


def root_config(config: Config, name: str, warm: Path) -> Config:
    """A named root's own configuration: its warm directory, its folder of the hot tier, its
    bucket prefix (``<prefix>/NAME``, so roots' objects never collide), and an equal share of
    the block cache's capacity and of the read memory (one hot disk: their sum stays within
    what was configured)."""
    count = len(config.roots)
    capacity = config.hot_capacity
    if capacity.endswith("%"):
        share = f"{float(capacity[:-1]) / count}%"
    else:
        share = str(int(capacity) // count)
    bucket = dataclasses.replace(config.bucket, prefix=config.bucket.key(name))
    return dataclasses.replace(config, hot=config.hot / ROOTS_DIR / name, warm=warm,
                               bucket=bucket, hot_capacity=share,
                               read_memory=config.read_memory // count,
                               roots=(), rules_root=name)


class SummedCounters:
    """The roots' counters and gauges added up (what ``tierfs stats`` and the metrics
    endpoint show for the whole mount)."""

    def __init__(self, roots: Sequence[Root]) -> None:
        self.roots = roots

    @staticmethod
    def _sum(parts: Sequence[dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in parts:
            for name, value in part.items():
                out[name] = out.get(name, 0) + value
        return out

    @property
    def values(self) -> dict[str, int]:
        return self._sum([r.fs.counters.values for r in self.roots])

    @property
    def gauges(self) -> dict[str, int]:
        return self._sum([r.fs.counters.gauges for r in self.roots])

    def snapshot(self) -> dict[str, object]:
        return {"saved_at": time.time(), "counters": self.values, "gauges": self.gauges}


def outer(slot: int, number: int) -> int:
    """A root's inode or handle number as the kernel sees it."""
    return number << SLOT_BITS | slot


def inner(number: int) -> tuple[int, int]:
    """(slot, the root's own number) of a number the kernel gave."""
    return number & TOP_SLOT, number >> SLOT_BITS


def assign_slots(folder: Path, names: Sequence[str]) -> dict[str, int]:
    """Each name's slot: the one it had at earlier mounts on this hot tier, else the lowest
    free one (blocking: at mount). Inode numbers hold the slot, so it must not move when
    roots are added, removed or reordered."""
    path = folder / SLOTS_FILE
    try:
        fd = open_own_file(path, os.O_RDONLY)
    except FileNotFoundError:
        known: dict[str, int] = {}
    else:
        with os.fdopen(fd, "rb") as f:
            loaded = json.loads(f.read() or b"{}")
        known = {str(k): int(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    for name in names:
        if name in known:
            continue
        used = set(known.values())
        if len(used) >= TOP_SLOT:
            # Every slot has been some root's: one of a root not mounted now is given away
            # (its files get new numbers if it comes back). There is one: at most TOP_SLOT
            # roots are mounted at once (``places.MAX_ROOTS``).
            del known[next(n for n in known if n not in names)]
            used = set(known.values())
        known[name] = min(s for s in range(TOP_SLOT) if s not in used)
    tmp = folder / f"{SLOTS_FILE}.new"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = create_own_file(tmp)
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps(known, sort_keys=True).encode())
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    return {name: known[name] for name in names}


@dataclasses.dataclass(eq=False)
class Root:
    name: str
    slot: int
    fs: FileSystem
    index: Index
    #: Its attributes as the top directory's listing last showed them.
    attrs: Attrs | None = None
    #: Its warm disk's figures as statfs last had them, and the error of its last try.
    disk: os.statvfs_result | None = None
    disk_error: OSError | None = None
    #: Questions under way (``Roots._ask``), each with the event set when it ends.
    asking: dict[str, trio.Event] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TopEntry:
    """An entry of the top directory's listing: a root."""
    name: bytes
    root: Root


@dataclasses.dataclass(eq=False)
class Routed:
    """An inode handed out by ``dir_entry``, with the root it belongs to (for
    ``count_lookup``)."""
    root: Root
    inode: Inode


class Roots:
    def __init__(self, config: Config, hot: HotTier, roots: Sequence[Root]) -> None:
        self.config = config
        #: The hot tier's own folder: the lock, the log, the control socket; each root's
        #: staging, index and cache are in a folder of it (``roots/NAME``).
        self.hot = hot
        self.roots = list(roots)
        self._by_slot = {r.slot: r for r in self.roots}
        self._by_name = {os.fsencode(r.name): r for r in self.roots}
        self._top_handles: dict[int, list[tuple[bytes, Root]]] = {}
        self._top_numbers = itertools.count(1)
        self._born = time.time_ns()
        self.counters = SummedCounters(self.roots)

    # -- numbers ----------------------------------------------------------------------------

    def _root(self, number: int) -> tuple[Root, int]:
        slot, local = inner(number)
        root = self._by_slot.get(slot)
        if root is None or not local:
            raise err(errno.ESTALE)
        return root, local

    def root_of(self, rel: str) -> tuple[Root, str] | None:
        """The root a mount-relative path is in and the path inside it ("" for the root);
        None for the top directory itself. Raises KeyError for no such root."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts:
            return None
        root = self._by_name[os.fsencode(parts[0])]
        return root, "/".join(parts[1:])

    @staticmethod
    def _out(root: Root, attrs: Attrs) -> Attrs:
        return attrs._replace(ino=outer(root.slot, attrs.ino))

    def _top_attrs(self) -> Attrs:
        return Attrs(TOP_INODE, stat.S_IFDIR | 0o555, 2 + len(self.roots), os.geteuid(),
                     os.getegid(), 0, 0, self._born, self._born, self._born)

    def _refuse_top(self, name: bytes) -> OSError:
        """What creating ``name`` in the top directory gets: it holds the roots only."""
        if len(name) > NAME_MAX:
            return err(errno.ENAMETOOLONG)
        return err(errno.EEXIST if name in self._by_name else errno.EACCES)

    async def _root_entry(self, root: Root) -> tuple[Routed, Attrs]:
        inode = root.fs.inodes[ROOT_INODE]
        attrs = root.attrs = self._out(root, await root.fs.getattr(ROOT_INODE))
        root.fs.inodes.lookup(inode)
        return Routed(root, inode), attrs

    # -- what the mount, the control socket and the tests look at --------------------------

    @property
    def invalidate_attrs(self) -> Callable[[int], None]:
        raise AttributeError("set only")

    @invalidate_attrs.setter
    def invalidate_attrs(self, fn: Callable[[int], None]) -> None:
        def in_slot(slot: int) -> Callable[[int], None]:
            return lambda ino: fn(outer(slot, ino))

        for root in self.roots:
            root.fs.invalidate_attrs = in_slot(root.slot)

    # -- lifecycle ------------------------------------------------------------------------

    async def run_background(self,
                             task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                             ) -> None:
        async with trio.open_nursery() as nursery:
            for root in self.roots:
                await nursery.start(root.fs.run_background)
            task_status.started()

    async def save_index(self) -> None:
        for root in self.roots:
            await root.fs.save_index()

    async def health(self) -> dict[str, dict[str, object]]:
        """The hot tier's health once, then each root's warm and cold tiers (``warm NAME``,
        ``cold NAME``), each with the path or bucket it checked; checked side by side, so a
        stalled root costs its own timeout only."""
        found: dict[str, dict[str, dict[str, object]]] = {}

        async def check(root: Root) -> None:
            found[root.name] = await root.fs.health()

        async with trio.open_nursery() as nursery:
            for root in self.roots:
                nursery.start_soon(check, root)
        out: dict[str, dict[str, object]] = {}
        hot = [found[r.name]["hot"] for r in self.roots]
        bad = [h for h in hot if not h["ok"]]
        out["hot"] = {**(bad[0] if bad else hot[0]), "path": str(self.config.hot)}
        for root in self.roots:
            out[f"warm {root.name}"] = {**found[root.name]["warm"],
                                        "path": str(root.fs.config.warm)}
            out[f"cold {root.name}"] = {**found[root.name]["cold"],
                                        "path": str(root.fs.config.bucket)}
        return out

    async def recover(self, rebooted: bool = False) -> None:
        for root in self.roots:
            await root.fs.recover(rebooted)

    async def shutdown(self) -> list[str]:
        """Each root's shutdown, side by side (a slow root's publishing does not hold the
        others'); what none could publish, as mount-relative paths, is written on the hot
        tier's own folder for ``tierfs unmount``."""
        left: dict[str, list[str]] = {}

        async def stop(root: Root) -> None:
            left[root.name] = await root.fs.shutdown()

        async with trio.open_nursery() as nursery:
            for root in self.roots:
                nursery.start_soon(stop, root)
        unpublished = [f"{root.name}/{p}" for root in self.roots for p in left[root.name]]
        await self.hot.run(self.hot.write_unpublished, unpublished)
        return unpublished

    def pending_uploads(self) -> tuple[int, int]:
        counts = [r.fs.pending_uploads() for r in self.roots]
        return sum(c for c, _ in counts), sum(b for _, b in counts)

    async def flush_all(self) -> list[tuple[str, str]]:
        failed = []
        for root in self.roots:
            failed += [(f"{root.name}/{p}", why) for p, why in await root.fs.flush_all()]
        return failed

    # -- namespace ------------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> tuple[Inode | Routed | None, Attrs]:
        """(The top directory has no ``Inode``: None stands for it.)"""
        if parent == TOP_INODE:
            if name in (b".", b".."):
                return None, self._top_attrs()
            root = self._by_name.get(name)
            if root is None:
                raise err(errno.ENAMETOOLONG if len(name) > NAME_MAX else errno.ENOENT)
            return await self._root_entry(root)
        root, local = self._root(parent)
        if local == ROOT_INODE and name == b"..":
            return None, self._top_attrs()
        inode, attrs = await root.fs.lookup(local, name)
        return inode, self._out(root, attrs)

    async def getattr(self, ino: int) -> Attrs:
        if ino == TOP_INODE:
            return self._top_attrs()
        root, local = self._root(ino)
        return self._out(root, await root.fs.getattr(local))

    async def setattr(self, ino: int, changes: SetAttr) -> Attrs:
        if ino == TOP_INODE:
            raise err(errno.EPERM)
        root, local = self._root(ino)
        return self._out(root, await root.fs.setattr(local, changes))

    async def readlink(self, ino: int) -> bytes:
        if ino == TOP_INODE:
            raise err(errno.EINVAL)
        root, local = self._root(ino)
        return await root.fs.readlink(local)

    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        if parent == TOP_INODE:
            raise self._refuse_top(name)
        root, local = self._root(parent)
        inode, attrs = await root.fs.mkdir(local, name, mode, uid, gid)
        return inode, self._out(root, attrs)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        if parent == TOP_INODE:
            raise self._refuse_top(name)
        root, local = self._root(parent)
        inode, attrs = await root.fs.mknod(local, name, mode, rdev, uid, gid)
        return inode, self._out(root, attrs)

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int
                      ) -> tuple[Inode, Attrs]:
        if parent == TOP_INODE:
            raise self._refuse_top(name)
        root, local = self._root(parent)
        inode, attrs = await root.fs.symlink(local, name, target, uid, gid)
        return inode, self._out(root, attrs)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> tuple[Inode, Attrs]:
        if new_parent == TOP_INODE:
            raise self._refuse_top(new_name)
        if ino == TOP_INODE:
            raise err(errno.EPERM)  # (a directory)
        root, local = self._root(ino)
        target, parent = self._root(new_parent)
        if target is not root:
            raise err(errno.EXDEV)
        inode, attrs = await root.fs.link(local, parent, new_name)
        return inode, self._out(root, attrs)

    async def unlink(self, parent: int, name: bytes) -> None:
        if parent == TOP_INODE:
            raise err(errno.EACCES if name in self._by_name else errno.ENOENT)
        root, local = self._root(parent)
        await root.fs.unlink(local, name)

    async def rmdir(self, parent: int, name: bytes) -> None:
        if parent == TOP_INODE:
            raise err(errno.EACCES if name in self._by_name else errno.ENOENT)
        root, local = self._root(parent)
        await root.fs.rmdir(local, name)

    async def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                     flags: int) -> None:
        if parent == TOP_INODE or new_parent == TOP_INODE:
            if parent == TOP_INODE and name not in self._by_name:
                raise err(errno.ENOENT)
            raise err(errno.EACCES)
        root, local = self._root(parent)
        target, new_local = self._root(new_parent)
        if target is not root:
            raise err(errno.EXDEV)
        await root.fs.rename(local, name, new_local, new_name, flags)

    async def forget(self, items: Sequence[tuple[int, int]]) -> None:
        by_root: dict[int, list[tuple[int, int]]] = {}
        for ino, count in items:
            if ino == TOP_INODE:
                continue
            slot, local = inner(ino)
            if slot in self._by_slot:
                by_root.setdefault(slot, []).append((local, count))
        for slot, local_items in by_root.items():
            await self._by_slot[slot].fs.forget(local_items)

    async def statfs(self) -> os.statvfs_result:
        """The first root's figures (the kernel asks for one file system's), asked of every
        root at once in its own nursery (a warm call cannot be cancelled). A root that does
        not answer in time is shown by what it last answered, or the next root's figures
        are: ``df`` must not wait for a stalled root. Only if none ever answered does it."""
        done = self._start(self.roots, self._read_root_disk)
        with trio.move_on_after(TOP_ATTRS_WAIT):
            for root, event in zip(self.roots, done):
                await event.wait()
                if root.disk is not None:
                    return root.disk
        for event in done:
            known = [r.disk for r in self.roots if r.disk is not None]
            if known:
                return known[0]
            await event.wait()
        known = [r.disk for r in self.roots if r.disk is not None]
        if known:
            return known[0]
        raise self.roots[0].disk_error or err(errno.EIO)

    @staticmethod
    async def _read_root_disk(root: Root) -> None:
        try:
            root.disk, root.disk_error = await root.fs.statfs(), None
        except OSError as e:
            root.disk_error = e

    @staticmethod
    async def _ask(roots: list[Root], ask: Callable[[Root], Awaitable[None]]
                   ) -> list[trio.Event]:
        """Start ``ask`` for each root and wait for them all, at most ``TOP_ATTRS_WAIT``
        (what the top shows must not wait for a stalled root); their ``_start`` events."""
        done = Roots._start(roots, ask)
        with trio.move_on_after(TOP_ATTRS_WAIT):
            for event in done:
                await event.wait()
        return done

    @staticmethod
    def _start(roots: list[Root], ask: Callable[[Root], Awaitable[None]]) -> list[trio.Event]:
        """Start ``ask`` for each root not being asked it already, each in that root's own
        background nursery (a warm call cannot be cancelled); the events set as each ends."""
        what = ask.__name__
        done = []
        for root in roots:
            event = root.asking.get(what)
            if event is None:
                event = root.asking[what] = trio.Event()
                nursery = root.fs.nursery
                assert nursery is not None
                nursery.start_soon(Roots._answer, root, what, ask, event)
            done.append(event)
        return done

    @staticmethod
    async def _answer(root: Root, what: str, ask: Callable[[Root], Awaitable[None]],
                      event: trio.Event) -> None:
        try:
            await ask(root)
        finally:
            del root.asking[what]
            event.set()

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        if ino == TOP_INODE:
            raise err(errno.ENODATA)
        root, local = self._root(ino)
        return await root.fs.getxattr(local, name)

    async def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        if ino == TOP_INODE:
            raise err(errno.EPERM)
        root, local = self._root(ino)
        await root.fs.setxattr(local, name, value)

    async def listxattr(self, ino: int) -> list[bytes]:
        if ino == TOP_INODE:
            return []
        root, local = self._root(ino)
        return await root.fs.listxattr(local)

    async def removexattr(self, ino: int, name: bytes) -> None:
        if ino == TOP_INODE:
            raise err(errno.EPERM)
        root, local = self._root(ino)
        await root.fs.removexattr(local, name)

    # -- directories ----------------------------------------------------------------------

    async def opendir(self, ino: int) -> int:
        if ino == TOP_INODE:
            fh = outer(TOP_SLOT, next(self._top_numbers))
            self._top_handles[fh] = [(n, r) for n, r in self._by_name.items()]
            return fh
        root, local = self._root(ino)
        return outer(root.slot, await root.fs.opendir(local))

    async def readdir(self, fh: int, start: int) -> list[tuple[int, Any]]:
        if fh in self._top_handles:
            entries = self._top_handles[fh][start:]
            await self._fresh_root_attrs([r for _, r in entries])
            return [(start + i + 1, TopEntry(name, root))
                    for i, (name, root) in enumerate(entries)]
        root, local = self._root(fh)
        return await root.fs.readdir(local, start)

    async def _fresh_root_attrs(self, roots: list[Root]) -> None:
        """Read each root's attributes for a listing of the top, side by side; one that
        does not answer in time keeps those it last had. The reads run in each root's own
        background nursery: a warm call cannot be cancelled, and the listing must not wait
        for a stalled one."""
        await self._ask(roots, self._read_root_attrs)

    async def _read_root_attrs(self, root: Root) -> None:
        try:
            root.attrs = self._out(root, await root.fs.getattr(ROOT_INODE))
        except OSError as e:
            log.warning("could not read the attributes of root %s: %s", root.name, e)

    def dir_entry(self, fh: int, entry: DirEntry | TopEntry) -> tuple[Routed, Attrs]:
        if isinstance(entry, TopEntry):
            root = entry.root
            attrs = root.attrs
            if attrs is None:  # (never answered: a directory of the user's, for now)
                attrs = self._top_attrs()._replace(ino=outer(root.slot, ROOT_INODE),
                                                   mode=stat.S_IFDIR | 0o755, nlink=2)
            return Routed(root, root.fs.inodes[ROOT_INODE]), attrs
        root, local = self._root(fh)
        inode, attrs = root.fs.dir_entry(local, entry)  # type: ignore[arg-type]
        return Routed(root, inode), self._out(root, attrs)

    def count_lookup(self, routed: Routed, sent: bool) -> None:
        routed.root.fs.count_lookup(routed.inode, sent)

    async def releasedir(self, fh: int) -> None:
        if self._top_handles.pop(fh, None) is not None:
            return
        root, local = self._root(fh)
        await root.fs.releasedir(local)

    async def fsyncdir(self, fh: int) -> None:
        if fh in self._top_handles:
            return
        root, local = self._root(fh)
        await root.fs.fsyncdir(local)

    # -- files ----------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> tuple[int, bool, bool]:
        if ino == TOP_INODE:
            raise err(errno.EISDIR)
        root, local = self._root(ino)
        fh, keep_cache, direct = await root.fs.open(local, flags)
        return outer(root.slot, fh), keep_cache, direct

    async def create(self, parent: int, name: bytes, mode: int, flags: int, uid: int, gid: int
                     ) -> tuple[int, bool, Inode, Attrs]:
        if parent == TOP_INODE:
            raise self._refuse_top(name)
        root, local = self._root(parent)
        fh, direct, inode, attrs = await root.fs.create(local, name, mode, flags, uid, gid)
        return outer(root.slot, fh), direct, inode, self._out(root, attrs)

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        root, local = self._root(fh)
        return await root.fs.read(local, offset, size)

    async def write(self, fh: int, offset: int, buf: bytes) -> int:
        root, local = self._root(fh)
        return await root.fs.write(local, offset, buf)

    async def flush(self, fh: int) -> None:
        root, local = self._root(fh)
        await root.fs.flush(local)

    async def fsync(self, fh: int) -> None:
        root, local = self._root(fh)
        await root.fs.fsync(local)

    async def release(self, fh: int) -> None:
        root, local = self._root(fh)
        await root.fs.release(local)
