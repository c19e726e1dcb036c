"""What every tier shares: blocking calls go to worker threads under that tier's own limiter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class Tier:
    """A store whose calls block; ``run`` is the only way the event loop reaches it.

    One CapacityLimiter per tier: NFS servers limit connections, local disks do not, and a
    slow tier must not take every worker thread from a fast one.
    """

    name = "tier"

    def __init__(self, threads: int) -> None:
        self.limiter = trio.CapacityLimiter(threads)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
