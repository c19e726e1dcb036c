"""Open-file state: what every handle on one regular file shares, as an explicit state machine.

One ``OpenFile`` per inode while any handle (or a write-back, or a truncate by path) holds it,
so several handles see one content. Until the first write it reads the warm file through a
descriptor opened at ``open`` (which keeps an unlinked file's data readable), or a cold file's
object. The first write copies the data into a staging file on the hot tier; from then on
reads and writes use staging, and publishing puts staging back on the warm tier (or completes
its upload to the bucket).

The life of the data is ``DataState``; the moves allowed between states are ``TRANSITIONS``,
in one table, and ``OpenFile.to`` refuses any other (``IllegalTransition``: a bug, raised in
tests as anywhere). The descriptors, upload and sizes that go with a state are checked as the
state is entered, so a state that contradicts them cannot be written.
"""

from __future__ import annotations

import dataclasses
import enum
import os

import trio

from tierfs.cache.reader import CachedReader
from tierfs.stubs import Stub
from tierfs.transfer.mirror import Mirror
from tierfs.transfer.streaming import StreamingUpload


class DataState(enum.Enum):
    #: Nothing staged: reads go to the warm file or the object.
    CLEAN = "clean"
    #: Staged, and what is staged is also home (copied in, or published by copy): a writer can
    #: go on in staging, but there is nothing to publish.
    STAGED = "staged"
    #: Staged changes that are not home yet.
    DIRTY = "dirty"
    #: Staged changes on their way to the bucket in a multipart upload.
    STREAMING = "streaming"
    #: A publish is under way (it holds the file's lock).
    PUBLISHING = "publishing"
    #: The last publish failed; the staged data (and upload, if any) stay for another try.
    FAILED = "failed"
    #: Let go: no handle or write-back holds the state any more. It never comes back.
    RETIRED = "retired"


S = DataState
#: The only moves between states.
TRANSITIONS: dict[DataState, frozenset[DataState]] = {
    S.CLEAN: frozenset({S.STAGED, S.RETIRED}),
    # STREAMING: a change to a file whose upload goes on though nothing is to be published
    # (unlinked while it streamed), or a resumed upload (recovery).
    S.STAGED: frozenset({S.DIRTY, S.STREAMING, S.RETIRED}),
    S.DIRTY: frozenset({S.STREAMING, S.PUBLISHING, S.RETIRED}),
    S.STREAMING: frozenset({S.DIRTY, S.PUBLISHING, S.CLEAN, S.RETIRED}),
    # CLEAN: renamed into place, or completed in the bucket (nothing staged any more);
    # STAGED: copied home, or unlinked (nothing to publish); FAILED: the publish failed.
    S.PUBLISHING: frozenset({S.CLEAN, S.STAGED, S.FAILED}),
    S.FAILED: frozenset({S.DIRTY, S.STREAMING, S.PUBLISHING, S.RETIRED}),
    S.RETIRED: frozenset(),
}
#: States in which staged data is not home yet.
UNPUBLISHED = frozenset({S.DIRTY, S.STREAMING, S.PUBLISHING, S.FAILED})


class IllegalTransition(AssertionError):
    """A move the state machine does not allow, or a state entered with data that contradicts
    it: a bug in tierfs."""


#: What names one version of a warm file's content: (inode, size, mtime, ctime).
WarmId = tuple[int, int, int, int]


