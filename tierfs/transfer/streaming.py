"""Streaming a large file to the bucket while it is being written.

Once a file being written passes ``large_file_threshold`` it gets a multipart upload. Each time
the writer has filled a whole part past the last cut, that part is read from the staging file
and uploaded by a task of its own while the writer goes on; at most ``upload_window`` parts are
uploading or being filled at once, so the bucket sets the pace. At close the parts changed
since they were uploaded go up again, the tail goes up as the last part, and the upload is
completed.

Uploaded parts stay in the staging file as long as the hot tier has room: the writer may seek
back and write (or truncate) anywhere, and a part it changes is uploaded again, under the same
number, before the upload is completed; reads are served from staging. Only when the hot tier
runs short of room (its free space under ``reserve`` after a part's upload, or a write into
staging that found the disk full: ``give_back_all``) are the uploaded parts punched out of the
staging file, so that the hot tier holds no more than the window of a file of any size. A
change that reaches a punched part can no longer be made: ``PartGone``, and the caller abandons
the upload (``write.cold``). Reads of a punched part get EIO until the object is complete.

The journal's record of completed parts (``on_part``) never names a part whose staged bytes
changed since it was uploaded: a change forgets the part (durably) before its bytes change, and
a part changed while it was uploading is not recorded. Recovery resumes from that record.

Concurrency: ``feed``, ``changing``, ``truncating``, ``wait_idle`` and ``finish`` run on the
event loop (their callers hold the file's lock); part tasks run in the filesystem's nursery;
each blocking call goes through its tier's threads. A part is marked punched on the event loop
before its bytes are punched in a thread, and a change marks the parts it touches changed
before it writes them, so a part being changed is never punched.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import logging
import os
import weakref
from collections.abc import Awaitable, Callable

import trio

from tierfs.objects.base import (MAX_PART_SIZE, KeyInTheWay, NoSuchObject, ObjectInfo,
                                  ObjectStoreError, UploadGone)
from tierfs.objects.keys import MAX_KEY_MOVES, completion_key
from tierfs.tiers.base import Tier
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier

log = logging.getLogger(__name__)

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]

#: Object metadata naming the upload that made the object (entries.Upload.token).
UPLOAD_TOKEN = "tierfs-upload"

#: Parts per size step: part sizes double every 1,000 parts, so 10,000 parts starting at 16 MiB
#: reach 16 TiB (S3's object limit is 5 TiB), while a file of a few GiB uses small parts.
PARTS_PER_STEP = 1000

#: Uploads under way, for ``give_back_all`` (a write into staging found the hot disk full).
_live: weakref.WeakSet[StreamingUpload] = weakref.WeakSet()


class PartGone(OSError):
    """A change reaches bytes already punched out of staging: the upload cannot hold it."""

    def __init__(self, number: int) -> None:
        super().__init__(errno.EIO, f"part {number} has left the hot tier")
        self.number = number


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free a range of a file's blocks, keeping its size (the range reads as zeros after)."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def punch_ranges(fd: int, ranges: list[tuple[int, int]]) -> None:
    """Punch several (offset, length) ranges in one thread call."""
    for offset, length in ranges:
        if length:
            punch_hole(fd, offset, length)


def free_bytes(fd: int) -> int:
    """Bytes free (to an unprivileged writer) on the file system holding ``fd``."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize


