"""Worker threads for one tier's blocking calls, fed through a queue.

Every disk, NFS or bucket call leaves the event loop for a thread, and a metadata-heavy FUSE
request makes one or two such calls, so the hand-off is on every request's path.
``trio.to_thread.run_sync`` spends about twice as long per hand-off as long-lived threads
taking jobs from a queue (about 90 against 45 microseconds per call measured on the 2-core
machine the benchmarks run on): it goes through a capacity limiter, a per-call thread cache
lookup and a context copy. A fixed number of threads per tier is itself the tier's limit, so
nothing else is needed to keep a slow tier from taking every thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], trio.lowlevel.TrioToken, trio.lowlevel.Task]


def _not_cancellable(_: Callable[[], object]) -> trio.lowlevel.Abort:
    # The call runs to its end, as with trio.to_thread.run_sync; a cancellation is delivered
    # at the caller's next checkpoint.
    return trio.lowlevel.Abort.FAILED


class Workers:
    """Up to ``size`` threads, started as calls need them and kept until ``close``."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        #: Calls handed over and not yet finished.
        self._pending = 0
        #: When each call now waiting was handed over, oldest first (dicts keep insertion
        #: order): a stalled tier shows as an old call, which health checks name without
        #: queueing behind it. Touched on the event loop only.
        self._since: dict[object, float] = {}

    @property
    def busy(self) -> int:
        """Calls running or waiting for a thread."""
        return self._pending

    def oldest_call_age(self) -> float:
        """Seconds since the oldest call not yet finished was handed over; 0 if none."""
        for since in self._since.values():
            return time.monotonic() - since
        return 0.0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in one of the threads; its result, or its exception raised here."""
        task = trio.lowlevel.current_task()
        job = (fn, args, trio.lowlevel.current_trio_token(), task)
        with self._lock:
            self._pending += 1
            if self._pending > len(self._threads) and len(self._threads) < self.size:
                self._start_thread()
        key = object()
        self._since[key] = time.monotonic()
        self._queue.put(job)
        try:
            result: T = await trio.lowlevel.wait_task_rescheduled(_not_cancellable)
        finally:
            del self._since[key]
        return result

    def _start_thread(self) -> None:
        """One more thread, under ``_lock``. If none can be started (the process is out of
        threads), the call waits for one already running: a call whose arguments own a
        descriptor (``reads._pread_own``) closes it only if it runs. With no thread at all
        it fails here, not counted as pending, so that ``busy`` and health checks see no call
        that is not there (such a descriptor then stays open: a tier that could never start
        a thread serves nothing anyway)."""
        thread = threading.Thread(target=self._work, daemon=True,
                                  name=f"tierfs-{self.name}-{len(self._threads)}")
        try:
            thread.start()
        except RuntimeError:
            if self._threads:
                return
            self._pending -= 1
            raise
        self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, args, token, task = job
            del job
            result = outcome.capture(fn, *args)
            del fn, args
            with self._lock:
                self._pending -= 1
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:
                pass  # the event loop is gone; nobody waits for this result
            # Nothing of the call outlives it in this thread while it waits for the next one:
            # a result held here would keep its memory (a block, a part) and, for a buffer
            # the block cache reuses, make it look still in use.
            del result, token, task

    def close(self) -> None:
        """Let the threads end once the calls queued before are done."""
        for _ in self._threads:
            self._queue.put(None)