def warm_id(st: os.stat_result) -> WarmId:
    """A warm file's version, as far as its attributes tell. Inode, size and mtime alone are
    not enough: a file replaced by another node keeps them all when the new file reuses the
    freed inode number and its mtime is set to the old one's (``tar``, ``rsync -t``,
    ``cp -p``). The ctime cannot be set, and a new file's is the time it was made."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class HeldFd:
    """A descriptor a reader's fetches use from worker threads, closed only once none does
    (``users``) and its reader is done with it (``dropped``): a fetch given a number another
    task has closed reads whatever file was opened next with it, and a file system that hands
    a freed inode number to the next file made (ext4) gives a check after the read nothing
    to tell."""

    def __init__(self, fd: int, version: WarmId | None) -> None:
        self.fd = fd
        #: The warm file's version (``warm_id``) it was made for.
        self.version = version
        self.users = 0
        self.dropped = False

    def idle_after_drop(self) -> bool:
        """Whether it is to be closed now: dropped, and no fetch using it."""
        return self.dropped and self.users == 0


@dataclasses.dataclass(eq=False)
class OpenFile:
    #: Where the file's data is in its life (see ``TRANSITIONS``); changed by ``to`` only.
    state: DataState = DataState.CLEAN
    #: Read-only descriptor of the warm file as it was at open (None for a cold file).
    warm_fd: int | None = None
    #: A cold file's stub as of open: reads go to its object until the file is staged.
    stub: Stub | None = None
    #: The warm file's version (``warm_id``) as opened: names its cached blocks.
    warm_id: WarmId | None = None
    #: Opened from attributes read within ``attr_timeout`` (``Inode.seen``) without opening
    #: the warm file: ``warm_fd`` is opened by the first call that needs it
    #: (``Core.open_warm``: a read that reaches the daemon, a writer, an unlink of the name).
    #: With the kernel keeping its cached pages, a file read again never needs it. Set too
    #: after a publish by copy (``Publisher._copied_home``): the file opened was replaced.
    warm_deferred: bool = False
    #: An open of this deferred state let the kernel keep its cached pages of the version it
    #: was opened for: bytes of that version may be read from them (``Core.open_warm``).
    kept_pages: bool = False
    #: Set while ``Core.open_warm`` opens the warm file (other callers wait for it).
    warm_opening: trio.Event | None = None
    #: Set while a cold publish has put the new file at the name and not yet rekeyed the
    #: inode to it (``ColdPublisher.publish``): attribute changes wait for it.
    swapping: trio.Event | None = None
    #: Reads through the block cache (created at the first read of an unstaged file).
    reader: CachedReader | None = None
    #: The warm reader's own descriptor of the file (``vfs.reads``), apart from ``warm_fd``.
    reader_fd: HeldFd | None = None
    #: The object this file's stub pointed to before it was rewritten here; deleted once the
    #: new content is published, since nothing refers to it any more.
    replaces_object: str | None = None
    #: The ETag of that object's version, when known (not after a crash): a delete that
    #: fails is then owed, and tried again (``core.garbage``).
    replaces_etag: str | None = None
    #: Staged whole from its object (a cold file opened without ``O_TRUNC``): while a writer
    #: changes it, it does not stream (``Placement.streams``, ``rewriting``).
    rewrite: bool = False
    #: The multipart upload of a file being written past the large-file threshold.
    upload: StreamingUpload | None = None
    #: Sync mode: the warm temp file this file's next publish renames into place, filled
    #: while the writer writes.
    mirror: Mirror | None = None
    #: Sync mode, publishing by rename: staging[:flushed_ahead] has had its write to disk
    #: started (``mirror.write_and_start_writeback``).
    flushed_ahead: int = 0
    #: Write-back: the bucket refused to start an upload; streaming waits until then
    #: (time.monotonic()).
    route_after: float = 0.0
    #: Bytes written contiguously from the start (what streaming may cut parts from).
    written: int = 0
    #: Open handles that may write; the last one's close completes a streaming upload.
    writers: int = 0
    #: The tier a config path rule pins the file to ("warm", "cold", "" for none); decided
    #: when writing starts, from the path it had then.
    rule: str | None = None
    staging_id: str | None = None
    staging_fd: int | None = None
    #: Times the file was staged: a read that waited for a block can tell that this node
    #: changed the file meanwhile (``Reads.read``), even once that change is published.
    stagings: int = 0
    #: The warm file's attributes as of open, publish or setattr: while a file is open its
    #: attributes are answered from memory (close-to-open consistency, as NFS gives), because
    #: the kernel asks for them before every write.
    base: os.stat_result | None = None
    #: The last name this mount knew of the file went (unlink, rename over it) while the
    #: warm file had other names, hard links made elsewhere: its staged data is not lost with
    #: the name but published in place through ``warm_fd`` (``WarmPublisher.publish_unnamed``).
    linked_elsewhere: bool = False
    #: The last name of this cold file went through the mount and held this stub alone: its
    #: object goes at the last close (``Namespace._drop_unreferenced``).
    drop_object: Stub | None = None
    #: The warm file was created, empty, by this open and nothing has been published since:
    #: staging needs no copy of it. Cleared by the first publish (``Publisher.publish``).
    created: bool = False
    #: Logical size and times while staged; tracked here so writes need no fstat.
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    #: A write-back publish failed: reported once by the next close (or fsync) of the file.
    error: OSError | None = None
    #: An O_DIRECT write bypassed the kernel's page cache, so cached pages may be stale.
    direct_written: bool = False
    #: Published by copy with warm caching on: the warm file's version (``warm_id``) that
    #: staging holds byte for byte, kept as its cached blocks when the state is retired
    #: (``write/keephot.py``). Any move but to STAGED forgets it (``to``).
    published_as: WarmId | None = None
    handles: int = 0
    #: Serialises writes, truncation and publishing of this file (never held by reads).
    lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)

    def to(self, new: DataState) -> None:
        """Move to ``new``, if the table allows it and the file's data fits that state."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"open file: {self.state.value} -> {new.value}")
        staged = self.staging_fd is not None
        if new in (S.STAGED, S.DIRTY, S.STREAMING) and not staged:
            raise IllegalTransition(f"open file: {new.value} with nothing staged")
        if new is S.STREAMING and self.upload is None:
            raise IllegalTransition("open file: streaming without an upload")
        if new is S.DIRTY and self.upload is not None:
            raise IllegalTransition("open file: dirty with an upload (that is streaming)")
        if new is S.CLEAN and (staged or self.upload is not None):
            raise IllegalTransition("open file: clean with data staged or an upload")
        if new is not S.STAGED:  # staging changes, goes, or is being published again
            self.published_as = None
        self.state = new

    def changed(self) -> None:
        """Staged data was changed: it is not home (any more)."""
        if self.state in (S.DIRTY, S.STREAMING):
            return
        self.to(S.STREAMING if self.upload is not None else S.DIRTY)

    def streaming(self) -> None:
        """An upload was started for the changes (while they are written, or at a publish)."""
        if self.state is S.DIRTY:
            self.to(S.STREAMING)

    @property
    def dirty(self) -> bool:
        """Staged data that is not home yet."""
        return self.state in UNPUBLISHED

    @property
    def staged(self) -> bool:
        return self.staging_fd is not None

    def close_fds(self) -> None:
        for fd in (self.warm_fd, self.staging_fd):
            if fd is not None:
                os.close(fd)
        self.warm_fd = self.staging_fd = None
