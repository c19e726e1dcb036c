"""Recovery at mount: finish or undo what the journal says was in flight when tierfs stopped.

For every journal entry, by what a writer was told:

- Closed (the last writer's close returned, in write-back mode, or a sync-mode publish failed):
  the data is published now. A warm file is copied to a temp name beside its path, fsynced and
  renamed into place (where the tiers share a file system, its staging file is fsynced and
  renamed into place, as the mount does); a file streaming to the bucket resumes its
  multipart upload (parts the journal lists as completed are not sent again), completes it
  and gets its stub.
- A file streaming to the bucket that was fsynced and not closed: its upload is completed
  with the content up to the fsynced size.
- Otherwise (a writer still had it open, or it is already home): nothing of it may appear
  under the file's name. Its staging file is removed and its multipart upload, if any, aborted.

That is after tierfs itself stopped (a crash, SIGKILL): the staged bytes were in the page cache,
which outlives the process. After the system restarted (a new boot id; power loss, a kernel
panic), staged bytes that were never flushed to disk may be missing or zeros, and publishing
them would replace a good file with a torn one. Then only what was flushed is used: closed data
whose publish had failed (flushed then, ``synced``), and the fsynced prefix of a file streaming
to the bucket. Other closed data is set aside in ``<hot>/lost+found`` with a note, the file
keeps what it had, and the log says so: write-back data not yet home is lost with the node, as
docs/semantics.md says, but never published torn.

Then staging files that no entry names are removed. Multipart uploads are aborted only where
the journal says they are this node's: its upload ids, and, for an upload whose creation was
journaled but whose id was not (a crash in between), every upload of that key. Other nodes may
be writing to the same bucket, so uploads of keys this node never wrote are left alone.

Recovery runs on the event loop before the mount serves requests, so nobody sees a file
half-recovered. Temp files left on the warm tier by a crash are removed afterwards, in the
background (``purge_temps``), since that means walking the namespace.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from typing import TYPE_CHECKING

from tierfs.objects.base import ObjectStoreError, UploadGone
from tierfs.stubs import Stub, StubError, looks_like_stub, parse_stub
from tierfs.tiers.warm import is_internal, join
from tierfs.vfs import journal
from tierfs.vfs.streaming import UPLOAD_TOKEN, StreamingUpload

if TYPE_CHECKING:
    from tierfs.vfs.filesystem import FileSystem

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    published: int = 0
    uploaded: int = 0
    discarded: int = 0
    aborted: int = 0
    orphans: int = 0
    set_aside: int = 0
    #: Uploads the bucket dropped unfinished after some of their bytes had left staging.
    lost: int = 0
    failed: int = 0


def publishable(entry: journal.Entry, rebooted: bool) -> int | None:
    """How many bytes of an entry's staged data recovery puts in place; None: none."""
    if not entry.path:
        return None
    streamed = entry.upload is not None and entry.synced is not None
    if not rebooted:
        return entry.size if entry.closed else entry.synced if streamed else None
    if entry.closed and entry.synced is not None and entry.synced >= entry.size:
        return entry.size
    return entry.synced if streamed else None


async def recover(fs: FileSystem, rebooted: bool = False) -> Report:
    report = Report()
    entries = await fs.hot.run(journal.load, fs.index)
    staged = set(await fs.hot.run(fs.hot.staged_ids))
    for sid in sorted(staged - entries.keys()):
        await fs.hot.run(fs.hot.remove_staging, sid)
        report.orphans += 1
    for sid, entry in sorted(entries.items()):
        try:
            size = publishable(entry, rebooted)
            if size is not None and sid in staged:
                entry.size = size
                if entry.upload is not None:
                    await _finish_upload(fs, sid, entry)
                    report.uploaded += 1
                else:
                    await _publish(fs, sid, entry)
                    report.published += 1
            else:
                if entry.upload is not None:
                    report.aborted += await _abort(fs, entry.upload)
                if rebooted and entry.closed and entry.path and sid in staged:
                    await _set_aside(fs, sid, entry, "the system restarted before the closed "
                                     "data of %s was home or flushed to disk")
                    report.set_aside += 1
                else:
                    await fs.hot.run(fs.hot.remove_staging, sid)
                    report.discarded += 1
        except UploadGone:
            # Parts of it left staging for an upload the bucket no longer has: no later
            # mount could finish it.
            await _set_aside(fs, sid, entry, "the bucket dropped the unfinished upload of %s "
                             "after parts of it had left the hot tier: that content is lost")
            report.lost += 1
        except (OSError, ObjectStoreError) as e:
            # Kept for the next mount to try again; the mount itself goes on.
            log.error("recovery of %s (staged as %s) failed, kept for the next mount: %s",
                      os.fsdecode(entry.path), sid, e)
            report.failed += 1
            continue
        fs.journal.drop(sid)
    await fs.journal.sync()
    if any(dataclasses.astuple(report)):
        log.warning("recovery: %s", report)
    return report


async def _rename_staging(fs: FileSystem, sid: str, fd: int, entry: journal.Entry,
                          times: tuple[int, int], mode: int | None) -> bool:
    """Publish a staging file by renaming it into place, as the mount does where the tiers
    share a file system; False when it must be copied (another file system, hard links)."""
    if not fs.publish_by_rename:
        return False
    if not await fs.warm.run(fs.warm.settle_staged, entry.path, fd, entry.size, times, mode):
        return False
    return await fs.adopt_staging(sid, entry.path, None) is not None


