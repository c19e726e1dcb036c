"""Publishing ahead: in sync mode, the warm temp file that close renames into place is filled
while the writer is still writing, so close copies and fsyncs only the tail.

Close in sync mode waits until the data is durable on the warm tier. Copying the whole staged
file at close makes a checkpoint writer wait for its writes through FUSE and then for a second
full write and its fsync. A mirror copies the staged prefix in the background, a step at a time,
and starts the disk's write-back of each step (``sync_file_range``), so that at close little is
left to copy or to flush.

The staging file stays the truth; the mirror is only a head start. A write or a truncation
inside the copied range moves the copied mark back, and any failure drops the mirror, the
publish then copying the whole file as it would without one.

The temp file lives as long as the writer writes, and the file may be renamed away meanwhile
and its old directory renamed too: the temp file goes with that directory, where the path it
was made at no longer reaches it. So the mirror holds the directory by a descriptor from the
temp file's creation to its end (renamed into place or removed), and reaches the temp file
only through it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
from collections.abc import Callable

import trio

from tierfs.tiers.copying import copy_fd
from tierfs.tiers.warm import WarmTier
from tierfs.tiers.warmcopy import Reapply, unlink_held

log = logging.getLogger(__name__)

SYNC_FILE_RANGE_WRITE = 2
#: The most one worker call copies: a mirror told to stop (``halt``) stops within this much.
MOST_PER_CALL = 64 * 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)


def start_writeback(fd: int, offset: int, size: int) -> None:
    """Ask the kernel to start writing a range to disk, without waiting: the fsync at close
    then finds most of the file already written. Only a hint; failures are ignored."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, size, SYNC_FILE_RANGE_WRITE)


def write_and_start_writeback(fd: int, data: bytes, offset: int, start: int) -> int:
    """``pwrite``, then start writing ``fd[start:]`` up to the end of this write to disk: where
    publishing renames the staging file (nothing to copy ahead), this is what lets the fsync
    at close find little left to write. In the same thread call as the write, so the range is
    never hinted on a descriptor closed meanwhile, and the write costs no extra trip."""
    written = os.pwrite(fd, data, offset)
    start_writeback(fd, start, offset + written - start)
    return written


