"""What every tier shares: blocking calls go to that tier's own worker threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tierfs.tiers.workers import Workers

T = TypeVar("T")


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
