"""The namespace: lookups, attributes, and every change of names (mkdir ... rename), with the
extended attributes, on the warm tier.

Ordering rules (see docs/architecture.md, "Concurrency contract"): ``ns_lock`` is held
exclusively by unlink, rmdir, rename, link and the final rename of a publish; every other call
that reaches the warm tier by a path holds it shared, so that the path names the same file
for the whole call. Changes of a file's owner, mode, times and extended attributes take it too,
and count themselves in ``Inode.attr_changes``: a publish copies them early and checks that
count (and the count of renames) at its rename (``Core.attr_mark``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence

import trio

from tierfs.core.attrs import Attrs, SetAttr, attrs_of, err, forget_base, stage_times
from tierfs.core.context import Core
from tierfs.core.inodes import ROOT_INODE, Inode, identity, key_ids, stands_in
from tierfs.core.ownership import Owners
from tierfs.stubs import Stub, looks_like_stub
from tierfs.tiers.scan import is_internal
from tierfs.tiers.beneath import split
from tierfs.tiers.warm import RENAME_EXCHANGE, RENAME_NOREPLACE
from tierfs.vfs.listed import Listed
from tierfs.vfs.removal import Link, last_name_of_open, note_other_names, open_before_removal
from tierfs.write.entries import Move
from tierfs.write.journal import Journal

log = logging.getLogger(__name__)

#: Times a lookup is read again when tierfs replaced the file meanwhile.
STALE_TRIES = 4


def is_cold(inode: Inode | None) -> bool:
    """Whether a name's inode is a known cold file: removing it may delete its object."""
    return inode is not None and inode.stub is not None