class Mirror:
    """The warm temp file of one staged file, and how much of the staging file it holds."""

    def __init__(self, warm: WarmTier, parent: bytes) -> None:
        self.warm = warm
        #: The directory the temp file is made in (its target's directory when it started).
        self.parent = parent
        #: That directory, held from the temp file's creation on (wherever it is moved), and
        #: the temp file's name in it.
        self.dfd: int | None = None
        self.tmp: bytes | None = None
        self.fd: int | None = None
        #: staging[:copied] is in the temp file.
        self.copied = 0
        #: A copy is running (one at a time), and the lowest offset changed while it ran.
        self.busy = False
        self._low: int | None = None
        self._idle = trio.Event()
        self._idle.set()
        #: A copy failed or the mirror was dropped: it is no use any more.
        self.broken = False
        #: Whoever ended the mirror was cancelled while a copy ran: the copy task drops it.
        self._drop_when_idle = False

    def changed(self, offset: int) -> None:
        """Staged bytes from ``offset`` on have changed (a write or truncation that has
        completed): they must be copied again."""
        self.copied = min(self.copied, offset)
        if self.busy:
            self._low = offset if self._low is None else min(self._low, offset)

    def start(self, nursery: trio.Nursery, staging_fd: int, written: Callable[[], int],
              step: int) -> None:
        """Copy staging[copied:written()] into the temp file (made at the first copy) in a
        task of ``nursery``, and go on while another ``step`` has been written meanwhile: a
        writer much faster than the warm tier (a checkpoint staged at disk speed) has often
        written its last byte before the first step is copied, and no later write would
        start the next one, leaving the network idle until close. Busy from this call on, so
        that ``wait`` also covers a copy whose task has not run yet. The caller keeps
        ``staging_fd`` open until ``wait`` returns."""
        if self.busy or self.broken or written() <= self.copied:
            return
        self.busy, self._low, self._idle = True, None, trio.Event()
        nursery.start_soon(self._copy, staging_fd, written, step)

    async def _copy(self, staging_fd: int, written: Callable[[], int], step: int) -> None:
        try:
            if self.fd is None:
                # (0600 until close: the file's mode or owner may change meanwhile, and a
                # set-group-ID directory may give the temp file a group the file lacks.)
                self.dfd, self.tmp, self.fd = await self.warm.run(self.warm.open_temp_in,
                                                                  self.parent)
            while not self.broken:
                self._low, start = None, self.copied
                upto = min(written(), start + MOST_PER_CALL)
                if upto <= start:
                    break  # cut short meanwhile
                await self.warm.run(_copy_step, staging_fd, self.fd, start, upto - start)
                self.copied = upto if self._low is None else min(upto, self._low)
                if written() - self.copied < step:
                    break  # the tail is close's to copy
        except OSError as e:
            log.warning("copying ahead to the warm tier failed (close will copy it all): %s", e)
            self.broken = True
        finally:
            self.busy = False
            self._idle.set()
            if self._drop_when_idle:
                await self._drop_logged()

    def halt(self) -> None:
        """No more steps: the mirror is being dropped (its copy is no use now), and whoever
        drops it waits for the step under way only, not for the copy to catch up."""
        self.broken = True

    async def wait(self) -> None:
        """Until no copy runs."""
        await self._idle.wait()

    async def discard(self) -> None:
        """End the mirror, its copy no use now: no more steps, and once the step under way is
        done, the temp file removed and its descriptors closed (``drop``). If the wait is
        cancelled, the copy task drops it at the step's end: its worker call still uses the
        temp file's descriptor, and nobody else holds the mirror any more."""
        self.halt()
        try:
            if self.busy:  # (else no checkpoint: a publish just done is not lost to a cancel)
                await self.wait()
        finally:
            # (The copy task's end runs on the event loop too: it cannot come between the
            # look at ``busy`` and the flag, so exactly one of the two drops the mirror.)
            if self.busy:
                self._drop_when_idle = True
            elif self.holds_any:
                await self._drop_logged()  # (a worker call runs to its end even if cancelled)

    async def _drop_logged(self) -> None:
        try:
            await self.warm.run(self.drop)
        except OSError as e:
            log.warning("could not remove a warm temp file: %s", e)

    def finish(self, staging_fd: int, size: int, like: bytes,
               times: tuple[int, int], mode: int | None) -> tuple[bytes, os.stat_result]:
        """Copy the rest, take size, owner, mode and times, fsync and close: the temp file's
        name in its directory, for ``replace``, and its attributes (blocking; after
        ``wait``). On failure the temp file is removed and the mirror ended."""
        assert self.fd is not None and self.tmp is not None and not self.busy
        fd, self.fd = self.fd, None
        try:
            try:
                now = os.fstat(fd)
                if now.st_nlink == 0:  # removed under us (its directory was emptied)
                    raise FileNotFoundError(self.tmp)
                tail, done = size - self.copied, 0
                if tail > 0:
                    done = copy_fd(staging_fd, fd, tail, self.copied, self.copied)
            except BaseException:
                self.warm.drop_temp(self.tmp, fd, self.dfd)
                raise
            # Its owner and mode are still those it was made with (a chown only where they
            # differ from the file's), and when its length is known to be ``size`` already, no
            # truncate is needed: on a network file system each is a round trip or two close
            # waits for.
            length = max(now.st_size, self.copied + done)
            st = self.warm.finish_temp(self.tmp, fd, size, like, times, mode,
                                       made=now if length == size else None, tmp_dir=self.dfd)
        except BaseException:
            # (A failure after the temp file was settled, at its fstat or its close, where a
            # network file system reports write errors, left it there: a whole copy.)
            self.broken = True
            with contextlib.suppress(OSError):
                unlink_held(self.dfd, self.tmp)
            self._let_go_of_dir()
            raise
        return self.tmp, st

    def replace(self, target: bytes, made: os.stat_result, again: Reapply | None
                ) -> tuple[os.stat_result, os.stat_result | None]:
        """Rename the finished temp file (``made``: its attributes) over ``target`` from the
        directory it was made in, wherever that is now: the file may have been renamed to
        another directory and its old one renamed after it. ``WarmTier.replace``'s result.
        On failure the temp file is removed: a whole copy of the file, not to be left on the
        shared tier. The mirror is over either way (blocking; after ``finish``)."""
        assert self.tmp is not None and self.dfd is not None and self.fd is None
        self.broken = True
        try:
            return self.warm.replace(self.tmp, target, made, again, tmp_dir=self.dfd)
        except OSError as e:
            with contextlib.suppress(OSError):
                unlink_held(self.dfd, self.tmp)
            if e.errno == errno.ESTALE:
                # The directory was removed by another NFS client (its handle is stale, where
                # a path would say ENOENT): the temp file went with it, so the file is
                # copied whole, as for a temp file found gone.
                raise FileNotFoundError(errno.ENOENT, "the head start's directory is gone",
                                        self.tmp) from e
            raise
        finally:
            self._let_go_of_dir()

    @property
    def usable(self) -> bool:
        return not self.broken and self.fd is not None

    @property
    def holds_any(self) -> bool:
        """Whether a descriptor (the temp file's, its directory's) is still open: ``drop``
        ends it."""
        return self.fd is not None or self.dfd is not None

    def drop(self) -> None:
        """Remove the temp file, if it is still there, and close what the mirror holds
        (blocking; after ``wait``, or after ``finish``: a temp file finished but not renamed
        into place)."""
        self.broken = True
        fd, self.fd = self.fd, None
        if self.dfd is None:
            return  # never made, or over already (the temp file, its directory: made at once)
        assert self.tmp is not None
        try:
            if fd is not None:
                self.warm.drop_temp(self.tmp, fd, self.dfd)
            else:
                unlink_held(self.dfd, self.tmp)
        finally:
            self._let_go_of_dir()

    def _let_go_of_dir(self) -> None:
        dfd, self.dfd = self.dfd, None
        if dfd is not None:
            os.close(dfd)


def _copy_step(src: int, dst: int, offset: int, size: int) -> None:
    copy_fd(src, dst, size, offset, offset)
    start_writeback(dst, offset, size)
