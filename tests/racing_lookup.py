"""tierfs in the foreground with its lookups and creates of some names watched, for tests of a
race no test can time: another node making a name between the kernel's LOOKUP (absent) and its
CREATE. The first N lookups of a raced name answer ENOENT although the warm tier holds it;
every lookup and create of the names watched is logged, so a test can show the race was taken.

    RACE=name:N[,...] RACE_LOG=FILE RACE_WARM=DIR [RACE_GONE=names] [RACE_GONE_FOUND=names] \
        python tests/racing_lookup.py MOUNTPOINT [tierfs mount options]

RACE_GONE: names removed from the warm tier (as by another node) once their create answered
ESTALE, before the kernel's retry; RACE_GONE_FOUND: removed once a lookup found them, before
the kernel's open.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from typing import Any

from tierfs.cli import main
from tierfs.vfs import namespace, openfiles

LOG = os.environ["RACE_LOG"]
RACES = {os.fsencode(k): int(v) for k, v in
         (p.split(":") for p in os.environ.get("RACE", "").split(",") if p)}
GONE_AFTER_ESTALE = {os.fsencode(n) for n in os.environ.get("RACE_GONE", "").split(",") if n}
GONE_AFTER_FOUND = {os.fsencode(n) for n in os.environ.get("RACE_GONE_FOUND", "").split(",")
                    if n}
WARM = os.fsencode(os.environ["RACE_WARM"])

_lookup = namespace.Namespace.lookup
_create = openfiles.OpenFiles.create


def log(*words: object) -> None:
    with open(LOG, "a") as f:
        f.write(" ".join(w.decode() if isinstance(w, bytes) else str(w) for w in words) + "\n")


def warm_paths(name: bytes) -> Iterator[bytes]:
    for top, dirs, files in os.walk(WARM):
        if name in files or name in dirs or os.path.islink(os.path.join(top, name)):
            yield os.path.join(top, name)


def remove(name: bytes) -> None:
    """Another node removes the name."""
    for p in warm_paths(name):
        os.unlink(p)
        log("removed", name)


async def lookup(self: namespace.Namespace, parent: int, name: bytes) -> Any:
    if RACES.get(name, 0) > 0:
        RACES[name] -= 1
        log("lookup", name, "ENOENT-raced")
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
    try:
        found = await _lookup(self, parent, name)
    except OSError as e:
        if name in RACES:
            log("lookup", name, errno.errorcode[e.errno])
        raise
    if name in RACES:
        log("lookup", name, "found")
        if name in GONE_AFTER_FOUND:
            GONE_AFTER_FOUND.discard(name)
            remove(name)  # before the kernel's open
    return found


async def create(self: openfiles.OpenFiles, parent: int, name: bytes, mode: int, flags: int,
                 uid: int, gid: int) -> Any:
    try:
        made = await _create(self, parent, name, mode, flags, uid, gid)
    except OSError as e:
        log("create", name, errno.errorcode[e.errno])
        if e.errno == errno.ESTALE and name in GONE_AFTER_ESTALE:
            GONE_AFTER_ESTALE.discard(name)
            remove(name)  # before the kernel's retry
        raise
    log("create", name, "ok")
    return made


if __name__ == "__main__":
    namespace.Namespace.lookup = lookup  # type: ignore[method-assign]
    openfiles.OpenFiles.create = create  # type: ignore[method-assign]
    sys.argv = ["tierfs", "mount", "--foreground", *sys.argv[1:]]
    main()