async def _set_aside(fs: FileSystem, sid: str, entry: journal.Entry, why: str) -> None:
    """Keep staged data that must not be published in lost+found, with its journal entry as a
    note, for a person; the file keeps its previous content. ``why`` names the path (%s)."""
    kept = await fs.hot.run(fs.hot.set_aside, sid, entry.encode())
    log.error("recovery: " + why + "; the file keeps its previous content, the staged copy "
              "(perhaps incomplete) is kept as %s", os.fsdecode(entry.path), kept)


async def _start_upload(fs: FileSystem, sid: str, entry: journal.Entry) -> None:
    """A new multipart upload for an entry whose upload is unknown or gone (none of its parts
    left staging): the journal has its id before any part is sent."""
    upload = entry.upload
    assert upload is not None
    upload.checksum = fs.cold.store.part_checksum
    upload.upload_id = await fs.cold.run(fs.cold.store.create_multipart, upload.key,
                                         {UPLOAD_TOKEN: upload.token}, upload.checksum)
    upload.parts = {}
    fs.journal.record(sid, entry)
    await fs.journal.sync()


def _streaming(fs: FileSystem, sid: str, fd: int, upload: journal.Upload) -> StreamingUpload:
    assert fs.nursery is not None and upload.upload_id is not None
    return StreamingUpload(fs.cold, fs.hot, fs.nursery, fd, upload.key, upload.upload_id,
                           upload.first_part, fs.config.upload_window, fs.part_recorder(sid),
                           upload.token, done=upload.parts, checksum=upload.checksum)


async def _abort(fs: FileSystem, upload: journal.Upload) -> int:
    """Abort an unfinished upload of this node; returns how many were aborted."""
    store = fs.cold.store
    ids = [upload.upload_id] if upload.upload_id else [
        uid for key, uid in await fs.cold.run(store.list_multipart, upload.key)
        if key == upload.key]
    for uid in ids:
        try:
            await fs.cold.run(store.abort_multipart, upload.key, uid)
        except ObjectStoreError as e:
            if "NoSuchUpload" not in str(e):
                raise
    return len(ids)


def _open_staging(fs: FileSystem, sid: str) -> int:
    return os.open(fs.hot.staging_dir / sid, os.O_RDWR | os.O_CLOEXEC)


async def _publish(fs: FileSystem, sid: str, entry: journal.Entry) -> None:
    fd = await fs.hot.run(_open_staging, fs, sid)
    try:
        mode = None
        try:
            st, target = await fs.warm.run(fs.warm.lstat_link, entry.path)
            if target is not None and looks_like_stub(target):
                mode = parse_stub(target, fs.config.bucket).mode
        except (FileNotFoundError, StubError):
            pass
        times = (entry.atime_ns, entry.mtime_ns)
        if not await _rename_staging(fs, sid, fd, entry, times, mode):
            tmp, _ = await fs.warm.run(fs.warm.publish_copy, entry.path, fd, entry.size,
                                       times, mode)
            if tmp is not None:
                await fs.warm.run(fs.warm.replace, tmp, entry.path)  # (file, dir) attrs unused
    finally:
        await fs.hot.run(os.close, fd)
    await fs.hot.run(fs.hot.remove_staging, sid)
    if entry.replaces is not None:
        await fs.cold.run(fs.cold.store.delete, entry.replaces)
    log.info("recovery: published %s", os.fsdecode(entry.path))


async def _finish_upload(fs: FileSystem, sid: str, entry: journal.Entry) -> None:
    upload = entry.upload
    assert upload is not None and fs.nursery is not None
    store = fs.cold.store
    if upload.upload_id is None:  # created (perhaps) but never recorded: start afresh
        await _abort(fs, upload)
        await _start_upload(fs, sid, entry)
    fd = await fs.hot.run(_open_staging, fs, sid)
    try:
        mode = 0o644
        try:
            st, target = await fs.warm.run(fs.warm.lstat_link, entry.path)
            if target is None:
                mode = stat.S_IMODE(st.st_mode)
        except FileNotFoundError:
            pass
        fs.journal.entries[sid] = entry
        streaming = _streaming(fs, sid, fd, upload)
        try:
            info = await streaming.finish(entry.size)
        except UploadGone:
            if streaming.punched:
                raise
            log.warning("recovery: the bucket dropped the unfinished upload of %s; all of the "
                        "file is still staged: uploading it again", os.fsdecode(entry.path))
            await _start_upload(fs, sid, entry)
            info = await _streaming(fs, sid, fd, upload).finish(entry.size)
        stub = Stub(info.key, info.size, info.etag, mode, entry.mtime_ns)
        await fs.warm.run(fs.warm.replace_symlink, entry.path, stub.encode(fs.config.bucket))
    finally:
        await fs.hot.run(os.close, fd)
    await fs.hot.run(fs.hot.remove_staging, sid)
    if entry.replaces not in (None, upload.key):
        await fs.cold.run(store.delete, entry.replaces)
    log.info("recovery: completed the upload of %s", os.fsdecode(entry.path))


def purge_temps(fs: FileSystem) -> int:
    """Remove this node's temp files from the whole namespace (blocking; after a crash)."""
    removed = 0
    pending = [b"."]
    while pending:
        here = pending.pop()
        try:
            names = _list(fs, here)
        except OSError:
            continue
        for name in names:
            child = join(here, name)
            if is_internal(name) and fs.warm.is_ours(name):
                try:
                    fs.warm.unlink(child)
                    removed += 1
                except OSError:
                    pass
                continue
            try:
                if stat.S_ISDIR(fs.warm.lstat(child).st_mode):
                    pending.append(child)
            except OSError:
                continue
    return removed


def _list(fs: FileSystem, rel: bytes) -> list[bytes]:
    fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fs.warm.fd)
    try:
        return [os.fsencode(n) for n in os.listdir(fd)]
    finally:
        os.close(fd)