def part_size(first: int, number: int) -> int:
    """Size of part ``number`` (from 1)."""
    return min(MAX_PART_SIZE, first * 2 ** ((number - 1) // PARTS_PER_STEP))


class StreamingUpload:
    def __init__(self, cold: ColdTier, hot: HotTier, nursery: trio.Nursery, staging_fd: int,
                 key: str, upload_id: str, first_part: int, window: int,
                 on_part: Callable[[dict[int, str | None]], Awaitable[None]],
                 token: str, done: dict[int, str] | None = None, patient: bool = False,
                 checksum: str | None = None, source: Tier | None = None,
                 on_key: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.cold, self.hot, self.nursery = cold, hot, nursery
        self.fd = staging_fd
        #: Whose threads read ``fd``: the hot tier's for a staging file (the default), or the
        #: warm tier's for a warm file moved to the bucket whole (``write.demote``). Only a
        #: staging file is ever punched: any other source is the user's file itself.
        self.source: Tier = source if source is not None else hot
        self.punchable = source is None
        self.key, self.upload_id, self.token = key, upload_id, token
        self.first_part = first_part
        self.window = max(1, window)
        #: Called with each completed part (number -> receipt) before its bytes may leave
        #: staging, and with parts whose staged bytes are about to change (number -> None):
        #: the journal makes it durable, so a crash never loses bytes that are in no completed
        #: part, nor resumes from a part that no longer matches the file.
        self.on_part = on_part
        #: Called with a new key before the upload completes there (``_complete``): the
        #: journal makes it durable, since recovery finds a completed upload's object by its
        #: key. None: the upload fails instead (a demotion, which starts again later).
        self.on_key = on_key
        #: The checksum the upload was created with (each part is sent with its own).
        self.checksum = checksum
        #: Completed parts whose bytes are unchanged since (number -> receipt); a resumed
        #: upload starts with those it had.
        self.parts: dict[int, str] = dict(done or {})
        #: Parts whose bytes were punched out of staging: they exist only in the upload. A
        #: resumed upload's parts may have been punched before the crash.
        self.gone: set[int] = set(done or {})
        #: Completed parts still whole in staging: punched when the hot tier needs the room.
        self.kept: set[int] = set()
        #: Parts changed in staging after they were cut: uploaded again before completion.
        self.changed: set[int] = set()
        #: Write-back: a failed part does not stop the writer; its bytes stay staged and
        #: ``finish`` (in the background) tries it again.
        self.patient = patient
        self.next_part = 1
        #: Bytes [0, cut) belong to parts already cut (``starts``: where each begins).
        self.cut = 0
        self.starts: list[int] = []
        self.error: ObjectStoreError | None = None
        #: Why the upload was given up (a change reached a punched part); None while it holds.
        self.abandoned: str | None = None
        #: Parts whose upload failed: (number, offset, size); their bytes are still staged.
        self.failed: list[tuple[int, int, int]] = []
        self._slots = trio.Semaphore(max(1, self.window - 1))
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()
        #: Parts uploading now (number -> set when done), and those of them changed meanwhile
        #: (their receipts name bytes staging no longer has).
        self._flying: dict[int, trio.Event] = {}
        self._stale: set[int] = set()
        #: Punches under way in a hot-tier thread (``give_back``), each set when it ends.
        self._punching: set[trio.Event] = set()
        self._aborted = False
        if self.punchable:
            _live.add(self)

    @property
    def punched(self) -> bool:
        """Some bytes of the file have left staging: if the upload is gone, they exist nowhere
        any more."""
        return bool(self.gone)

    def _check(self, strict: bool = True, gone: bool = False) -> None:
        if self.abandoned is not None:
            raise OSError(errno.EIO, f"upload of {self.key} abandoned: {self.abandoned}")
        if gone and isinstance(self.error, UploadGone):
            raise self.error  # (finish) its caller decides: start again, or give up
        if self.error is not None and (strict or not self.patient):
            raise OSError(errno.EIO, f"upload of {self.key} failed: {self.error}")

    def reserve(self) -> int:
        """Free space the hot disk keeps for the window: under it, uploaded parts go."""
        return self.window * part_size(self.first_part, self.next_part)

    # -- parts and offsets ----------------------------------------------------------------

    def _span(self, number: int) -> tuple[int, int]:
        """(offset, size) of a part already cut."""
        start = self.starts[number - 1]
        end = self.starts[number] if number < len(self.starts) else self.cut
        return start, end - start

    def _numbers(self, start: int, end: int) -> range:
        """The cut parts that bytes [start, end) touch."""
        end = min(end, self.cut)
        if start >= end:
            return range(0)
        return range(bisect.bisect_right(self.starts, start),
                     bisect.bisect_right(self.starts, end - 1) + 1)

    def unreadable(self, offset: int, size: int) -> bool:
        """Whether bytes [offset, offset + size) touch a part punched out of staging."""
        if self.abandoned is not None:
            return True
        if not self.gone:
            return False
        return any(n in self.gone for n in self._numbers(offset, offset + max(1, size)))

    def missing(self) -> list[tuple[int, int]]:
        """(offset, length) of the parts punched out of staging: what staging lacks of the
        object, once the upload is finished."""
        return [self._span(n) for n in sorted(self.gone) if n <= len(self.starts)]

    def _advance(self, number: int, size: int) -> None:
        self.starts.append(self.cut)
        self.next_part = number + 1
        self.cut += size

    # -- feeding ----------------------------------------------------------------------------

    async def feed(self, written: int) -> None:
        """Start uploading every whole part below ``written`` (bytes written contiguously
        from the start); waits while the window is full."""
        self._check(strict=False)
        while written - self.cut >= part_size(self.first_part, self.next_part):
            number, offset = self.next_part, self.cut
            size = part_size(self.first_part, number)
            if number in self.parts:  # resumed: this part is already in the bucket
                self._advance(number, size)
                continue
            await self._claim()
            try:
                self._check(strict=False)
                await self._settled(number)
            except BaseException:
                self._release()
                raise
            self._advance(number, size)
            self._flying[number] = trio.Event()  # from now on a change makes it stale
            self.nursery.start_soon(self._upload, number, offset, size)

    async def _settled(self, number: int) -> None:
        """Wait until no earlier upload of this part number is in flight (a part cut again
        after a truncate): the bucket keeps whichever upload of a number lands last."""
        while number in self._flying:
            await self._flying[number].wait()

    async def _claim(self) -> None:
        """Take a window slot for one part; ``_upload`` gives it back."""
        await self._slots.acquire()
        self._running += 1
        if self._running == 1:
            self._idle = trio.Event()

    def _release(self) -> None:
        self._running -= 1
        self._slots.release()
        if self._running == 0:
            self._idle.set()

    async def _upload(self, number: int, offset: int, size: int) -> None:
        """Upload one part; ``_flying[number]`` was set by the caller, with no await since
        the part was cut (or chosen), so a change meanwhile marks it stale."""
        done = self._flying[number]
        try:
            data = await self.source.run(os.pread, self.fd, size, offset)
            if len(data) != size:
                raise OSError(errno.EIO, "staging file is shorter than the part")
            receipt = await self.cold.run(self.cold.store.upload_part, self.key,
                                          self.upload_id, number, data, self.checksum)
            del data
            if number not in self._stale and self.abandoned is None:
                await self.on_part({number: receipt})
            if number in self._stale or self.abandoned is not None:
                pass  # changed while it uploaded: it goes up again (``changed``)
            else:
                self.parts[number] = receipt
                self.changed.discard(number)
                if self.punchable:
                    self.kept.add(number)
            self._stale.discard(number)
            await self._make_room()
        except ObjectStoreError as e:
            log.error("uploading part %d of %s failed: %s", number, self.key, e)
            self._failed(number, offset, size, e)
        except Exception as e:  # noqa: BLE001 - staging or journal: the part is retried
            log.error("staging part %d of %s failed: %s", number, self.key, e)
            self._failed(number, offset, size, ObjectStoreError(str(e)))
        except trio.Cancelled:
            self.error = ObjectStoreError("cancelled")
            self.failed.append((number, offset, size))
            raise
        finally:
            self._stale.discard(number)
            if self._flying.get(number) is done:
                del self._flying[number]
            done.set()
            self._release()

    def _failed(self, number: int, offset: int, size: int, error: ObjectStoreError) -> None:
        if number in self._stale:
            return  # changed or cut again meanwhile: it goes up again in any case
        self.error = error
        self.failed.append((number, offset, size))

    async def _make_room(self) -> None:
        """After a part's upload: one look at the hot disk's free space, and the uploaded
        parts go if it is under the reserve."""
        if not self.kept:
            return
        try:
            free = await self.hot.run(free_bytes, self.fd)
        except OSError as e:
            log.warning("could not read the hot tier's free space: %s", e)
            free = 0
        if free < self.reserve():
            await self.give_back()

    async def give_back(self) -> int:
        """Punch every uploaded, unchanged part out of staging (the hot tier needs the room);
        returns the bytes freed. They are marked gone before the thread punches them, so a
        change arriving meanwhile fails rather than being lost."""
        numbers = sorted(self.kept)
        # (Not once released, aborted or completed: ``give_back_all`` may hold an upload
        # taken from ``_live`` before that, and its descriptor may be another file's now.)
        if not numbers or self.abandoned is not None or self not in _live:
            return 0
        self.kept.clear()
        self.gone.update(numbers)
        ranges = [self._span(n) for n in numbers]
        done = trio.Event()
        self._punching.add(done)
        try:
            await self.hot.run(punch_ranges, self.fd, ranges)
        except OSError as e:
            log.warning("punching uploaded parts of %s out of staging failed: %s", self.key, e)
        finally:
            self._punching.discard(done)
            done.set()
        return sum(length for _, length in ranges)

    # -- changes to bytes already cut ---------------------------------------------------------

    async def changing(self, start: int, end: int) -> None:
        """Bytes [start, end) of the staged file are about to change (a write): the parts
        they touch are marked changed and forgotten by the journal first. Raises ``PartGone``
        if one of them was punched, EIO if the upload was abandoned."""
        self._check(strict=False)
        await self._reopen_tail()
        numbers = self._numbers(start, end)
        for n in numbers:
            if n in self.gone:
                raise PartGone(n)
        fresh = [n for n in numbers if n not in self.changed]
        if fresh:
            self.changed.update(fresh)
            await self._forget(fresh)

    async def truncating(self, size: int) -> None:
        """The staged file is about to be cut (or extended) to ``size``: parts from the one
        holding ``size`` on are no longer cut; they are cut and uploaded again as the file
        grows. Raises ``PartGone`` if bytes before ``size`` were punched in that part."""
        self._check(strict=False)
        await self._reopen_tail()
        while True:
            if size >= self.cut:
                return
            number = bisect.bisect_right(self.starts, size)
            if size > self.starts[number - 1] and number in self.gone:
                raise PartGone(number)
            if not self._punching:
                break
            await self._punch_ended()
        await self._uncut(number)

    async def _reopen_tail(self) -> None:
        """A short last part (cut by a ``finish`` that did not complete) is cut again once
        the file changes: parts after it must start where their numbers say."""
        while True:
            if not self.starts:
                return
            last = len(self.starts)
            if self._span(last)[1] >= part_size(self.first_part, last):
                return
            if last in self.gone:
                raise PartGone(last)
            if not self._punching:
                break
            await self._punch_ended()
        await self._uncut(last)

    async def _punch_ended(self) -> None:
        """Wait for a punch running in its thread (``give_back``). An un-cut waits until
        none runs, its check for punched parts made again each time: the parts it un-cuts are
        no longer gone, and the bytes written there next must come after any punch, which
        could have started meanwhile on a part that finished uploading."""
        await next(iter(self._punching)).wait()

    async def _uncut(self, number: int) -> None:
        """Parts from ``number`` on are cut no more. Caller: no punch runs (``_punch_ended``),
        and no await since it looked."""
        assert not self._punching
        numbers = range(number, self.next_part)
        known = [n for n in numbers if n in self.parts or n in self._flying]
        for n in numbers:
            self.gone.discard(n)
            self.changed.discard(n)
        self.failed = [f for f in self.failed if f[0] < number]
        self.cut = self.starts[number - 1]
        del self.starts[number - 1:]
        self.next_part = number
        await self._forget(known)

    async def _forget(self, numbers: list[int]) -> None:
        """These parts' staged bytes are about to change: the journal forgets them (durably)
        first, and an upload of one of them still in flight is not recorded."""
        for n in numbers:
            self.parts.pop(n, None)
            self.kept.discard(n)
            if n in self._flying:
                self._stale.add(n)
        if numbers:
            await self.on_part(dict.fromkeys(numbers))

    async def give_up(self, reason: str) -> None:
        """Abandon the upload (a change it cannot hold): nothing of it is ever completed."""
        self.abandoned = reason
        _live.discard(self)
        await self.abort()

    # -- the end ----------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Wait for the parts in flight (fsync: what was cut is then stored in the bucket,
        or, for parts changed since, staged and out of the journal's record). Parts that
        failed before are tried again first, as ``finish`` does: their bytes are still
        staged, and an fsync after the bucket came back must not fail for them."""
        await self._idle.wait()
        await self._retry_failed()
        self._check()

    async def _retry_failed(self) -> None:
        """Upload again the parts whose upload failed (those changed since go with the
        changed parts)."""
        if self.abandoned is not None:
            return
        retry, self.failed, self.error = self.failed, [], None
        for i, (number, offset, length) in enumerate(retry):
            # (Still cut as it was, and not sent again or changed since.)
            if (number < self.next_part and self._span(number) == (offset, length)
                    and number not in self.changed and number not in self.parts
                    and number not in self._flying):
                try:
                    await self._run_inline(number, offset, length)
                except BaseException:
                    # Cancelled (an unmount): the parts not tried again stay failed, for
                    # the next fsync, close or mount. (``_upload`` keeps its own part.)
                    self.failed += [f for f in retry[i:] if f not in self.failed]
                    raise

    async def _run_inline(self, number: int, offset: int, size: int) -> None:
        await self._claim()
        try:
            await self._settled(number)
        except BaseException:
            self._release()  # (cancelled: the slot is not left taken, nor the idle unset)
            raise
        self._flying[number] = trio.Event()
        await self._upload(number, offset, size)

    async def finish(self, size: int) -> ObjectInfo:
        """Upload everything from the cut to ``size``, and again every part changed since it
        was uploaded, and complete the object. Parts that failed before are tried again, so
        a later close can succeed where one failed."""
        if self.abandoned is not None:
            self._check()
        await self._idle.wait()
        await self._retry_failed()
        self._check(gone=True)
        try:
            await self.feed(size)
        except OSError:
            self._check(gone=True)  # a part found the upload gone: say that, not just EIO
            raise
        await self._idle.wait()
        self._check(gone=True)  # strict: a part that failed again fails the close
        for number in sorted(self.changed):  # same numbers: the bucket keeps the new bytes
            await self._run_inline(number, *self._span(number))
            self._check(gone=True)
        while self.cut < size:  # the tail: the last part may be short
            number, offset = self.next_part, self.cut
            length = min(part_size(self.first_part, number), size - offset)
            self._advance(number, length)
            if number not in self.parts:
                await self._run_inline(number, offset, length)
                self._check(gone=True)
        if self.next_part == 1:  # empty: an upload needs one part, and it may be empty
            self._advance(1, 0)
            if 1 not in self.parts:
                await self._run_inline(1, 0, 0)
                self._check(gone=True)
        # Only parts up to the end: a resumed upload may have parts past the size it was
        # fsynced at, and a gap among them would shift everything after it.
        parts = sorted((n, e) for n, e in self.parts.items() if n < self.next_part)
        try:
            info = await self._complete(parts)
        except UploadGone:
            found = await self.completed_before(size)
            if found is None:
                raise
            info = found
        # Its caller closes or takes the staging descriptor next: a punch a full hot tier
        # started meanwhile must end first (shielded: the object is complete either way).
        with trio.CancelScope(shield=True):
            await self.release()
        return info

    async def _complete(self, parts: list[tuple[int, str]]) -> ObjectInfo:
        """Complete the upload at its key or, where a local folder can no longer make that
        key (``KeyInTheWay``: a directory renamed while the file in it streamed, and a file
        written under the directory's old name; or the other way round), at another one
        (``objects.keys``), recorded first (``on_key``). Failing instead would fail every later try the same way, and the
        file would never be published. Its parts stay: a local folder's upload is not bound
        to its key (S3's is, but S3 never raises KeyInTheWay), so nothing is sent again,
        even where parts of the file have left staging."""
        store = self.cold.store
        moves = 0
        while True:
            try:
                return await self.cold.run(store.complete_multipart, self.key,
                                           self.upload_id, parts)
            except KeyInTheWay as e:
                moves += 1
                if self.on_key is None or moves > MAX_KEY_MOVES:
                    raise
                key = await self.cold.run(completion_key, store, self.key)
                log.warning("%s: the upload of %s completes at %s instead", e, self.key, key)
                await self.on_key(key)
                self.key = key

    async def completed_before(self, size: int) -> ObjectInfo | None:
        """The object this upload made, if it was completed already (before a crash, or by a
        completion whose reply was lost); None if the upload was dropped unfinished. A store
        that cannot say (its HEAD failed) raises: taken for "dropped", the staged data would
        be set aside or uploaded again while the bucket may hold the whole object."""
        try:
            info = await self.cold.run(self.cold.store.head, self.key)
        except (NoSuchObject, KeyInTheWay):  # (in the way: no object can be at the key)
            return None
        if info.metadata.get(UPLOAD_TOKEN) != self.token or info.size != size:
            return None
        log.info("the upload of %s had been completed already", self.key)
        return info

    async def release(self) -> None:
        """Stop using the staging descriptor, which its owner is about to close: out of the
        uploads a full hot tier takes parts back from (``give_back_all``), once no part is in
        flight and no punch runs. A part ending later would punch its range out of whatever
        file got the descriptor's number next."""
        _live.discard(self)
        await self._idle.wait()
        while self._punching:
            await self._punch_ended()

    async def abort(self) -> None:
        """Drop the upload in the bucket; its caller may close the staging descriptor next,
        so this first lets go of it as ``release`` does."""
        await self.release()
        if self._aborted:
            return
        self._aborted = True
        try:
            await self.cold.abort_upload(self.key, self.upload_id)
        except ObjectStoreError as e:
            log.error("could not abort the upload of %s (%s): %s", self.key, self.upload_id, e)


async def give_back_all(hot: HotTier, nbytes: int) -> int:
    """A write of ``nbytes`` into staging found the hot disk full: every upload staged there
    gives back its uploaded parts, after waiting for those in flight if that is not enough.
    Returns the bytes freed."""
    uploads = [u for u in list(_live) if u.hot is hot]
    freed = 0
    for upload in uploads:
        freed += await upload.give_back()
    for upload in uploads:
        if freed >= nbytes:
            break
        await upload._idle.wait()
        freed += await upload.give_back()
    return freed
