"""Open-file state: what every handle on one regular file shares, and the handles themselves.

One ``OpenFile`` per inode while any handle is open, so several handles see one content. Until
the first write it reads the warm file through a descriptor opened at ``open`` (which keeps an
unlinked file's data readable). The first write copies the warm data into a staging file on the
hot tier; from then on reads and writes use staging, and publishing copies staging back to the
warm tier under a temp name, fsyncs it and renames it into place.
"""

from __future__ import annotations

import dataclasses
import os

import trio

from tierfs.stubs import Stub
from tierfs.vfs.blockread import CachedReader
from tierfs.vfs.inodes import Inode
from tierfs.vfs.mirror import Mirror
from tierfs.vfs.streaming import StreamingUpload


#: What names one version of a warm file's content: (inode, size, mtime, ctime).
WarmId = tuple[int, int, int, int]


def warm_id(st: os.stat_result) -> WarmId:
    """A warm file's version, as far as its attributes tell. Inode, size and mtime alone are
    not enough: a file replaced by another node keeps them all when the new file reuses the
    freed inode number and its mtime is set to the old one's (``tar``, ``rsync -t``,
    ``cp -p``). The ctime cannot be set, and a new file's is the time it was made."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclasses.dataclass(eq=False)
class OpenFile:
    #: Read-only descriptor of the warm file as it was at open (None for a cold file).
    warm_fd: int | None = None
    #: A cold file's stub as of open: reads go to its object until the file is staged.
    stub: Stub | None = None
    #: The warm file's version (``warm_id``) as opened: names its cached blocks.
    warm_id: WarmId | None = None
    #: Reads through the block cache (created at the first read of an unstaged file).
    reader: CachedReader | None = None
    #: The object this file's stub pointed to before it was rewritten here; deleted once the
    #: new content is published, since nothing refers to it any more.
    replaces_object: str | None = None
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
    #: The warm file's attributes as of open, publish or setattr: while a file is open its
    #: attributes are answered from memory (close-to-open consistency, as NFS gives), because
    #: the kernel asks for them before every write.
    base: os.stat_result | None = None
    #: The warm file was created, empty, by this open: staging needs no copy of it.
    created: bool = False
    #: Logical size and times while staged; tracked here so writes need no fstat.
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    #: Staged data not yet published to the warm tier.
    dirty: bool = False
    #: A write-back publish failed: reported once by the next close (or fsync) of the file.
    error: OSError | None = None
    #: An O_DIRECT write bypassed the kernel's page cache, so cached pages may be stale.
    direct_written: bool = False
    handles: int = 0
    #: Serialises writes, truncation and publishing of this file (never held by reads).
    lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)

    @property
    def staged(self) -> bool:
        return self.staging_fd is not None

    def read_fd(self) -> int | None:
        return self.staging_fd if self.staging_fd is not None else self.warm_fd

    def close_fds(self) -> None:
        for fd in (self.warm_fd, self.staging_fd):
            if fd is not None:
                os.close(fd)
        self.warm_fd = self.staging_fd = None


@dataclasses.dataclass(eq=False)
class Handle:
    fh: int
    inode: Inode
    data: OpenFile
    writable: bool
    append: bool
    direct: bool
