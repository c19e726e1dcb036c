"""Write-back: files closed with their data still staged, published in the background.

A write-back close returns once the journal says the file is closed (a group commit); the
last release hands the file to a task here, which publishes it, retrying with growing pauses,
and only then retires its state. The inode stays in the table (an extra reference) until its
data is home, so every later open on this node finds the staged content. Unmount and
``tierfs flush`` publish what is left.

A background publish gives way to foreground work, as a write-back cache's should: over a
network warm tier the copy of one file would otherwise share the connection with the next
file's create, and a save of many files would wait behind its own publishing. So a closed
file's publish starts once the mount has had no create, write or close for ``QUIET`` seconds,
or once the file has waited ``MAX_WAIT`` seconds and no other file that waited as long is being
published (while the mount stays busy they go one at a time, oldest first: each publish by copy
over a network tier makes several times the requests of a create), or at once while the bytes
of files waiting exceed ``MAX_HELD`` (the oldest go first). This is the one place that decides
it; ``tierfs flush``, unmount, an open for writing or a truncate of a waiting file (which
publish it themselves) and recovery (which publishes without this class) never wait here.
"""

from __future__ import annotations

import logging
import math

import trio

from tierfs.core.context import Core
from tierfs.core.inodes import Inode
from tierfs.core.openfile import OpenFile
from tierfs.write.journal import Journal
from tierfs.write.publish import Publisher
from tierfs.write.staging import Staging

log = logging.getLogger(__name__)

#: Longest wait between two tries of a failing write-back publish.
WRITEBACK_MAX_DELAY = 15.0
#: Seconds without a create, write or close on the mount before background publishing starts.
QUIET = 0.25
#: Longest a closed file waits for a quiet moment before its publish starts all the same.
MAX_WAIT = 2.0
#: Bytes of closed files waiting to start their publish beyond which the oldest start at once
#: (staged data takes hot disk, and all of it must go home at some point).
MAX_HELD = 256 * 1024 * 1024


