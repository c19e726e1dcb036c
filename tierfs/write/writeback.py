"""Write-back: files closed with their data still staged, published in the background.

A write-back close returns once the journal says the file is closed (a group commit); the
last release hands the file to a task here, which publishes it, retrying with growing pauses,
and only then retires its state. The inode stays in the table (an extra reference) until its
data is home, so every later open on this node finds the staged content. Unmount and
``tierfs flush`` publish what is left.
"""

from __future__ import annotations

import logging

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


class WriteBack:
    def __init__(self, core: Core, journal: Journal, publisher: Publisher,
                 staging: Staging) -> None:
        self.core = core
        self.journal = journal
        self.publisher = publisher
        self.staging = staging
        #: Files closed but not yet home, each with the task publishing it.
        self.files: dict[int, tuple[Inode, OpenFile]] = {}

    def holds(self, inode: Inode) -> bool:
        return inode.ino in self.files

    def start(self, inode: Inode, data: OpenFile) -> None:
        """Publish a closed file in the background, retrying until it is home."""
        core = self.core
        if inode.ino in self.files or core.nursery is None:
            return
        self.files[inode.ino] = (inode, data)
        core.inodes.opened(inode)  # the inode stays known until its data is home
        core.nursery.start_soon(self._run, inode, data)

    async def _run(self, inode: Inode, data: OpenFile) -> None:
        delay = 1.0
        try:
            while data.dirty and inode.links:
                try:
                    await self.publisher.publish(inode, data)
                    data.error = None
                except OSError as e:
                    self.core.counters.add("upload_errors")
                    data.error = e
                    log.error("write-back of inode %d failed, retrying in %.0f s: %s",
                              inode.ino, delay, e)
                    await self.journal.keep_staged(data)
                    await trio.sleep(delay)
                    delay = min(delay * 2, WRITEBACK_MAX_DELAY)
        finally:
            del self.files[inode.ino]
            if data.handles == 0 and inode.data is data:
                await self.staging.retire(inode, data)
            self.core.inodes.closed(inode)

    def pending(self) -> tuple[int, int]:
        """Files not yet home: (count, bytes). Also called from the Prometheus thread: list()
        copies the table in one step under the GIL."""
        dirty = [d for _, d in list(self.files.values()) if d.dirty]
        return len(dirty), sum(d.size for d in dirty)

    async def publish_all(self) -> list[tuple[Inode, OSError]]:
        """Publish every file now (``tierfs flush``, unmount): what failed, after trying all."""
        failed: list[tuple[Inode, OSError]] = []
        for inode, data in list(self.files.values()):
            try:
                await self.publisher.publish(inode, data)
            except OSError as e:
                failed.append((inode, e))
        return failed
