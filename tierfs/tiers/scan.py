"""Reading a warm directory's entries: its names, then their attributes.

Apart, so that a long listing can be handed out while the rest of its attributes are read
(``vfs.listing``), each step on one descriptor of the directory, held for the whole listing:
the listing follows the directory if another node renames it meanwhile, and never mixes in
the entries of another directory made under its old name. Blocking: callers reach these
through the warm tier's threads. A warm tree is shared, so its names are anyone's choice:
tierfs's own temp files and NFS's silly-renamed files are never listed.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable

#: Temp files are named independently of the user's name, so a 255-byte name still has room.
TEMP_PREFIX = b".tierfs-"
TEMP_SUFFIX = b".tmp"

#: What most files' extended attribute names are.
NO_NAMES: frozenset[bytes] = frozenset()

#: Errors of one entry alone (one that keeps changing type, a name the server will not
#: resolve): that entry is left out of a listing. Any other error (EIO, a timeout, a stale
#: handle) may be the server's or the directory's, and fails the listing: a listing cut
#: short without an error would have ``ls``, ``cp -r`` or ``rsync`` leave files out.
ENTRY_ERRORS = frozenset({errno.EAGAIN, errno.EINVAL, errno.ELOOP, errno.ENAMETOOLONG,
                          errno.EOVERFLOW})

#: One entry: name, attributes, extended attribute names (None where they could not be
#: listed, or were not asked for) and symlink target.
Entry = tuple[bytes, os.stat_result, frozenset[bytes] | None, bytes | None]


def is_internal(name: bytes) -> bool:
    """Names tierfs uses for itself inside the namespace; never shown through the mount."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


#: A network file system's client keeps a file unlinked while open (tierfs holds the warm
#: file of an open handle) under a hidden name until the last close: the Linux NFS client's
#: ".nfs" and 24 hex digits, libfuse's ".fuse_hidden" and 16 (sshfs and other FUSE clients).
_SILLY_RENAMED = re.compile(rb"\.(nfs[0-9a-f]{24}|fuse_hidden[0-9a-f]{16})\Z")


def is_silly_renamed(name: bytes) -> bool:
    """A name the warm tier's client gave an unlinked file still open: not listed, since
    the file is gone for every user (it disappears at its last close)."""
    return _SILLY_RENAMED.match(name) is not None


def stat_link(lstat: Callable[[], os.stat_result], readlink: Callable[[], bytes]
              ) -> tuple[os.stat_result, bytes | None]:
    """An entry's attributes and, for a symlink, its target. A stub can be replaced by a
    plain file between the two calls (a publish renames the file over it): readlink then
    fails with EINVAL, and the entry is looked at again."""
    for _ in range(8):
        st = lstat()
        if not stat.S_ISLNK(st.st_mode):
            return st, None
        try:
            return st, readlink()
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    raise OSError(errno.EAGAIN, "the entry keeps changing type")


def names_at(dfd: int, most: int | None = None) -> list[bytes] | None:
    """The names in the directory ``dfd``; None past ``most`` entries (temp files counted:
    the scan stops there, whatever the directory holds)."""
    names = []
    with os.scandir(dfd) as it:
        for seen, entry in enumerate(it):
            if most is not None and seen >= most:
                return None
            name = os.fsencode(entry.name)
            if not (is_internal(name) or is_silly_renamed(name)):
                names.append(name)
    return names


def entries_at(dfd: int, names: list[bytes], xattrs: bool = True) -> list[Entry]:
    """The entry of each of ``names`` still in the directory ``dfd`` (one gone since is left
    out). An entry that cannot be read for a reason of its own (``ENTRY_ERRORS``) is left out
    alone: one that anyone sharing the tree keeps flipping between a symlink and a file must
    not take the others' listing with it."""
    out = []
    for name in names:
        try:
            st, target = stat_link(lambda: os.stat(name, dir_fd=dfd, follow_symlinks=False),
                                   lambda: os.readlink(name, dir_fd=dfd))
        except FileNotFoundError:  # removed while we listed
            continue
        except OSError as e:
            if e.errno not in ENTRY_ERRORS:
                raise
            continue
        out.append((name, st, xattr_names_at(dfd, os.fsdecode(name)) if xattrs else None,
                    target))
    return out


def xattr_names_at(dfd: int, name: str) -> frozenset[bytes] | None:
    try:
        names = os.listxattr(f"/proc/self/fd/{dfd}/{name}", follow_symlinks=False)
    except OSError:
        return None
    return frozenset(os.fsencode(n) for n in names) if names else NO_NAMES
