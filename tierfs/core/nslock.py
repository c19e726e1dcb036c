"""The namespace lock: paths held still while a call on the warm tier uses one.

The warm tier is reached by path, and the path of a file is worked out on the event loop
before a worker thread uses it. A rename through the mount in between (one with
``RENAME_EXCHANGE`` swaps two files under their names) makes that path name another file:
an open would read the other file's bytes under this file's inode, a stat would give its
size, a truncate would cut it. The kernel does not prevent this: it serialises operations
inside one directory, not an open or a stat of a file against a rename of its name.

So the calls that change what a path names (renames, unlinks, and tierfs's own renames when
it publishes) hold this lock exclusively, and every other call that finds a file by its path
holds it shared, from working out the path until its worker call returns. Shared holders run
side by side (an NFS tier wants many requests in flight); an exclusive holder waits for them
to finish, and holders arriving after it wait for it (``trio.Lock`` is fair), so a stream of
stats cannot starve a rename. The task holding it exclusively may take it shared too: a
publish looks at the file's attributes in the middle of its rename step.
"""

from __future__ import annotations

from types import TracebackType

import trio


class NamespaceLock:
    """``async with lock``: exclusive; ``async with lock.shared()``: shared."""

    def __init__(self) -> None:
        self._gate = trio.Lock()
        self._readers = 0
        self._drained: trio.Event | None = None
        self._owner: trio.lowlevel.Task | None = None

    async def __aenter__(self) -> None:
        await self._gate.acquire()
        try:
            while self._readers:
                self._drained = trio.Event()
                await self._drained.wait()
        except BaseException:
            self._gate.release()
            raise
        finally:
            self._drained = None
        self._owner = trio.lowlevel.current_task()

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._owner = None
        self._gate.release()

    @property
    def quiet(self) -> bool:
        """No exclusive holder, and none waiting for the shared holders to drain."""
        return not self._gate.locked()

    def shared(self) -> _Shared:
        """``async with lock.shared()``: held shared for the block."""
        return _Shared(self)

    async def _enter_shared(self) -> bool:
        """Take the lock shared; False if this task already holds it exclusively."""
        if self._owner is trio.lowlevel.current_task():
            return False  # (already held exclusively by this task)
        if self._gate.locked():
            async with self._gate:  # behind an exclusive holder, or one waiting
                self._readers += 1
        else:
            # Nobody holds it exclusively or waits to (trio hands a released lock straight
            # to its next waiter, so a free gate has none): no need to pass through the gate,
            # which costs two trips through the scheduler on every lookup, open and stat.
            self._readers += 1
        return True

    def _exit_shared(self) -> None:
        self._readers -= 1
        if not self._readers and self._drained is not None:
            self._drained.set()


class _Shared:
    """One shared hold of a ``NamespaceLock`` (a class, not a generator-based context
    manager: it is entered on nearly every request)."""

    __slots__ = ("_lock", "_held")

    def __init__(self, lock: NamespaceLock) -> None:
        self._lock = lock
        self._held = False

    async def __aenter__(self) -> None:
        self._held = await self._lock._enter_shared()

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._held:
            self._lock._exit_shared()