class WriteBack:
    def __init__(self, core: Core, journal: Journal, publisher: Publisher,
                 staging: Staging) -> None:
        self.core = core
        self.journal = journal
        self.publisher = publisher
        self.staging = staging
        #: Files closed but not yet home, each with the task publishing it.
        self.files: dict[int, tuple[Inode, OpenFile]] = {}
        #: Files a release is publishing in the caller's task (sync mode, after a close
        #: that failed): not home either, and ``tierfs flush`` must not say otherwise.
        self.releasing: dict[int, tuple[Inode, OpenFile]] = {}
        # The policy above, per instance so that a test can shorten it.
        self.quiet, self.max_wait, self.max_held = QUIET, MAX_WAIT, MAX_HELD
        #: When the mount last had a create, write or close (trio's clock).
        self.last_busy = float("-inf")
        #: Files waiting for their turn, oldest first: inode number -> bytes; and their sum.
        self.waiting: dict[int, int] = {}
        self.held = 0
        #: Calls that want every waiting file to go now (``publish_all``).
        self.urgent = 0
        #: What each waiting file waits on, by inode number (set to wake it).
        self._bells: dict[int, trio.Event] = {}
        #: The one file whose publish started past its longest wait while the mount was
        #: busy, until that publish ends (the next such file waits for it).
        self._overdue: int | None = None
        #: Whether ``_quiet_watch`` runs.
        self._watching = False

    def holds(self, inode: Inode) -> bool:
        return inode.ino in self.files

    def acknowledged(self, inode: Inode, data: OpenFile) -> bool:
        """Whether the file's staged data is what a write-back close acknowledged, not home
        yet: to be published before anything changes it (a write after it would otherwise
        take back the journal's "closed", and a crash would lose both). From the close's
        flush on, before its release too; not once a writer has written again: what is staged
        then is that writer's, half-written until its close. In sync mode too for a file held
        here (a close's or recovery's publish failed): its data was promised all the same."""
        entry = self.journal.entry_of(data)
        return ((self.core.config.durability == "writeback" or self.holds(inode))
                and data.dirty and entry is not None and entry.closed)

    def poke(self, inode: Inode) -> None:
        """The file changed hands (opened for writing, published by another call): its
        waiting task, if any, looks again now rather than at its turn."""
        self._ring(inode.ino)

    def _ring(self, ino: int) -> None:
        bell = self._bells.get(ino)
        if bell is not None:
            bell.set()

    def busy(self) -> None:
        """Foreground work on the mount (a create, write or close): background publishes not
        started yet wait for it to pause. One clock read: called on every write."""
        self.last_busy = trio.current_time()

    def start(self, inode: Inode, data: OpenFile) -> None:
        """Publish a closed file in the background, retrying until it is home."""
        core = self.core
        if inode.ino in self.files or core.nursery is None:
            return
        self.files[inode.ino] = (inode, data)
        core.inodes.opened(inode)  # the inode stays known until its data is home
        core.nursery.start_soon(self._run, inode, data, trio.current_time())

    def _hurry(self) -> None:
        """Wake every waiting file to look again at whether its turn has come."""
        for bell in self._bells.values():
            bell.set()

    async def _turn(self, inode: Inode, data: OpenFile, since: float) -> bool:
        """Wait until this file's publish may start (the rule in the module's docstring);
        at once if it is home already (published by another call), gone, or open for writing
        again (the open published it; the new writes are that writer's, handed back here by
        its last close: never published half-done in the meantime). True if it starts as the
        one file published while the mount is busy (``_overdue``): the caller gives the turn
        on when its publish ends."""
        ino = inode.ino
        self.waiting[ino] = size = data.size
        self.held += size
        if self.held > self.max_held:
            self._hurry()  # the oldest goes
        self._watch_quiet()
        try:
            while data.dirty and self.core.has_home(inode) and not data.writers and not self.urgent:
                now = trio.current_time()
                if (now >= self.last_busy + self.quiet
                        or (self.held > self.max_held and next(iter(self.waiting)) == ino)):
                    return False
                due = now >= since + self.max_wait
                if due and self._overdue is None and next(iter(self.waiting)) == ino:
                    self._overdue = ino
                    return True
                # Woken by its own deadline, by ``_hurry`` (a quiet moment, a bound passed, a
                # call that wants every file now) or, once due, when the turn of the files
                # past their wait comes to it: never by each create or write, nor all of
                # them by each publish (a save of many files keeps as many waiting).
                bell = self._bells[ino] = trio.Event()
                with trio.move_on_at(math.inf if due else since + self.max_wait):
                    await bell.wait()
        finally:
            del self.waiting[ino]
            self._bells.pop(ino, None)
            self.held -= size
            if self.held > self.max_held:
                self._hurry()  # the next oldest goes
            elif self._overdue is None:
                self._ring_first()  # (the file after it may be due)
        return False

    def _ring_first(self) -> None:
        """Wake the oldest waiting file: the one whose turn comes next while the mount is
        busy."""
        if self.waiting:
            self._ring(next(iter(self.waiting)))

    def _watch_quiet(self) -> None:
        """Start the one task that watches for a quiet moment, unless it runs."""
        if not self._watching and self.core.nursery is not None:
            self._watching = True
            self.core.nursery.start_soon(self._quiet_watch)

    async def _quiet_watch(self) -> None:
        """Wake the waiting files when the mount has been quiet for ``quiet`` seconds; one
        timer for all of them (each file's own would fire every ``quiet`` seconds while the
        mount is busy, a cost that grows with the files waiting)."""
        try:
            while self.waiting:
                at = self.last_busy + self.quiet
                if trio.current_time() < at:
                    await trio.sleep_until(at)
                    continue
                self._hurry()
                await trio.sleep(self.quiet)  # (they go; a busy moment meanwhile holds more)
        finally:
            self._watching = False

    async def _run(self, inode: Inode, data: OpenFile, since: float) -> None:
        delay = 1.0
        try:
            while data.dirty and self.core.has_home(inode):
                overdue = await self._turn(inode, data, since)
                failed = None
                try:
                    if not (data.dirty and self.core.has_home(inode)) or data.writers:
                        break
                    await self.publisher.publish(inode, data)
                    data.error = None
                except OSError as e:
                    failed = e
                finally:
                    if overdue:
                        self._overdue = None
                        self._ring_first()
                if failed is not None:
                    self.core.counters.add("upload_errors")
                    if self.core.config.durability == "writeback":
                        # Told by the file's next close or fsync. (In sync mode the close
                        # that handed it here said EIO already.)
                        data.error = failed
                    log.error("write-back of inode %d failed, retrying in %.0f s: %s",
                              inode.ino, delay, failed)
                    await self.journal.keep_staged(data)
                    await trio.sleep(delay)
                    delay = min(delay * 2, WRITEBACK_MAX_DELAY)
        finally:
            del self.files[inode.ino]
            try:
                if data.handles == 0 and inode.data is data:
                    # Under the file's lock: another caller's publish (an open for writing,
                    # a truncate, flush, unmount) may be under way, which this one stopped
                    # for (the name went meanwhile), and must end before the state goes.
                    # Shielded: at unmount the task is cancelled, and the retire must still
                    # run (a holder being cancelled lets go of the lock as it unwinds).
                    with trio.CancelScope(shield=True):
                        async with data.lock:
                            if (data.handles == 0 and inode.data is data
                                    and not self.holds(inode)):
                                await self.staging.retire(inode, data)
            finally:
                self.core.inodes.closed(inode)

    def pending(self) -> tuple[int, int]:
        """Files not yet home: (count, bytes). Also called from the Prometheus thread: list()
        copies the table in one step under the GIL."""
        dirty = [d for _, d in self._unpublished() if d.dirty]
        return len(dirty), sum(d.size for d in dirty)

    def _unpublished(self) -> list[tuple[Inode, OpenFile]]:
        """The files of ``files`` and of ``releasing``, each once."""
        both = {**self.releasing, **self.files}
        return list(both.values())

    async def publish_all(self) -> list[tuple[Inode, OSError]]:
        """Publish every file now (``tierfs flush``, unmount): what failed, after trying all.
        Files waiting for their turn go now too (their tasks then find them home, or publish
        them beside this loop), so that none is left to a quiet moment. A file opened for
        writing again is left out: its new writes are not acknowledged by any close yet, and
        unmount publishes open handles' data itself (``OpenFiles.publish_all``)."""
        failed: list[tuple[Inode, OSError]] = []
        self.urgent += 1
        self._hurry()
        try:
            for inode, data in self._unpublished():
                if data.writers:
                    continue  # open for writing again: its writer's close publishes it
                try:
                    await self.publisher.publish(inode, data)
                except OSError as e:
                    failed.append((inode, e))
        finally:
            self.urgent -= 1
        return failed
