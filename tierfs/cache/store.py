"""Block files on the hot tier: immutable, checksummed, written whole under a temp name.

Layout (version 1): ``<hot>/cache/v1/<first two hex digits>/<key in hex>``, with temp files in
``<hot>/cache/v1/tmp``. A block file holds exactly the block's bytes; its size and checksum live in
the block's index entry. A block is fsynced before it is renamed into place, so after a crash a
block file is either whole or absent; the index reconciles the two at mount. Every method
blocks: the cache calls them through the hot tier's threads.
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

LAYOUT = "v1"
#: O_DIRECT wants offsets, lengths and memory aligned to the logical block size (at most
#: 4 KiB on the disks a hot tier lives on).
DIRECT_ALIGN = 4096


def checksum(data: bytes | mmap.mmap) -> int:
    """XXH3 (64 bits): a block is verified at every load from disk, and at tens of GB/s
    this costs a fraction of the read itself (CRC-32 would cost about as much as the read)."""
    return xxhash.xxh3_64_intdigest(data)


class BlockFiles:
    def __init__(self, hot_root: Path) -> None:
        self.root = hot_root / "cache" / LAYOUT
        self.tmp = self.root / "tmp"
        #: Whether the hot tier's file system takes O_DIRECT (found out at the first read).
        self._direct = True

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, mode=0o700, exist_ok=True)
        for leftover in os.listdir(self.tmp):  # a crash mid-write: never renamed, never indexed
            os.unlink(self.tmp / leftover)

    def path(self, key: bytes) -> Path:
        name = key.hex()
        return self.root / name[:2] / name

    def write(self, key: bytes, data: bytes | mmap.mmap) -> None:
        tmp = self.tmp / uuid.uuid4().hex
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        target = self.path(key)
        try:
            os.rename(tmp, target)
        except FileNotFoundError:
            target.parent.mkdir(mode=0o700, exist_ok=True)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise

    def read(self, key: bytes, size: int, crc: int, pool: BufferPool | None = None
             ) -> bytes | mmap.mmap | None:
        """The block, or None when it is missing, of another size or fails its checksum.

        A block of the pool's size is read into one of its buffers, with O_DIRECT where the
        hot tier's file system has it: the block skips the page cache, which would cost a copy
        and hold the same bytes twice (the mount's own page cache keeps what was read).
        """
        if pool is not None and size == pool.size and size % DIRECT_ALIGN == 0:
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
        path = self.path(key)
        try:
            fd = self._open_direct(path)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size != size:
                return None
            buf = pool.take()
            try:
                n = os.preadv(fd, [buf], 0)
            except OSError as e:
                if e.errno != errno.EINVAL or not self._direct:
                    raise
                self._direct = False  # a disk with larger sectors than DIRECT_ALIGN
                os.close(fd)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                n = os.preadv(fd, [buf], 0)
        finally:
            os.close(fd)
        if n != size or checksum(buf) != crc:
            pool.give(buf)
            return None
        return buf

    def _open_direct(self, path: Path) -> int:
        if self._direct:
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._direct = False  # tmpfs, say: the page cache it is
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

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


def is_no_space(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)
