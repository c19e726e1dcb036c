"""Making a new file's name on the warm tier: at its create, or just after it returned
(``core.naming`` says when, and what a user may tell apart).

``OpenFiles.create`` asks here; the handle and open-file state are its own.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import trio

from tierfs.core.attrs import Attrs, err
from tierfs.core.context import Core
from tierfs.core.inodes import Inode, identity
from tierfs.core.naming import Naming, NamingState, stand_in
from tierfs.core.openfile import OpenFile
from tierfs.paths import show
from tierfs.tiers.beneath import split
from tierfs.vfs.namespace import Namespace
from tierfs.write.journal import Journal

log = logging.getLogger(__name__)

#: Names made after their create returned (``core.naming``) at most waiting at once.
MOST_PENDING = 64
#: Creates tried at a name another node keeps making and removing (``Names.make``).
ADOPT_TRIES = 3


def truncate_through(fd: int) -> os.stat_result:
    """Empty the very file ``fd`` holds (opened again to write: no other file can have
    taken its name meanwhile), and its attributes after (blocking)."""
    wfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(wfd, 0)
    finally:
        os.close(wfd)
    return os.fstat(fd)


class Names:
    def __init__(self, core: Core, journal: Journal, namespace: Namespace) -> None:
        self.core = core
        self.journal = journal
        self.namespace = namespace

    def make(self, rel: bytes, pst: os.stat_result | None, mode: int, uid: int, gid: int,
             adopt: bool) -> tuple[int, os.stat_result, int | None, frozenset[bytes] | None,
                                   os.stat_result, bool]:
        """Make a new file's name on the warm tier (blocking): its descriptor and attributes,
        the inode number an earlier mount gave it, its extended attribute names and its
        directory's attributes after, and whether it made the file. ``adopt``: a regular
        file another node made at the name meanwhile is opened instead, as open(2) without
        O_EXCL would (a name made after its create returned, ``core.naming``)."""
        core, ns = self.core, self.namespace
        if pst is None:
            pst = core.warm.lstat(split(rel)[0])
        owner = ns.owner(uid, gid, pst)
        made = True
        for tries_left in reversed(range(ADOPT_TRIES)):
            try:
                # Read-only is enough: the descriptor only keeps the file reachable once
                # unlinked. Made with its mode where the tier will give it its owner: no
                # chmod then, a round trip on a network file system (``WarmTier.new_perms``).
                fd = core.warm.open(rel, os.O_RDONLY | os.O_CREAT | os.O_EXCL,
                                    core.warm.new_perms(owner, mode))
                break
            except FileExistsError:
                if not adopt:
                    raise
            try:
                fd, made = self._adopt(rel, uid), False
                break
            except FileNotFoundError:
                if not tries_left:
                    raise
                # Removed by another node since the create found it: open(2) without
                # O_EXCL would make the file, and so does this, once more.
        try:
            st = os.fstat(fd)
            if made:
                core.warm.made(st)
                st = ns.chown_new(rel, st, *owner)
                if stat.S_IMODE(st.st_mode) != stat.S_IMODE(mode):
                    os.fchmod(fd, stat.S_IMODE(mode))  # (after a chown: it clears set-id bits)
                    st = os.fstat(fd)
            try:
                # The kernel asks for security.capability before the first write: known
                # names answer it without another trip to the warm tier.
                xattrs = frozenset(os.fsencode(n) for n in os.listxattr(fd))
            except OSError as e:
                core.warm.note_xattrs_failed(st.st_dev, e)  # (and so does a tier without)
                xattrs = None
            # The kernel asks for the directory's attributes before the next create.
            after = core.warm.lstat(split(rel)[0])
            return fd, st, core.inodes.persisted_number(identity(st)), xattrs, after, made
        except BaseException:
            os.close(fd)
            raise

    def _adopt(self, rel: bytes, uid: int) -> int:
        """A regular file another node made at a name being made: opened, to be emptied as
        open(2) with O_TRUNC would have (by ``_name``, once it is known to be no file of
        this mount's), only where the caller owns it and may write it. The kernel checked
        permissions at the create, on no file; the rest of what open(2) would allow (through
        a group, to root) is refused here rather than judged again."""
        try:
            fd = self.core.warm.open(rel, os.O_RDONLY)
        except OSError as e:
            if e.errno in (errno.ESTALE, errno.ELOOP):  # (a directory, a link, a stub)
                raise err(errno.EEXIST) from e
            raise
        try:
            st = os.fstat(fd)
            if st.st_uid != uid or not st.st_mode & stat.S_IWUSR:
                raise err(errno.EACCES)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def later(self, flags: int) -> bool:
        """Whether a create's name is made after it returns (``core.naming``): in write-back,
        for an open that truncates and does not ask for O_EXCL (so a file another node makes
        at the name meanwhile may be the one opened, and emptied, ``_adopt``), in a directory
        where a create just succeeded (``made_in_attrs``: a create that cannot succeed there
        fails at once), by a writer (whose close can say that the name failed), while fewer
        than ``MOST_PENDING`` names wait."""
        core = self.core
        return (core.config.durability == "writeback" and bool(flags & os.O_TRUNC)
                and flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
                and not flags & os.O_EXCL and core.nursery is not None
                and len(core.namings) < MOST_PENDING)

    def pending(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
                known: os.stat_result) -> tuple[Inode, Attrs, OpenFile]:
        """A create answered before its name is made: stand-in attributes, the name made by a
        background task (``_name``). Caller holds ``ns_lock`` shared."""
        core = self.core
        assert core.nursery is not None
        st = stand_in(mode, *self.namespace.owner(uid, gid, known))
        inode, attrs = self.namespace.entry(parent, name, st, None)
        data = OpenFile(base=st, atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns,
                        created=True)
        inode.data = data
        inode.cached_version = None
        naming = Naming(inode, parent, name)
        # (The kernel asks for them before the next create; whether that one is named
        # later is still up to when this name is made, not renewed here.)
        core.remember_dir(parent, known, made_in=False)
        core.nursery.start_soon(self._name, naming, data, mode, uid, gid)
        core.namings.add(naming)  # (after: were the nursery closed, nothing would wait)
        return inode, attrs, data

    async def _name(self, naming: Naming, data: OpenFile, mode: int, uid: int, gid: int
                    ) -> None:
        """Make a pending name on the warm tier and key its inode to the file made (or, if it
        cannot be made, take the name away and keep the error for the file's close)."""
        core = self.core
        inode = naming.inode
        state, failure = NamingState.FAILED, None
        with trio.CancelScope(shield=True):  # (an unmount waits for it: ``settle``)
            try:
                async with core.ns_lock.shared():
                    # (Its path now: a directory above may have been renamed meanwhile.)
                    rel = core.rel_or_none(inode)
                    if rel is None:
                        raise err(errno.ENOENT)
                    fd, st, _, xattrs, after, made = await core.warm.run(
                        self.make, rel, core.made_in_attrs(naming.parent), mode, uid, gid,
                        True)
                    other = None if made else core.inodes.known(identity(st))
                    if other is not None and other is not inode and st.st_nlink > 1:
                        # (a file this mount knows, linked there by another node: neither
                        # emptied nor given a second inode; with one link, the number of a
                        # file removed meanwhile, given to a new one, as ``resolve`` takes it)
                        log.error("%s: another node linked a file this mount knows (inode %d) "
                                  "at the name of a new file", show(rel), other.ino)
                        await core.warm.run(os.close, fd)
                        raise err(errno.EEXIST)
                    if st.st_size:  # (adopted: emptied now, as open(2) with O_TRUNC does)
                        try:
                            st = await core.warm.run(truncate_through, fd)
                        except BaseException:
                            await core.warm.run(os.close, fd)
                            raise
                    core.inodes.rekey(inode, st)
                    data.warm_fd, data.base = fd, st
                    if not data.staged:
                        data.atime_ns, data.mtime_ns = st.st_atime_ns, st.st_mtime_ns
                    self._dir_changed(naming.parent, after)
                    if xattrs is not None:
                        core.remember_xattrs(inode, xattrs)
                    state = NamingState.NAMED
            except Exception as e:
                failure = e if isinstance(e, OSError) else err(errno.EIO)
                log.error("could not make the name of a new file (inode %d) on the warm "
                          "tier; its close fails: %s", inode.ino, failure)
                self._unname(naming, data)
            finally:
                core.namings.finish(naming, state, failure)  # (whatever failed: none waits on)
        core.invalidate_attrs(inode.ino)  # (the stand-in's times, owner and mode)
        core.invalidate_attrs(naming.parent)

    def _dir_changed(self, parent: int, after: os.stat_result) -> None:
        """The directory's attributes as read after a name was made: names made side by side
        finish in any order, so the latest change read is kept, not the last read."""
        core = self.core
        known = core.made_in_attrs(parent)
        core.forget_dir_attrs(create=True)
        if known is not None and ((known.st_ctime_ns, known.st_mtime_ns)
                                  > (after.st_ctime_ns, after.st_mtime_ns)):
            after = known
        core.remember_dir(parent, after)

    def _unname(self, naming: Naming, data: OpenFile) -> None:
        """A name that could not be made is taken away, as if another node had removed it:
        what is staged for it is never published there."""
        core = self.core
        core.inodes.remove_link(naming.parent, naming.name)
        if data.staging_id is not None:
            self.journal.repoint(data.staging_id, None)
        # (and no create is named later in the directory until one succeeds there at once:
        # the next ones may fail alike, and should at their create)
        core.forget_dir_attrs()