class Namespace:
    def __init__(self, core: Core, journal: Journal) -> None:
        self.core = core
        self.journal = journal
        #: Stubs checked against their objects' recorded owners (``core.ownership``).
        self.owners = Owners(core)
        #: Recent listings that answer lookups in busy directories.
        self.listed = Listed(core)

    # -- helpers --------------------------------------------------------------------------

    def check_name(self, name: bytes) -> None:
        if len(name) > self.core.namemax:
            raise err(errno.ENAMETOOLONG)
        if is_internal(name):
            raise err(errno.EPERM)

    @staticmethod
    def owner(uid: int, gid: int, parent_st: os.stat_result) -> tuple[int, int]:
        # The group of a new entry comes from a set-group-ID parent directory, as on any Unix.
        if parent_st.st_mode & stat.S_ISGID:
            gid = parent_st.st_gid
        return uid, gid

    def _new_entry(self, rel: bytes, make: Callable[[], None], mode: int | None, uid: int,
                   gid: int, inherit_setgid: bool = False) -> tuple[os.stat_result, int | None]:
        """Create an entry as tierfs, then give it the caller's owner and mode (blocking).

        New directories in a set-group-ID directory keep that bit, as on any Unix.
        """
        warm = self.core.warm
        pst = warm.lstat(split(rel)[0])
        make()
        self.chown_new(rel, warm.lstat(rel), *self.owner(uid, gid, pst))
        if mode is not None:
            extra = pst.st_mode & stat.S_ISGID if inherit_setgid else 0
            warm.chmod(rel, stat.S_IMODE(mode) | extra)
        return self._stat_and_number(rel)

    def chown_new(self, rel: bytes, st: os.stat_result, uid: int, gid: int) -> os.stat_result:
        """Give an entry the caller's ownership (blocking; tierfs creates as itself)."""
        if (st.st_uid, st.st_gid) == (uid, gid):
            return st
        try:
            self.core.warm.chown(rel, uid, gid)
        except PermissionError:
            if self.core.as_root:
                raise
            return st  # an unprivileged mount owns everything it creates
        return self.core.warm.lstat(rel)

    def _stat_and_number(self, rel: bytes) -> tuple[os.stat_result, int | None]:
        """lstat plus the inode number an earlier mount gave the file, in one worker call."""
        st = self.core.warm.lstat(rel)
        return st, self.core.inodes.persisted_number(identity(st))

    def probe(self, rel: bytes) -> tuple[os.stat_result, bytes | None, int | None]:
        """lstat, symlink target and earlier inode number, in one worker call."""
        st, target = self.core.warm.lstat_link(rel)
        return st, target, self.core.inodes.persisted_number(identity(st))

    def stale(self, parent: int, name: bytes, seen: int) -> bool:
        """Whether tierfs replaced the warm file behind a name after ``seen`` (a publish by
        rename, a new stub): what was read of that name before then is the replaced file
        (another type, perhaps: a stub is a symlink there), so it is read again."""
        inode = self.core.inodes.child(parent, name)
        return inode is not None and inode.rekeyed > seen

    def register(self, parent: int, name: bytes, st: os.stat_result, persisted: int | None,
                 stub: Stub | None, confirmed: bytes | None = None) -> Inode:
        inode = self.core.inodes.resolve(parent, name, st, persisted,
                                         stat.S_IFREG if stub is not None else None, confirmed)
        if inode.data is None:
            # An open file's state knows better than a listing, which may be older than the
            # publish that just turned it into a stub or back (a symlink's attributes without
            # its stub would change the file's type under the kernel: EIO).
            inode.stub = stub
        return inode

    def entry(self, parent: int, name: bytes, st: os.stat_result, persisted: int | None,
              stub: Stub | None = None, confirmed: bytes | None = None) -> tuple[Inode, Attrs]:
        """Register a name just created or found, count the kernel's lookup, give attributes.
        ``persisted`` comes from the same worker call that found the entry."""
        inode = self.register(parent, name, st, persisted, stub, confirmed)
        self.core.inodes.lookup(inode)
        return inode, attrs_of(inode, st, stub)

    # -- lookups and attributes -----------------------------------------------------------

    async def lookup(self, parent: int, name: bytes) -> tuple[Inode, Attrs]:
        core = self.core
        if name in (b".", b".."):  # asked when the mount is exported (NFS, say)
            inode = core.inodes[parent]
            if name == b".." and inode.ino != ROOT_INODE:
                if not inode.links:
                    raise err(errno.ENOENT)
                inode = core.inodes[inode.links[0][0]]
            core.inodes.lookup(inode)
            return inode, await self.getattr(inode.ino)
        if is_internal(name):
            raise err(errno.ENOENT)
        if len(name) > core.namemax:
            raise err(errno.ENAMETOOLONG)
        known = core.inodes.child(parent, name)
        mark = None if known is None else core.seen_mark(known)
        async with core.ns_lock.shared():
            rel = core.inodes.child_path(parent, name)
            # (a listing is only used while nothing changed since it was read: not stale)
            listed = await self.listed.find(parent, split(rel)[0], name)
            if listed is not None:
                started, (st, target, persisted) = listed
            else:
                for _ in range(STALE_TRIES):
                    seen = core.inodes.replacements
                    started = time.monotonic()
                    st, target, persisted = await core.warm.run(self.probe, rel)
                    if not self.stale(parent, name, seen):
                        break
                self.listed.found(parent)
            stub = core.parse_stub(st, target, rel)
            witnesses = core.inodes.witnesses(parent, name, st)
            confirmed = None
            with contextlib.suppress(OSError):  # (gone meanwhile: not confirmed)
                if witnesses and await core.warm.run(core.warm.holds_any, rel, st.st_dev,
                                                     st.st_ino, witnesses):
                    confirmed = identity(st)
            inode, attrs = self.entry(parent, name, st, persisted, stub, confirmed)
        if inode.data is not None:
            if inode.data.base is not None:
                return inode, attrs_of(inode, inode.data.base)
        elif known is not inode or core.seen_mark(inode) == mark:
            inode.seen = (started, st)
        if listed is not None:
            attrs = attrs._replace(fresh_for=max(
                0.0, core.config.attr_timeout - (time.monotonic() - started)))
        return inode, attrs

    async def getattr(self, ino: int) -> Attrs:
        core = self.core
        inode = core.inodes[ino]
        data = inode.data
        if data is not None and data.base is not None:
            return attrs_of(inode, data.base)
        fresh = core.dir_attrs.pop(ino, None)
        if fresh is not None and time.monotonic() <= fresh[0]:
            return attrs_of(inode, fresh[1])
        return await core.refresh(inode)

    async def setattr(self, inode: Inode, changes: SetAttr) -> Attrs:
        """Owner, mode and times (a new size is the open files' business, done first)."""
        core = self.core
        core.forget_dir_attrs()
        while changes.owner_mode_or_times:
            # Not while a cold publish has put the new file at the name and not yet rekeyed
            # the inode to it (``OpenFile.swapping``): checked against the old file, the
            # change would find it gone (ESTALE).
            if (data := inode.data) is not None and data.swapping is not None:
                await data.swapping.wait()
                continue
            async with core.ns_lock:
                if (data := inode.data) is not None and data.swapping is not None:
                    continue
                await self._set_attributes(inode, changes)
                # (counted again: a lookup queued for the lock before this call may have
                # listed the directory after the count above: ``vfs.listed``)
                core.forget_dir_attrs()
            break
        return await core.refresh(inode)

    async def _set_attributes(self, inode: Inode, changes: SetAttr) -> None:
        """Owner, mode and times, wherever the file is now: a cold file's mode and mtime are
        in its stub (and a staged file's times in its staged data, published with it). Caller
        holds ``ns_lock``: see ``Inode.attr_changes``."""
        rel = self.core.rel_or_none(inode)
        data = inode.data
        staged = data is not None and data.staged
        if rel is not None:
            if inode.stub is not None:
                mtime_ns = None if staged else changes.mtime_ns
                # A staged file's next object takes its owner and mode when it is published
                # (``ownership.settle``); the object behind its stub now may be replaced by
                # that upload at any moment, and is not touched.
                etag = None if staged else await self._keep_object_in_step(inode, rel, changes)
                if changes.mode is not None or mtime_ns is not None or etag is not None:
                    await self._replace_stub(inode, rel, changes.mode, mtime_ns, etag)
                changes = dataclasses.replace(changes, mode=None)
                if not staged:  # (the stub keeps no atime)
                    changes = dataclasses.replace(changes, atime_ns=None, mtime_ns=None)
            await self.core.warm.run(self._setattr_blocking, inode, rel, changes)
        if data is not None and staged:
            stage_times(data, changes)
            # Times set after a write-back close (cp -p, tar, rsync) are published with the
            # data it acknowledged, by recovery too.
            await self.journal.times_changed(data)
        inode.attr_changes += 1
        inode.seen = None  # (changed: an open must look again)

    async def _keep_object_in_step(self, inode: Inode, rel: bytes, changes: SetAttr
                                   ) -> str | None:
        """A chmod that widens a cold file's mode, or a chown, goes to its object's recorded
        mode and owner first (``core.ownership``): the new ETag, if the object got one. Caller
        holds ``ns_lock``."""
        core = self.core
        stub = inode.stub
        assert stub is not None
        mode = None if changes.mode is None else stat.S_IMODE(changes.mode)
        if (changes.uid is None and changes.gid is None
                and (mode is None or not mode & ~stub.mode)):
            return None  # (no bits added: the stub alone narrows them)
        st = await core.warm.run(core.warm.lstat, rel)
        new = await self.owners.keep_in_step(stub, st, rel, mode, changes.uid, changes.gid)
        return new.etag if new.etag != stub.etag else None

    async def _replace_stub(self, inode: Inode, rel: bytes, mode: int | None,
                            mtime_ns: int | None, etag: str | None = None) -> None:
        """Put a new mode or mtime (or the object's new ETag) into a cold file's stub,
        atomically. Caller holds ``ns_lock``."""
        core = self.core
        stub = inode.stub
        assert stub is not None
        new = dataclasses.replace(
            stub, mode=stub.mode if mode is None else stat.S_IMODE(mode),
            mtime_ns=stub.mtime_ns if mtime_ns is None else mtime_ns,
            etag=stub.etag if etag is None else etag)
        with core.inodes.replacing(inode):
            st = await core.warm.run(core.warm.replace_symlink, rel,
                                     new.encode(core.config.bucket), key_ids(inode.key))
            inode.stub = new
            core.inodes.rekey(inode, st)
        if inode.data is not None:
            inode.data.stub, inode.data.base = new, st

    def _setattr_blocking(self, inode: Inode, rel: bytes, changes: SetAttr) -> None:
        if changes.mode is not None and inode.kind == stat.S_IFLNK:
            raise err(errno.EOPNOTSUPP)
        timed = changes.atime_ns is not None or changes.mtime_ns is not None
        if (changes.uid is None and changes.gid is None and changes.mode is None
                and not timed):
            return
        self.core.warm.set_attrs(
            rel, key_ids(inode.key), -1 if changes.uid is None else changes.uid,
            -1 if changes.gid is None else changes.gid, changes.mode,
            (changes.atime_ns, changes.mtime_ns) if timed else None)

    async def readlink(self, ino: int) -> bytes:
        core = self.core
        inode = core.inodes[ino]
        async with core.ns_lock.shared():
            return await core.warm.run(core.warm.readlink, core.inodes.path(inode))

    # -- new names ------------------------------------------------------------------------

    async def _make(self, parent: int, name: bytes, make: Callable[[bytes], None],
                    mode: int | None, uid: int, gid: int, inherit_setgid: bool = False
                    ) -> tuple[Inode, Attrs]:
        core = self.core
        core.forget_dir_attrs()
        self.check_name(name)
        async with core.ns_lock.shared():
            rel = core.inodes.child_path(parent, name)
            st, persisted = await core.warm.run(self._new_entry, rel, lambda: make(rel), mode,
                                                uid, gid, inherit_setgid)
            # (a lookup may have listed the directory meanwhile, before the entry got its
            # owner and mode: ``vfs.listed``)
            core.forget_dir_attrs()
            return self.entry(parent, name, st, persisted)

    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        warm = self.core.warm
        return await self._make(parent, name, lambda rel: warm.mkdir(rel, 0o700), mode, uid,
                                gid, True)

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int
                    ) -> tuple[Inode, Attrs]:
        kind = stat.S_IFMT(mode)
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFREG):
            self.core.forget_dir_attrs()
            self.check_name(name)
            raise err(errno.EPERM)  # device nodes: see docs/semantics.md
        warm = self.core.warm
        return await self._make(parent, name, lambda rel: warm.mknod(rel, kind | 0o600, 0),
                                mode, uid, gid)

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int
                      ) -> tuple[Inode, Attrs]:
        if looks_like_stub(target):
            self.core.forget_dir_attrs()
            self.check_name(name)
            raise err(errno.EPERM)  # it would read as a stub: a way to reach other objects
        warm = self.core.warm
        return await self._make(parent, name, lambda rel: warm.symlink(target, rel), None,
                                uid, gid)

    async def link(self, ino: int, new_parent: int, new_name: bytes) -> tuple[Inode, Attrs]:
        core = self.core
        core.forget_dir_attrs()
        self.check_name(new_name)
        inode = core.inodes[ino]
        while (data := inode.data) is not None:
            # Not while a publish of the file is under way: it checked the link count before
            # renaming a new file over the name, and the rename would split the links (the
            # new name keeping the old content). Publishing holds the file's lock throughout.
            async with data.lock:
                if inode.data is not data:
                    continue  # retired while we waited
                if data.upload is not None:
                    raise err(errno.EPERM)  # on its way to the bucket: as for a stub
                await self._link(inode, new_parent, new_name)
                break
        else:
            await self._link(inode, new_parent, new_name)
        return inode, await core.refresh(inode)

    async def _link(self, inode: Inode, new_parent: int, new_name: bytes) -> None:
        core = self.core
        if inode.is_dir or inode.stub is not None:
            # A stub is one symlink per object: a second name could outlive the object.
            raise err(errno.EPERM)
        async with core.ns_lock:
            rel = core.inodes.path(inode)
            new_rel = core.inodes.child_path(new_parent, new_name)
            await core.warm.run(core.warm.link, rel, new_rel)
            # (``link`` may have waited for the file's lock, and a lookup listed the
            # directory meanwhile: ``vfs.listed``)
            core.forget_dir_attrs()
            core.inodes.add_link(inode, new_parent, new_name)
            core.inodes.lookup(inode)
            inode.seen = None  # (its link count changed: an open must look again)

    # -- names going ----------------------------------------------------------------------

    async def unlink(self, parent: int, name: bytes) -> None:
        core = self.core
        core.forget_dir_attrs()
        async with core.ns_lock:
            rel = core.inodes.child_path(parent, name)
            core.name_changes += 1
            going = core.inodes.child(parent, name)
            await open_before_removal(self.core, going)
            gone = await core.warm.run(self._unlink_blocking, rel,
                                       is_cold(going) or last_name_of_open(going))
            removed = core.inodes.remove_link(parent, name)
            note_other_names(removed, gone)
            forget_base(removed)
            changed = self._rejournal(removed)
            if self.journal.unlinked(rel) or changed:
                await self.journal.sync()  # an unlinked name must not come back at recovery
        await self._drop_unreferenced(removed, gone, rel)

    async def rmdir(self, parent: int, name: bytes) -> None:
        core = self.core
        core.forget_dir_attrs()
        async with core.ns_lock:
            rel = core.inodes.child_path(parent, name)
            core.name_changes += 1
            await core.warm.run(self._rmdir_blocking, rel)
            core.inodes.remove_link(parent, name)

    def _rmdir_blocking(self, rel: bytes) -> None:
        warm = self.core.warm
        try:
            warm.rmdir(rel)
        except OSError as e:
            if e.errno != errno.ENOTEMPTY or not warm.clear_temps(rel):
                raise
            warm.rmdir(rel)

    async def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                     flags: int) -> None:
        core = self.core
        core.forget_dir_attrs()
        self.check_name(new_name)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise err(errno.EINVAL)
        exchange = bool(flags & RENAME_EXCHANGE)
        async with core.ns_lock:
            rel = core.inodes.child_path(parent, name)
            new_rel = core.inodes.child_path(new_parent, new_name)
            core.name_changes += 1
            target = None if exchange else core.inodes.child(new_parent, new_name)
            await open_before_removal(self.core, target)
            # Counted before the warm call: a call on a path the rename takes away (made
            # without the lock) fails before the rename returns, and must see it counted.
            core.renames += 1
            moved = core.inodes.child(parent, name)
            key = None if moved is None or stands_in(moved.key) else moved.key
            if self.journal.moving(Move(rel, new_rel, key, exchange)):
                await self.journal.sync()
            try:
                gone = await core.warm.run(
                    self._rename_blocking, rel, new_rel, flags,
                    is_cold(target) or last_name_of_open(target))
            except BaseException:
                if self.journal.moving(None):
                    with trio.CancelScope(shield=True):
                        await self.journal.sync()
                raise
            replaced = core.inodes.child(new_parent, new_name)
            if exchange:
                core.inodes.exchange(parent, name, new_parent, new_name)
                forget_base(replaced)
                replaced = None
            else:
                core.inodes.move(parent, name, new_parent, new_name)
                note_other_names(replaced, gone)
                forget_base(replaced)  # (after the move: it may have lost its last name)
            forget_base(moved)
            # Staged data must be published under the new names after a crash too; a file
            # the rename replaced keeps its staged data only under another name it has.
            changed = self._rejournal(replaced)
            changed = self.journal.moved(rel, new_rel, exchange) or changed
            if changed:
                await self.journal.sync()
        await self._drop_unreferenced(replaced, gone, new_rel)

    def _rejournal(self, inode: Inode | None) -> bool:
        """Re-point an inode's journal entry at its current path (nothing to publish if it
        has none left); True if the entry said its data may be published."""
        if inode is None or inode.data is None or inode.data.staging_id is None:
            return False
        return self.journal.repoint(inode.data.staging_id, self.core.rel_or_none(inode))

    def _unlink_blocking(self, rel: bytes, look: bool) -> Link | None:
        """Unlink; if ``look``, what the link held first (``_drop_unreferenced`` for a cold
        file, ``removal.note_other_names`` for an open one)."""
        link = self.core.warm.lstat_link_if_any(rel) if look else None
        self.core.warm.unlink(rel)
        return link

    def _rename_blocking(self, rel: bytes, new_rel: bytes, flags: int, look: bool
                         ) -> Link | None:
        """Rename; if ``look``, what the link it replaces held first (as for
        ``_unlink_blocking``)."""
        warm = self.core.warm
        link = warm.lstat_link_if_any(new_rel) if look else None
        try:
            warm.rename(rel, new_rel, flags)
        except OSError as e:
            # A directory renamed over one that holds only temp files, as for rmdir.
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or flags:
                raise
            try:
                cleared = warm.clear_temps(new_rel)
            except OSError:
                cleared = False  # (the rename's own answer, not the listing's)
            if not cleared:
                raise e
            warm.rename(rel, new_rel, flags)
        return link

    async def _drop_unreferenced(self, inode: Inode | None, link: Link | None,
                                 rel: bytes) -> None:
        """A cold file that lost its last name through this mount: its object goes now, or
        when the last handle closes (``OpenFile.drop_object``: an open file keeps its data,
        as on any POSIX file system). Only if the name removed held that very stub, and
        alone: not a stub hard-linked to other names (``ln``, ``cp -al`` on the warm tree:
        they need the object), not a name another node had given to another file since this
        mount last looked (the stub moved elsewhere keeps its object), and not a stub whose
        object records an owner other than the removed link's (a copy of someone else's
        stub, ``core.ownership``)."""
        if inode is None or inode.links or inode.stub is None or link is None:
            return
        st, target = link
        if not stat.S_ISLNK(st.st_mode) or st.st_nlink != 1:
            return
        held = self.core.parse_stub(st, target, rel)
        if held is None or held.key != inode.stub.key:
            return
        if not await self.owners.may_delete(inode.stub, st.st_uid, rel):
            return
        if inode.data is not None:
            inode.data.drop_object = held
            return
        # (The version the removed name held: another node may have rewritten the file
        # under the same key since this mount last parsed its stub.)
        await self.core.delete_object(held.key, held.etag)

    async def forget(self, items: Sequence[tuple[int, int]]) -> None:
        for ino, count in items:
            self.core.inodes.forget(ino, count)

    async def statfs(self) -> os.statvfs_result:
        return await self.core.warm.run(self.core.warm.statvfs)

    # -- extended attributes --------------------------------------------------------------

    def _check_xattrs(self, inode: Inode) -> None:
        """EOPNOTSUPP without a warm call where the tier has been found to lack xattrs."""
        if self.core.warm.lacks_xattrs(key_ids(inode.key)[0]):
            raise err(errno.EOPNOTSUPP)

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        core = self.core
        inode = core.inodes[ino]
        known = core.known_xattrs(inode)
        if known is not None and name not in known:
            raise err(errno.ENODATA)
        self._check_xattrs(inode)

        def get(rel: bytes) -> tuple[bytes | None, list[bytes]]:
            # List too: one more syscall now saves a request per later absent name.
            names = core.warm.listxattr(rel)
            return (core.warm.getxattr(rel, name) if name in names else None), names

        async with core.ns_lock.shared():
            value, names = await core.warm.run(get, core.inodes.path(inode))
        core.remember_xattrs(inode, frozenset(names))
        if value is None:
            raise err(errno.ENODATA)
        return value

    def _check_keeps_xattrs(self, inode: Inode) -> None:
        """EOPNOTSUPP for a file streaming to the bucket: its stub, soon in place of the warm
        file, cannot keep them (nor can a stub already there: ``XattrCalls.setxattr``)."""
        if inode.data is not None and inode.data.upload is not None:
            raise err(errno.EOPNOTSUPP)

    async def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        core = self.core
        core.forget_dir_attrs()
        inode = core.inodes[ino]
        self._check_keeps_xattrs(inode)
        inode.xattr_names = None
        async with core.ns_lock:  # see Inode.attr_changes
            await core.warm.run(core.warm.setxattr, core.inodes.path(inode), name, value)
            core.forget_dir_attrs()  # (again: see ``setattr``)
            inode.attr_changes += 1
            inode.seen = None  # (changed: an open must look again)

    async def listxattr(self, ino: int) -> list[bytes]:
        core = self.core
        inode = core.inodes[ino]
        self._check_xattrs(inode)
        async with core.ns_lock.shared():
            names = await core.warm.run(core.warm.listxattr, core.inodes.path(inode))
        core.remember_xattrs(inode, frozenset(names))
        return names

    async def removexattr(self, ino: int, name: bytes) -> None:
        core = self.core
        core.forget_dir_attrs()
        inode = core.inodes[ino]
        inode.xattr_names = None
        async with core.ns_lock:  # see Inode.attr_changes
            await core.warm.run(core.warm.removexattr, core.inodes.path(inode), name)
            core.forget_dir_attrs()  # (again: see ``setattr``)
            inode.attr_changes += 1
            inode.seen = None  # (changed: an open must look again)
