"""The warm tree seen whole: how many bytes of plain files it holds, and which large ones
were used least recently. Read by a walk in a warm-tier thread, for the warm quota
(``write.demote``), ``tierfs scan`` and ``tierfs doctor``.

The warm tree is shared and anyone may write to it, so what the walk reads there (names,
sizes, times, how many files) is untrusted input: the walk runs in a worker thread, follows
no symbolic link (nor enters a directory that was swapped for one since it was listed), and
hands back a bounded answer (totals, and at most ``keep`` files), so
nothing on the event loop costs in proportion to what it found. Stubs count for nothing
(their data is in the bucket), and tierfs's own temp files are left out. Usage is the
space files take (allocated blocks, a hard-linked file once): counted by apparent size, a
sparse file of another user's, or one file under many names, would make the quota demote
the mount owner's files to free space nobody uses. For the same reason the quota is offered
only files it may demote that are not sparse (``Offer``): a sparse file's demotion uploads
its holes as zeros and frees little.

"Least recently used" is the later of a file's access and modification times on the warm
tier: reads served from the hot tier's cache do not reach the warm file, and NFS servers
mounted with ``relatime`` or ``noatime`` update access times seldom or never, so this is
an estimate, at worst "least recently written".
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import os
import stat
from collections.abc import Callable

from tierfs.tiers.scan import is_internal, is_silly_renamed
from tierfs.tiers.beneath import ROOT, join, open_file
from tierfs.tiers.warm import WarmTier

#: Files a walk hands back at most (the oldest large ones).
KEEP = 1000


@dataclasses.dataclass(frozen=True)
class Found:
    """A large plain file on the warm tier."""

    rel: bytes
    size: int
    #: The later of its access and modification times (nanoseconds).
    used_ns: int
    #: The space it takes (allocated blocks): what demoting it frees.
    space: int = 0

    @property
    def cursor(self) -> tuple[int, bytes]:
        """Where the next page of a walk starts (``walk``'s ``after``)."""
        return self.used_ns, self.rel


@dataclasses.dataclass(frozen=True)
class Offer:
    """Which large files the quota is offered: at least ``min_space`` allocated, not sparse,
    and with ``owner``, that user's alone (a mount not run as root may demote no other's: the
    places of a bounded answer must not go to files it would refuse). A file taking less than
    half its size is looked at for holes (``SEEK_HOLE``): a compressing file system (ZFS,
    btrfs) allocates less than the size too, and such a file is offered. Only a file that
    would make the cut is opened for it (``_offer``'s ``check``)."""

    min_space: int
    owner: int | None = None

    def may_take(self, st: os.stat_result) -> bool:
        """What the attributes alone say."""
        return (st.st_blocks * 512 >= self.min_space
                and (self.owner is None or st.st_uid == self.owner))

    @staticmethod
    def dense(dfd: int, name: bytes, st: os.stat_result) -> bool:
        """Not sparse (looked at only where the attributes leave it open)."""
        return 2 * st.st_blocks * 512 >= st.st_size or not _has_hole(dfd, name, st.st_size)


def _has_hole(dfd: int, name: bytes, size: int) -> bool:
    """Whether the file has a hole before its end (a file system without ``SEEK_HOLE``
    reports none); True if it cannot be looked at (then it is not offered)."""
    try:
        fd = open_file(dfd, name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return True
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) < size
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclasses.dataclass
class Walk:
    #: Plain files and the space they take: the warm tier's usage through tierfs.
    files: int = 0
    bytes: int = 0
    #: Plain files of at least the size asked for, and their bytes.
    large: int = 0
    large_bytes: int = 0
    #: The least recently used of them, oldest first (at most ``keep``).
    oldest: list[Found] = dataclasses.field(default_factory=list)
    #: Of those, how many could be offered (not hard-linked, past ``after``; with an
    #: ``Offer``, those it may take, a sparse one counted unless it made the cut): ``oldest``
    #: holds the first ``keep``.
    offered: int = 0
    #: Directories that could not be read.
    unreadable: int = 0


def walk(warm: WarmTier, min_size: int, root: bytes = ROOT, keep: int | None = None,
         links: bool = False, after: tuple[int, bytes] | None = None,
         offer: Offer | None = None) -> Walk:
    """Walk the warm tree under ``root`` (blocking: a warm-tier thread). Hard-linked files
    are counted but never offered (a stub cannot stand for one of several names). With
    ``links``, the symbolic links (stubs, perhaps: ``tierfs promote`` of a directory) are
    offered instead of the large files, and counted as ``large``. ``after`` pages through a
    tree larger than ``keep``: only files past it (the last file of the page before,
    ``Found.cursor``) are offered, so that files refused on one page (their times
    unchanged) are not the oldest again on the next. ``offer``: those of the large files
    offered (the quota's)."""
    keep = KEEP if keep is None else keep
    out = Walk()
    heap: list[tuple[int, bytes, int, int]] = []  # (-used_ns, rel, size, space): newest on top
    linked: set[tuple[int, int]] = set()  # (hard-linked files already counted)
    # Each directory with the identity it had when listed: one swapped for a symbolic link
    # to elsewhere since (a directory on its path, say) is not entered.
    pending: list[tuple[bytes, tuple[int, int] | None]] = [(root, None)]
    while pending:
        here, seen_as = pending.pop()
        try:
            dfd = warm.open_dir(here)
        except OSError:
            out.unreadable += 1
            continue
        try:
            st = os.fstat(dfd)
            if seen_as is not None and (st.st_dev, st.st_ino) != seen_as:
                out.unreadable += 1
                continue
            with os.scandir(dfd) as it:
                for entry in it:
                    name = os.fsencode(entry.name)
                    if is_internal(name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # (removed while we walked)
                    rel = join(here, name)
                    if stat.S_ISDIR(st.st_mode):
                        pending.append((rel, (st.st_dev, st.st_ino)))
                    elif stat.S_ISREG(st.st_mode):
                        if st.st_nlink > 1:
                            if (st.st_dev, st.st_ino) in linked:
                                continue
                            linked.add((st.st_dev, st.st_ino))
                        out.files += 1
                        out.bytes += st.st_blocks * 512
                        # (A client's silly-renamed file is open somewhere, unlinked,
                        # and goes at its last close: its space counts, it is not moved.)
                        if (not links and st.st_size >= min_size
                                and not is_silly_renamed(name)
                                and (offer is None or offer.may_take(st))):
                            _offer(out, heap, rel, st, keep, after,
                                   None if offer is None else functools.partial(
                                       offer.dense, dfd, name, st))
                    elif links and stat.S_ISLNK(st.st_mode):
                        _offer(out, heap, rel, st, keep, after)
        except OSError:
            out.unreadable += 1
        finally:
            os.close(dfd)
    out.oldest = [Found(rel, size, -neg, space)
                  for neg, rel, size, space in sorted(heap, reverse=True)]
    return out


def _offer(out: Walk, heap: list[tuple[int, bytes, int, int]], rel: bytes, st: os.stat_result,
           keep: int, after: tuple[int, bytes] | None,
           check: Callable[[], bool] | None = None) -> None:
    """Count a large file and keep it among the ``keep`` oldest offered, if it makes the cut
    and ``check`` (called only then) passes."""
    out.large += 1
    out.large_bytes += st.st_size
    if st.st_nlink != 1:
        return
    used = max(st.st_atime_ns, st.st_mtime_ns)
    # (Page order is the order of ``oldest``: used first, then the path from last to first.)
    if after is not None and (used < after[0] or (used == after[0] and rel >= after[1])):
        return
    item = (-used, rel, st.st_size, st.st_blocks * 512)
    makes_it = len(heap) < keep or (bool(heap) and item > heap[0])  # (older than the newest)
    if makes_it and check is not None and not check():
        return
    out.offered += 1
    if not makes_it:
        return
    if len(heap) < keep:
        heapq.heappush(heap, item)
    else:
        heapq.heapreplace(heap, item)
