"""What a mount does beside serving requests: commit the index batch every second (with the
cache's entries and the counters), keep the counters' history for throughput figures, host
background tasks in one nursery (and long-running jobs such as the warm quota), and answer
health checks of the tiers."""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Awaitable, Callable

import trio

from tierfs.cache import counters as counter_names
from tierfs.core.context import Core
from tierfs.index import FLUSH_INTERVAL
from tierfs.objects.base import ObjectStoreError

log = logging.getLogger(__name__)

#: Seconds a tier may take to answer a health check.
HEALTH_TIMEOUT = 10.0


class Upkeep:
    def __init__(self, core: Core) -> None:
        self.core = core
        #: (monotonic time, counters) once per flush interval, for throughput figures.
        self.history: collections.deque[tuple[float, dict[str, int]]] = \
            collections.deque(maxlen=11)
        #: Long-running background jobs started in the nursery (the warm quota).
        self.jobs: list[Callable[[], Awaitable[None]]] = []

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Commit index batches every FLUSH_INTERVAL, and host streaming-upload, read-ahead
        and write-back tasks, until cancelled."""
        core = self.core
        async with trio.open_nursery() as nursery:
            core.nursery = nursery
            core.cache.bind(nursery)
            for job in self.jobs:
                nursery.start_soon(job)
            task_status.started()
            self.history.append((time.monotonic(), dict(core.counters.values)))
            while True:
                await trio.sleep(FLUSH_INTERVAL)
                self.history.append((time.monotonic(), dict(core.counters.values)))
                try:
                    await self.save_index()
                except OSError as e:  # a hot disk full of staged data, say
                    log.warning("committing the index failed, retrying in %.0f s: %s",
                                FLUSH_INTERVAL, e)
                except Exception:
                    log.exception("committing the index failed; retrying later")

    async def save_index(self) -> None:
        """Queue cache entries and counters into the batch, and commit it."""
        core = self.core
        core.cache.persist()
        if core.counters.changed:
            core.batch.put("meta", counter_names.KEY, core.counters.encode())
        await core.batch.flush(core.hot.run)

    async def health(self) -> dict[str, dict[str, object]]:
        """Each tier's state, checked now: reachable, writable, free space."""
        core = self.core
        out: dict[str, dict[str, object]] = {}
        for name, tier, path in (("hot", core.hot, core.config.hot),
                                 ("warm", core.warm, core.config.warm)):
            try:
                with trio.fail_after(HEALTH_TIMEOUT):
                    st = await tier.run(os.statvfs, path)
                writable = await tier.run(os.access, path, os.W_OK)
                out[name] = {"ok": writable, "free": st.f_bavail * st.f_frsize,
                             "detail": "ok" if writable else "not writable"}
            except (OSError, trio.TooSlowError) as e:
                out[name] = {"ok": False, "free": None, "detail": f"unreachable: {e!r}"}
        try:
            with trio.fail_after(HEALTH_TIMEOUT):
                await core.cold.run(core.cold.store.check)
            out["cold"] = {"ok": True, "free": None, "detail": "ok"}
        except (ObjectStoreError, OSError, trio.TooSlowError) as e:
            out["cold"] = {"ok": False, "free": None, "detail": str(e) or "timed out"}
        return out
