"""Names of new files still being made on the warm tier after their create returned.

In write-back, a create that truncates (``open(path, "wb")``, ``torch.save``) in a directory
where a create just succeeded returns at once; its name is made on the warm tier by a
background task while the caller writes into staging (``OpenFiles.create``). Each create's
round trips to the tier (the name, its attributes, the directory's after it) are then taken
off the caller's path: a sharded checkpoint's creates overlap its writes.

What a user can tell apart from a create that named at once is kept out of reach:

- the file's own close (flush), fsync, read and release wait for its name, so another node
  sees the name once the close returns (close-to-open) and the journal never acknowledges
  data that has no name;
- every operation that reads or changes the namespace otherwise (listings, renames, unlinks,
  attribute changes) waits for the names pending when it came (``FileSystem``);
- a lookup of a pending name answers with its inode.

A name that cannot be made (the directory gone, the tier full) fails the file's closes and
fsyncs, which return that error, and the file loses its name as if another node had removed
it; an open of it finds it stale (the kernel looks the name up again).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
import stat
import time

import trio

from tierfs.core.attrs import BLOCK_SIZE
from tierfs.core.inodes import PENDING_DEVICE, Inode, stands_in

_numbers = itertools.count(1 << 62)


class NamingState(enum.Enum):
    #: The create returned; the name is being made on the warm tier.
    PENDING = "pending"
    #: The name is on the warm tier, and the inode keyed to the file there.
    NAMED = "named"
    #: The name could not be made: every close and fsync of a writer returns the error.
    FAILED = "failed"


@dataclasses.dataclass(eq=False)
class Naming:
    inode: Inode
    parent: int
    name: bytes
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    state: NamingState = NamingState.PENDING
    #: FAILED: why.
    error: OSError | None = None

    def end(self, state: NamingState, error: OSError | None = None) -> None:
        assert self.state is NamingState.PENDING and state is not NamingState.PENDING
        self.state, self.error = state, error
        self.done.set()


def stand_in(mode: int, uid: int, gid: int) -> os.stat_result:
    """Attributes for a file whose name is not made yet: empty, owned as the tier will make
    it, with an identity no warm file has."""
    now = time.time_ns()
    secs = now / 1e9
    whole = int(secs)
    return os.stat_result((stat.S_IFREG | stat.S_IMODE(mode), next(_numbers), PENDING_DEVICE,
                           1, uid, gid, 0, whole, whole, whole,  # (the tuple's fields)
                           secs, secs, secs, now, now, now, BLOCK_SIZE, 0, 0))


def never_named(inode: Inode) -> bool:
    """Whether an inode still has a stand-in's identity once its naming ended: its name
    could not be made."""
    return stands_in(inode.key)


class Namings:
    """The pending names of one root, by inode number and by (parent, name)."""

    def __init__(self) -> None:
        self._by_ino: dict[int, Naming] = {}
        self._by_name: dict[tuple[int, bytes], Naming] = {}
        #: Names that failed, by inode number, until their file is let go (``forget``).
        self._failed: dict[int, Naming] = {}

    def __len__(self) -> int:
        return len(self._by_ino)

    def add(self, naming: Naming) -> None:
        self._by_ino[naming.inode.ino] = naming
        self._by_name[(naming.parent, naming.name)] = naming

    def finish(self, naming: Naming, state: NamingState, error: OSError | None = None
               ) -> None:
        del self._by_ino[naming.inode.ino]
        del self._by_name[(naming.parent, naming.name)]
        if state is NamingState.FAILED:
            self._failed[naming.inode.ino] = naming
        naming.end(state, error)

    def child(self, parent: int, name: bytes) -> Inode | None:
        naming = self._by_name.get((parent, name))
        return None if naming is None else naming.inode

    def pending(self, inode: Inode) -> bool:
        return inode.ino in self._by_ino

    async def wait(self, inode: Inode) -> None:
        """Until this inode's name, if pending, is made or has failed."""
        naming = self._by_ino.get(inode.ino)
        if naming is not None:
            await naming.done.wait()

    def failure(self, inode: Inode) -> OSError | None:
        """The error of a name that failed: every close and fsync of a writer of the file
        hears it, until the file is let go (``forget``)."""
        naming = self._failed.get(inode.ino)
        return None if naming is None else naming.error

    def forget(self, inode: Inode) -> None:
        """The file is let go (its last handle released)."""
        self._failed.pop(inode.ino, None)

    async def settle(self) -> None:
        """Until every name pending now is made or has failed: a create that returned before
        the caller's request came. (Not those started meanwhile: saves going on would hold
        back every listing for as long as they last.)"""
        for naming in list(self._by_ino.values()):
            await naming.done.wait()
