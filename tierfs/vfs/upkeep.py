"""What a mount does beside serving requests: commit the index batch every second (with the
cache's entries and the counters), keep the counters' history for throughput figures, host
background tasks in one nursery (and long-running jobs such as the warm quota), and answer
health checks of the tiers."""

from __future__ import annotations

import collections
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from tierfs.cache import counters as counter_names
from tierfs.core.context import Core
from tierfs.index import FLUSH_INTERVAL
from tierfs.objects.base import ObjectStoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a tier may take to answer a health check.
HEALTH_TIMEOUT = 10.0
#: A call to a tier unanswered for this many seconds may be a stall (an NFS server that
#: stopped answering) or one long call (a large copy): the health check's own probe then
#: gets STALLED_PROBE_TIMEOUT seconds to tell them apart, so a stall is named promptly.
STALLED_AFTER = 2.0
STALLED_PROBE_TIMEOUT = 1.0


class Probes:
    """Looks at tiers that may be stalled (a health check's statvfs, the stats' disk
    figures), each in a thread of its own, not one of the tier's, which may all be waiting
    for a stalled server: a look must not queue behind them.

    A look that hangs is given up and its thread abandoned, still waiting for the server.
    trio's threads for such calls are shared with everything else the mount runs in a
    thread (forty at most), so each thing looked at gets a limiter of one: a look asked
    while the last one still hangs waits for it, up to its timeout, instead of abandoning
    one more thread each time until none is left for anything."""

    def __init__(self) -> None:
        self._limiters: dict[str, trio.CapacityLimiter] = {}

    async def run(self, what: str, timeout: float, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``, given up (``trio.TooSlowError``) after ``timeout``; ``what``
        names the thing looked at (one look at a time each)."""
        limiter = self._limiters.setdefault(what, trio.CapacityLimiter(1))
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(functools.partial(fn, *args),
                                                 abandon_on_cancel=True, limiter=limiter)


class Upkeep:
    def __init__(self, core: Core) -> None:
        self.core = core
        #: (monotonic time, counters) once per flush interval, for throughput figures.
        self.history: collections.deque[tuple[float, dict[str, int]]] = \
            collections.deque(maxlen=11)
        #: Long-running background jobs started in the nursery (the warm quota).
        self.jobs: list[Callable[[], Awaitable[None]]] = []
        self.probes = Probes()

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

    def start(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run a long-running job beside the others, from now if they run already."""
        if self.core.nursery is None:
            self.jobs.append(job)
        else:
            self.core.nursery.start_soon(job)

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
            waiting, age = tier.workers.busy, tier.workers.oldest_call_age()
            calls = {"calls_in_flight": waiting, "oldest_call_seconds": round(age, 3)}
            timeout = STALLED_PROBE_TIMEOUT if age > STALLED_AFTER else HEALTH_TIMEOUT
            try:
                st = await self.probes.run(name, timeout, os.statvfs, path)
                writable = await self.probes.run(name, timeout, os.access, path, os.W_OK)
                out[name] = {"ok": writable, "free": st.f_bavail * st.f_frsize, **calls,
                             "detail": "ok" if writable else "not writable"}
            except trio.TooSlowError:
                detail = (f"stalled: a call unanswered for {age:.1f} s ({waiting} in flight "
                          f"or queued)" if age > STALLED_AFTER
                          else f"unreachable: no answer in {timeout:.0f} s")
                out[name] = {"ok": False, "free": None, **calls, "detail": detail}
            except OSError as e:
                out[name] = {"ok": False, "free": None, **calls,
                             "detail": f"unreachable: {e!r}"}
        try:
            with trio.fail_after(HEALTH_TIMEOUT):
                await core.cold.run(core.cold.store.check)
            out["cold"] = {"ok": True, "free": None, "detail": "ok"}
        except (ObjectStoreError, OSError, trio.TooSlowError) as e:
            out["cold"] = {"ok": False, "free": None, "detail": str(e) or "timed out"}
        return out
