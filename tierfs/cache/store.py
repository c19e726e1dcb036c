"""Block files on the hot tier: immutable, checksummed, written whole under a temp name.

Layout (version 1): ``<hot>/cache/v1/<first two hex digits>/<key in hex>``, with temp files in
``<hot>/cache/v1/tmp``. A block file holds exactly the block's bytes; its size and checksum live in
the block's index entry. A block is fsynced before it is renamed into place, so after a crash a
block file is either whole or absent; the index reconciles the two at mount. Every method
blocks: the cache calls them through the hot tier's threads.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import xxhash

LAYOUT = "v1"


def checksum(data: bytes) -> int:
    """XXH3 (64 bits): a block is verified at every load from disk, and at tens of GB/s
    this costs a fraction of the read itself (CRC-32 would cost about as much as the read)."""
    return xxhash.xxh3_64_intdigest(data)


class BlockFiles:
    def __init__(self, hot_root: Path) -> None:
        self.root = hot_root / "cache" / LAYOUT
        self.tmp = self.root / "tmp"

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, mode=0o700, exist_ok=True)
        for leftover in os.listdir(self.tmp):  # a crash mid-write: never renamed, never indexed
            os.unlink(self.tmp / leftover)

    def path(self, key: bytes) -> Path:
        name = key.hex()
        return self.root / name[:2] / name

    def write(self, key: bytes, data: bytes) -> None:
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

    def read(self, key: bytes, size: int, crc: int) -> bytes | None:
        """The block, or None when it is missing, short or fails its checksum."""
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
