"""Block files on the hot tier: immutable, checksummed, checked at every load.

Layout (version 1): ``<hot>/cache/v1/<first two hex digits>/<key in hex>``, with temp files in
``<hot>/cache/v1/tmp``. A block file holds exactly the block's bytes; its size and checksum live in
the block's index entry. A fetched block is a copy of bytes its source keeps, so it is written
straight to its name and not fsynced: its entry is made only once the file is whole, and every
load checks the file's size and checksum, so a file torn by a crash (the daemon killed
mid-write, or the machine losing what the page cache had not yet written) is dropped and fetched
again, never served. A temp file, an fsync and a rename per block cost about twice the CPU of
the write itself (docs/performance.md). A block made from written data (``write_range``) goes
through a temp file, renamed into place once whole; it is not fsynced either, being a copy of
bytes already home. The index reconciles entries and files at mount. Every method blocks: the
cache calls them through the hot tier's threads.
"""

from __future__ import annotations

import errno
import mmap
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import xxhash

from tierfs.cache.buffers import BufferPool
from tierfs.errors import MountError
from tierfs.tiers.base import pwrite_all
from tierfs.tiers.hot import FOLDER_MODE, create_own_file, own_folder

LAYOUT = "v1"
#: Blocks are read from disk in steps of this size, the kernel's usual read-ahead window: each
#: step then finds the pages the last one started reading. bench/hotread.py compares it with
#: whole-block reads, O_DIRECT and MAP_POPULATE; with four blocks loading at once, as the cache
#: loads them, it was the fastest on the disk measured (README, "Performance").
READ_STEP = 128 * 1024


def checksum(data: bytes | mmap.mmap | memoryview) -> int:
    """XXH3 (64 bits): a block is verified at every load from disk, and at tens of GB/s
    this costs a fraction of the read itself (CRC-32 would cost about as much as the read)."""
    return xxhash.xxh3_64_intdigest(data)


class BlockFiles:
    def __init__(self, hot_root: Path) -> None:
        self.root = hot_root / "cache" / LAYOUT
        self.tmp = self.root / "tmp"

    def prepare(self) -> None:
        """Make (or check) the cache's folders, 0700 and the mount's user's (see
        tiers/hot.py). Anything but such a folder at ``cache`` is refused (MountError);
        below it, anything else where a folder of blocks goes (a symlink, which would have
        blocks written wherever it points) is removed, never followed. The cache loses nothing
        by it: the index drops entries whose file is gone."""
        try:
            own_folder(self.root.parent)
            for d in (self.root, self.tmp):
                own_folder(d, replace=True)
        except OSError as e:
            raise MountError(f"hot tier: {e.strerror or e}") from None
        for entry in os.scandir(self.root):
            if entry.name == self.tmp.name:
                continue
            if entry.is_dir(follow_symlinks=False):
                own_folder(Path(entry.path), replace=True)
            else:
                os.unlink(entry.path)  # not ours: nothing else belongs here
        for leftover in os.listdir(self.tmp):  # a crash mid-write: never renamed, never indexed
            os.unlink(self.tmp / leftover)

    def path(self, key: bytes) -> Path:
        name = key.hex()
        return self.root / name[:2] / name

    def write(self, key: bytes, data: bytes | mmap.mmap) -> None:
        """A fetched block's file, written under its own name (removed on failure). A file
        left there (a store racing the delete of an evicted copy) is replaced by a new one,
        never rewritten: a reader of the old one keeps reading what it opened."""
        target = self.path(key)
        fd = self._create(target)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(target)
            raise
        os.close(fd)

    def write_many(self, blocks: list[tuple[bytes, bytes | mmap.mmap]]
                   ) -> dict[bytes, int | OSError]:
        """Write several blocks (``write``): each one's checksum, or why it was not written."""
        out: dict[bytes, int | OSError] = {}
        for key, data in blocks:
            try:
                self.write(key, data)
            except OSError as e:
                out[key] = e
            else:
                out[key] = checksum(data)
        return out

    @staticmethod
    def _create(target: Path) -> int:
        try:
            return create_own_file(target)
        except FileNotFoundError:
            _make_folder(target)
        except FileExistsError:
            os.unlink(target)
        return create_own_file(target)

    def install(self, tmp: Path, key: bytes) -> None:
        """Rename a whole file into place as a block's file (removed on failure)."""
        target = self.path(key)
        try:
            os.rename(tmp, target)
        except FileNotFoundError:
            _make_folder(target)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise

    def temp_path(self) -> Path:
        """A fresh name in the temp folder (whatever is left there at mount is removed)."""
        return self.tmp / uuid.uuid4().hex

    def write_range(self, key: bytes, src: int, offset: int, data: memoryview) -> None:
        """Write a block whose bytes are ``data``, also found at ``offset`` in the file
        ``src``: copied in the kernel from there (``copy_file_range``: shared extents where
        the file system can reflink, no trip through this process otherwise), or written from
        ``data`` where the kernel cannot copy between the two. Not fsynced (see the module's
        docstring)."""
        tmp = self.temp_path()
        fd = create_own_file(tmp)
        try:
            done = 0
            try:
                while done < len(data):
                    n = os.copy_file_range(src, fd, len(data) - done, offset + done, done)
                    if not n:
                        break
                    done += n
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
            if done != len(data):
                os.ftruncate(fd, 0)
                pwrite_all(fd, data, 0)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        self.install(tmp, key)

    def read(self, key: bytes, size: int, crc: int, pool: BufferPool | None = None
             ) -> bytes | mmap.mmap | None:
        """The block, or None when it is missing, of another size or fails its checksum.

        A block of the pool's size is read into one of its buffers and dropped from the page
        cache after: the mount's own page cache keeps what was read, the same bytes would
        otherwise be held twice.
        """
        if pool is not None and size == pool.size:
            return self._read_into(key, size, crc, pool)
        try:
            fd = os.open(self.path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, size + 1, 0)
        finally:
            os.close(fd)
        if len(data) != size or checksum(data) != crc:
            return None
        return data

    def _read_into(self, key: bytes, size: int, crc: int, pool: BufferPool) -> mmap.mmap | None:
        try:
            fd = os.open(self.path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size != size:
                return None
            buf = pool.take()
            n = read_steps(fd, buf, size)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        if n != size or checksum(buf) != crc:
            pool.give(buf)
            return None
        return buf

    def delete(self, key: bytes) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def keys(self) -> Iterator[bytes]:
        """Every block file present (not temp files)."""
        for sub in os.scandir(self.root):
            if sub.name == "tmp" or not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                try:
                    yield bytes.fromhex(entry.name)
                except ValueError:
                    os.unlink(entry.path)  # not ours: nothing else belongs here


def read_steps(fd: int, buf: mmap.mmap, size: int) -> int:
    """Read up to ``size`` bytes from the start of ``fd`` into ``buf``, ``READ_STEP`` at a
    time; the bytes read (fewer at end of file)."""
    view = memoryview(buf)
    try:
        done = 0
        while done < size:
            n = os.preadv(fd, [view[done:min(size, done + READ_STEP)]], done)
            if not n:
                break
            done += n
        return done
    finally:
        view.release()  # the pool reuses the buffer only when nothing refers to it


def _make_folder(target: Path) -> None:
    """The folder of a block's file, made if missing (in a folder of our own, 0700: nobody
    else can have put a link there)."""
    try:
        os.mkdir(target.parent, FOLDER_MODE)
    except FileExistsError:
        pass


def is_no_space(e: object) -> bool:
    """Whether ``e`` is an OSError saying the disk (or the user's quota) is full."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
