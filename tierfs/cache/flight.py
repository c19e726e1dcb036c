"""One load of a block, shared by the readers that want it meanwhile (``BlockCache.get``
and ``fill``)."""

from __future__ import annotations

import dataclasses
import errno
import mmap
import os

import trio

#: A block's bytes: read from a source, or from the hot tier into a reused buffer.
Block = bytes | mmap.mmap


@dataclasses.dataclass(eq=False)
class Flight:
    """One load of a block, shared by every reader that wants it meanwhile."""

    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    data: Block | None = None
    origin: str = "hot"
    #: Why the load failed. The readers that shared it get the same answer rather than each
    #: trying again in turn: with the bucket down, every one of them would otherwise wait
    #: through a full round of retries after the one before it.
    error: Exception | None = None


def shared_error(error: Exception) -> OSError:
    """A failed load's error for one of the readers that shared it (each gets its own
    exception object: one raised in several tasks would share a traceback), of the same
    class: a reader may tell one from another (``vfs.reads.VersionChanged``: read again)."""
    if isinstance(error, OSError) and error.errno is not None:
        text = error.strerror or os.strerror(error.errno)
        try:
            return type(error)(error.errno, text)
        except TypeError:  # (a class made otherwise)
            return OSError(error.errno, text)
    return OSError(errno.EIO, f"loading the block failed: {error!r}")
