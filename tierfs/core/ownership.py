"""Whether a stub may serve the object it names, and keeping an object's recorded owner and
mode in step with its stub.

A stub is a symbolic link on a shared tree: whoever creates one owns it, and the kernel checks
permissions against what tierfs reports for it (the link's owner, the stub's mode). Copying the
target of another user's stub into a link of one's own would otherwise hand over that user's
data. So every object tierfs uploads records its owner and mode in its metadata, and a stub is
served only if its link's owner is that owner and its mode grants no permission bit the
recorded mode does not. Objects that record no owner (written by ``tierfs import`` or before
owners were recorded) are taken as their stubs say; docs/stubs.md lists what that leaves open.

A verified stub is remembered for the mount's lifetime, by (key, ETag, owner, mode): a later
open of the same file asks the bucket nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
from collections.abc import Mapping

from tierfs.cache.entries import cold_source_id
from tierfs.core.attrs import err, file_mode
from tierfs.core.context import AttrMark, Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import OpenFile
from tierfs.objects.base import (MetadataFixed, NoSuchObject, ObjectChanged, ObjectInfo,
                                 ObjectStoreError, is_copy_of)
from tierfs.paths import show
from tierfs.stubs import Stub

log = logging.getLogger(__name__)

#: Metadata names of the owner an object records (its mode is ``mode``, in octal).
UID, GID, MODE = "uid", "gid", "mode"
#: Stubs remembered as verified (a few hundred bytes each).
VERIFIED_ENTRIES = 4096
#: Past any block number: every cached block of a source.
ALL_BLOCKS = 1 << 62


def owner_metadata(st: os.stat_result) -> dict[str, str]:
    """The owner a new object records: that of the file it is uploaded for (the warm file,
    or the stub's link for a cold file rewritten)."""
    return {UID: str(st.st_uid), GID: str(st.st_gid)}


@dataclasses.dataclass(frozen=True)
class Recorded:
    """The owner and mode an object records."""

    uid: int
    gid: int
    mode: int


def recorded(metadata: Mapping[str, str]) -> Recorded | None:
    """What ``metadata`` records; None if it records no owner. Raises ValueError for a
    recorded owner that is not one tierfs writes: such an object is refused, not trusted."""
    if UID not in metadata:
        return None
    uid, gid, mode = metadata[UID], metadata.get(GID, ""), metadata.get(MODE, "")
    if not (uid.isdigit() and gid.isdigit() and len(mode) <= 6
            and mode.isdigit() and set(mode) <= set("01234567")):
        raise ValueError(f"owner {uid!r}:{gid!r}, mode {mode!r}")
    return Recorded(int(uid), int(gid), int(mode, 8) & 0o7777)


def refusal(stub: Stub, owner: int, rec: Recorded) -> str | None:
    """Why a stub whose link ``owner`` owns may not serve an object recording ``rec``."""
    if owner != rec.uid:
        return f"its link is owned by uid {owner}, the object by uid {rec.uid}"
    if stub.mode & ~rec.mode:
        return f"its mode {stub.mode:04o} grants more than the object's {rec.mode:04o}"
    return None


class Owners:
    """The stubs verified against their objects in this mount."""

    def __init__(self, core: Core, size: int = VERIFIED_ENTRIES) -> None:
        self.core = core
        self.size = size
        self.verified: collections.OrderedDict[tuple[str, str, int, int], None] = (
            collections.OrderedDict())

    def remember(self, stub: Stub, owner: int) -> None:
        entry = (stub.key, stub.etag, owner, stub.mode)
        self.verified[entry] = None
        self.verified.move_to_end(entry)
        while len(self.verified) > self.size:
            self.verified.popitem(last=False)

    def known(self, stub: Stub, owner: int) -> bool:
        entry = (stub.key, stub.etag, owner, stub.mode)
        if entry in self.verified:
            self.verified.move_to_end(entry)
            return True
        return False

    async def check(self, stub: Stub, st: os.stat_result, rel: bytes) -> None:
        """Refuse (EACCES) a stub whose link ``st`` does not belong to its object's recorded
        owner, or whose mode is wider than the recorded one, before its data is served."""
        if self.known(stub, st.st_uid):
            return
        core = self.core
        try:
            info = await core.cold.run(core.cold.store.head, stub.key)
        except NoSuchObject:
            info = None
        except ObjectStoreError as e:
            log.error("cannot check the owner of %s (object %s): %s", show(rel), stub.key, e)
            raise err(errno.EIO) from None
        if info is None or info.etag != stub.etag:
            # The stub's version is not the bucket's any more, so its owner cannot be checked:
            # its blocks are not served from the cache (named by key, ETag and size, they
            # outlive the object), where a link copied from its old stub would otherwise find
            # them. Its reads then fail, as reads of any version the bucket no longer has do;
            # an open that will not read it (a rewrite) goes on.
            source = cold_source_id(str(core.config.bucket), stub.key, stub.etag, stub.size)
            await core.cache.evict_source(source, ALL_BLOCKS)
            if info is None:
                return
        try:
            rec = recorded(info.metadata)
        except ValueError as e:
            log.error("refused %s: its object %s records an owner tierfs does not write (%s)",
                      show(rel), stub.key, e)
            raise err(errno.EACCES) from None
        if rec is not None and (why := refusal(stub, st.st_uid, rec)) is not None:
            log.error("refused %s: its stub does not match its object %s: %s",
                      show(rel), stub.key, why)
            raise err(errno.EACCES)
        if info.etag == stub.etag:
            self.remember(stub, st.st_uid)

    async def may_delete(self, stub: Stub, owner: int, rel: bytes) -> bool:
        """Whether removing the last name of a cold file, a link ``owner`` owned, may delete
        its object: not if the object records another owner (the link was a copy of that
        owner's stub, and removing it must not take their data), nor if the bucket cannot
        say (an object left behind is garbage, one deleted is lost)."""
        if self.known(stub, owner):
            return True
        core = self.core
        try:
            rec = recorded((await core.cold.run(core.cold.store.head, stub.key)).metadata)
        except NoSuchObject:
            return True
        except (ObjectStoreError, ValueError) as e:
            log.error("kept the object %s of %s, removed: cannot check its owner: %s",
                      stub.key, show(rel), e)
            return False
        if rec is not None and rec.uid != owner:
            log.error("kept the object %s of %s, removed: the link was uid %d's, the object "
                      "is uid %d's", stub.key, show(rel), owner, rec.uid)
            return False
        return True

    async def keep_in_step(self, stub: Stub, st: os.stat_result, rel: bytes,
                           mode: int | None = None, uid: int | None = None,
                           gid: int | None = None) -> Stub:
        """Before a chmod or chown of a cold file: give its object the new mode or owner, if
        the object records an owner and the change widens the mode or changes the owner (a
        stub cannot grant what its object does not record). Only the object's recorded owner
        may do this through its stub: anyone else's link naming the object is refused
        (EPERM), whoever asks (a root ``chown -R`` over a user's tree must not hand the user
        another's object). Returns the stub, with the object's new ETag if it has one."""
        new_mode = stub.mode if mode is None else mode & 0o777
        widens = bool(new_mode & ~stub.mode)
        if not widens and uid in (None, st.st_uid) and gid in (None, st.st_gid):
            return stub  # fewer bits only: the stub alone narrows them
        core = self.core
        try:
            info = await core.cold.run(core.cold.store.head, stub.key)
            rec = recorded(info.metadata)
        except NoSuchObject:
            return stub
        except ValueError as e:
            log.error("refused a change of %s: its object %s records an owner tierfs does not "
                      "write (%s)", show(rel), stub.key, e)
            raise err(errno.EPERM) from None
        except ObjectStoreError as e:
            log.error("cannot check the owner of %s (object %s): %s", show(rel), stub.key, e)
            raise err(errno.EIO) from None
        if rec is None:
            return stub
        if st.st_uid != rec.uid:
            log.error("refused a change of %s: its link is owned by uid %d, its object %s by "
                      "uid %d", show(rel), st.st_uid, stub.key, rec.uid)
            raise err(errno.EPERM)
        if info.etag != stub.etag and is_copy_of(info, stub.etag, stub.size):
            # A change before this one copied the object onto itself and never heard its new
            # ETag (the answer lost): it is the stub's version, with that change's metadata.
            stub = dataclasses.replace(stub, etag=info.etag)
        new = Recorded(rec.uid if uid is None else uid, rec.gid if gid is None else gid,
                       new_mode if new_mode & ~rec.mode else rec.mode)
        owner = new.uid
        if new == rec:
            self.remember(dataclasses.replace(stub, mode=new_mode), owner)
            return stub
        metadata = {**info.metadata, UID: str(new.uid), GID: str(new.gid),
                    MODE: f"{new.mode:04o}"}
        try:
            info = await core.cold.run(core.cold.store.replace_metadata, stub.key, stub.etag,
                                       metadata)
        except MetadataFixed as e:
            log.error("cannot change the mode or owner of %s: %s", show(rel), e)
            raise err(errno.EOPNOTSUPP) from None
        except ObjectChanged:
            log.error("cannot change the mode or owner of %s: its object %s changed behind "
                      "its stub", show(rel), stub.key)
            raise err(errno.EIO) from None
        except ObjectStoreError as e:
            log.error("cannot change the mode or owner of %s in its object %s: %s",
                      show(rel), stub.key, e)
            raise err(errno.EIO) from None
        self.remember(dataclasses.replace(stub, etag=info.etag, mode=new_mode), owner)
        return dataclasses.replace(stub, etag=info.etag)


async def settle(core: Core, stub: Stub, owner: os.stat_result, info: ObjectInfo, rel: bytes
                 ) -> Stub:
    """A new object's stub, before it is put in place: if the file changed owner or gained
    permission bits while it was uploading (``cp -p`` sets both on the open file, after
    writing), the object takes them too, or its stub would be refused. ``owner``: the file's
    (its stub's link keeps it). Returns the stub with the object's new ETag, if it got one."""
    rec = recorded(info.metadata)
    if rec is None or refusal(stub, owner.st_uid, rec) is None:
        return stub
    metadata = {**info.metadata, UID: str(owner.st_uid), GID: str(owner.st_gid),
                MODE: f"{stub.mode:04o}"}
    try:
        new = await core.cold.run(core.cold.store.replace_metadata, info.key, info.etag,
                                  metadata)
    except ObjectStoreError as e:
        log.error("cannot give the object of %s its file's owner and mode: %s", show(rel), e)
        raise err(errno.EIO) from None
    return dataclasses.replace(stub, etag=new.etag)


async def stub_as_now(core: Core, inode: Inode, data: OpenFile, stub: Stub, info: ObjectInfo,
                      rel: bytes, since: AttrMark) -> Stub:
    """The stub of a file this node rewrote into a new object, just before it goes in at
    ``rel``: with the mode and mtime a change through this mount gave the file meanwhile
    (``since``: ``attr_mark`` when its publish began), or else the mode another node gave
    it (``_mode_at_name``); and the object given the owner and mode too, if they changed
    (``settle``)."""
    if core.attr_mark(inode) != since:  # (chmod, utime, rename)
        data.base = None
        await core.fresh_base(inode, data)
        stub = dataclasses.replace(stub, mode=file_mode(inode, data), mtime_ns=data.mtime_ns)
    elif inode.stub is not None:  # (another node's chmod)
        mode = await _mode_at_name(core, inode.stub, rel)
        stub = stub if mode is None else dataclasses.replace(stub, mode=mode)
    if data.base is not None:  # (owner or mode changed)
        stub = await settle(core, stub, data.base, info, rel)
    return stub


async def _mode_at_name(core: Core, known: Stub, rel: bytes) -> int | None:
    """The mode the stub at ``rel`` gives now, if it still names ``known``'s object with
    another mode (None otherwise): another node's chmod of a file in the bucket while this
    node rewrote it. Its new stub keeps that mode, as a warm publish takes the mode of the
    file at the name; else the close would undo a mode narrowed to shut readers out."""
    try:
        st, target = await core.warm.run(core.warm.lstat_link, rel)
        now = core.parse_stub(st, target, rel)
    except OSError:
        return None  # (gone or refused: the publish finds out)
    if now is None or now.key != known.key or now.mode == known.mode:
        return None
    return now.mode
