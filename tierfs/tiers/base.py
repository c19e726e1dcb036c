"""What every tier shares: blocking calls go to that tier's own worker threads."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TypeVar

from tierfs.tiers.workers import Workers

T = TypeVar("T")


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``os.pwrite`` until all of ``data`` is written. A write can come back short (a disk
    filling part way), and a copy that took it for the whole would leave a hole that the
    file's final truncate fills with zeros. Nothing written at all is ENOSPC. Blocking."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[n:], offset + n


class Tier:
    """A store whose calls block; ``run`` is the only way the event loop reaches it.

    Each tier has its own threads, as many as its limit: NFS servers limit connections, local
    disks do not, and a slow tier must not take every worker thread from a fast one.
    """

    name = "tier"

    def __init__(self, threads: int) -> None:
        self.workers = Workers(self.name, threads)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await self.workers.run(fn, *args)
