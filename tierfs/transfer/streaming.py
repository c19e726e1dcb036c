"""Streaming a large file to the bucket while it is being written.

Once a file being written passes ``large_file_threshold`` it gets a multipart upload. Each time
the writer has filled a whole part past the last cut, that part is read from the staging file,
uploaded by a task of its own, and then punched out of the staging file, so the hot tier holds
at most ``upload_window`` parts of the file (those uploading plus the one being filled) whatever
its size. The writer waits for a free slot when the window is full: the bucket sets the pace.
At close the tail goes up as the last part and the upload is completed.

Bytes before the cut are no longer on the hot tier and not yet readable from the bucket (an
unfinished multipart upload cannot be read): writes there fail with EOPNOTSUPP and reads with
EIO, until the object is complete (see docs/semantics.md).

Concurrency: ``feed``, ``wait_idle`` and ``finish`` run on the event loop; part tasks run in the
filesystem's nursery; each blocking call goes through its tier's threads.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Awaitable, Callable

import trio

from tierfs.objects.base import MAX_PART_SIZE, ObjectInfo, ObjectStoreError, UploadGone
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier

log = logging.getLogger(__name__)

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]

#: Object metadata naming the upload that made the object (journal.Upload.token).
UPLOAD_TOKEN = "tierfs-upload"

#: Parts per size step: part sizes double every 1,000 parts, so 10,000 parts starting at 16 MiB
#: reach 16 TiB (S3's object limit is 5 TiB), while a file of a few GiB uses small parts.
PARTS_PER_STEP = 1000


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free a range of a file's blocks, keeping its size (the range reads as zeros after)."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def part_size(first: int, number: int) -> int:
    """Size of part ``number`` (from 1)."""
    return min(MAX_PART_SIZE, first * 2 ** ((number - 1) // PARTS_PER_STEP))


class StreamingUpload:
    def __init__(self, cold: ColdTier, hot: HotTier, nursery: trio.Nursery, staging_fd: int,
                 key: str, upload_id: str, first_part: int, window: int,
                 on_part: Callable[[int, str], Awaitable[None]],
                 token: str, done: dict[int, str] | None = None, patient: bool = False,
                 checksum: str | None = None) -> None:
        self.cold, self.hot, self.nursery = cold, hot, nursery
        self.fd = staging_fd
        self.key, self.upload_id, self.token = key, upload_id, token
        self.first_part = first_part
        #: Called with each completed part before its bytes leave staging: the journal makes
        #: it durable, so a crash never loses bytes that are in no completed part.
        self.on_part = on_part
        #: The checksum the upload was created with (each part is sent with its own).
        self.checksum = checksum
        #: Completed parts (number -> receipt); a resumed upload starts with those it had.
        self.parts: dict[int, str] = dict(done or {})
        #: Some bytes of the file have left staging (a resumed upload may have dropped some):
        #: if the upload is gone, they exist nowhere any more.
        self.punched = bool(done)
        #: Write-back: a failed part does not stop the writer; its bytes stay staged and
        #: ``finish`` (in the background) tries it again.
        self.patient = patient
        self.next_part = 1
        #: Bytes [0, cut) belong to parts already handed to upload tasks.
        self.cut = 0
        self.error: ObjectStoreError | None = None
        #: Parts whose upload failed: (number, offset, size); their bytes are still staged.
        self.failed: list[tuple[int, int, int]] = []
        self._slots = trio.Semaphore(max(1, window - 1))
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()

    def _check(self, strict: bool = True, gone: bool = False) -> None:
        if gone and isinstance(self.error, UploadGone):
            raise self.error  # (finish) its caller decides: start again, or give up
        if self.error is not None and (strict or not self.patient):
            raise OSError(errno.EIO, f"upload of {self.key} failed: {self.error}")

    async def feed(self, written: int) -> None:
        """Start uploading every whole part below ``written`` (bytes written contiguously
        from the start); waits while the window is full."""
        self._check(strict=False)
        while written - self.cut >= part_size(self.first_part, self.next_part):
            number, offset = self.next_part, self.cut
            size = part_size(self.first_part, number)
            if number in self.parts:  # resumed: this part is already in the bucket
                self.next_part += 1
                self.cut += size
                continue
            await self._claim()
            self._check(strict=False)
            self.next_part += 1
            self.cut += size
            self.nursery.start_soon(self._upload, number, offset, size)

    async def _claim(self) -> None:
        """Take a window slot for one part; ``_upload`` gives it back."""
        await self._slots.acquire()
        self._running += 1
        if self._running == 1:
            self._idle = trio.Event()

    async def _upload(self, number: int, offset: int, size: int) -> None:
        try:
            data = await self.hot.run(os.pread, self.fd, size, offset)
            if len(data) != size:
                raise OSError(errno.EIO, "staging file is shorter than the part")
            receipt = await self.cold.run(self.cold.store.upload_part, self.key,
                                          self.upload_id, number, data, self.checksum)
            del data
            await self.on_part(number, receipt)
            self.parts[number] = receipt
            if size:
                self.punched = True
                await self.hot.run(punch_hole, self.fd, offset, size)
        except ObjectStoreError as e:
            log.error("uploading part %d of %s failed: %s", number, self.key, e)
            self.error = e
            self.failed.append((number, offset, size))
        except Exception as e:  # noqa: BLE001 - staging or journal: the part is retried
            log.error("staging part %d of %s failed: %s", number, self.key, e)
            self.error = ObjectStoreError(str(e))
            self.failed.append((number, offset, size))
        except trio.Cancelled:
            self.error = ObjectStoreError("cancelled")
            self.failed.append((number, offset, size))
            raise
        finally:
            self._running -= 1
            self._slots.release()
            if self._running == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Wait for the parts in flight (fsync: what was cut is then stored in the bucket)."""
        await self._idle.wait()
        self._check()

    async def _run_inline(self, number: int, offset: int, size: int) -> None:
        await self._claim()
        await self._upload(number, offset, size)

    async def finish(self, size: int) -> ObjectInfo:
        """Upload everything from the cut to ``size`` and complete the object. Parts that
        failed before are tried again, so a later close can succeed where one failed."""
        await self._idle.wait()
        retry, self.failed, self.error = self.failed, [], None
        for number, offset, length in retry:
            await self._run_inline(number, offset, length)
        self._check(gone=True)
        try:
            await self.feed(size)
        except OSError:
            self._check(gone=True)  # a part found the upload gone: say that, not just EIO
            raise
        await self._idle.wait()
        self._check(gone=True)  # strict: a part that failed again fails the close
        while self.cut < size:  # the tail: the last part may be short
            number, offset = self.next_part, self.cut
            length = min(part_size(self.first_part, number), size - offset)
            self.next_part += 1
            self.cut += length
            if number not in self.parts:
                await self._run_inline(number, offset, length)
                self._check(gone=True)
        if self.next_part == 1:  # empty: an upload needs one part, and it may be empty
            self.next_part = 2
            if 1 not in self.parts:
                await self._run_inline(1, 0, 0)
                self._check(gone=True)
        # Only parts up to the end: a resumed upload may have parts past the size it was
        # fsynced at, and a gap among them would shift everything after it.
        parts = sorted((n, e) for n, e in self.parts.items() if n < self.next_part)
        try:
            return await self.cold.run(self.cold.store.complete_multipart, self.key,
                                       self.upload_id, parts)
        except UploadGone:
            info = await self.completed_before(size)
            if info is None:
                raise
            return info

    async def completed_before(self, size: int) -> ObjectInfo | None:
        """The object this upload made, if it was completed already (before a crash, or by a
        completion whose reply was lost); None if the upload was dropped unfinished."""
        try:
            info = await self.cold.run(self.cold.store.head, self.key)
        except ObjectStoreError:
            return None
        if info.metadata.get(UPLOAD_TOKEN) != self.token or info.size != size:
            return None
        log.info("the upload of %s had been completed already", self.key)
        return info

    async def abort(self) -> None:
        await self._idle.wait()
        try:
            await self.cold.run(self.cold.store.abort_multipart, self.key, self.upload_id)
        except ObjectStoreError as e:
            log.error("could not abort the upload of %s (%s): %s", self.key, self.upload_id, e)
