"""Blocks made from data just written: a published file's staging file becomes cached blocks of
the version it published, so the first read after a write is served by the hot tier instead of
downloading again what the node had a moment before.

The staging file is first renamed into the block store's temp folder (``take``), its
descriptor kept: from then on it is nobody's staging (recovery finds an entry without its file
and discards it, as after any publish) and, if the mount stops here, the next mount removes it
with the other temp files. Blocks are then made from it last first (``keep_written``), each
in its own hot-tier call: a block is copied by ``copy_file_range`` into a file of its own
(shared extents where the file system can reflink) and the staging file is cut before it, so
the hot disk never holds more than one block twice; block 0 is the staging file itself, cut to
one block and renamed into place, with no copy at all.

Each block is reserved first (``BlockCache.reserve_written``): it enters as any newcomer
would, within ``hot_capacity`` and weighed by the eviction policy, first block first; the first
block turned away ends the list, so a file larger than the room left keeps its beginning. A
block gets its entry only once its file is in place, with the checksum of the bytes it holds,
and readers use it at once. Its file is not fsynced, as a fetched block's is not: the publish
put the bytes home before they are kept, so a block is a copy of bytes its source keeps, and a
file a crash tore fails its size or checksum at its first load and is fetched again
(``cache.store``); an fsync would only make the hot disk write the whole file again at once,
beside whatever is written next. A block touching a range not in the staging file (punched
out once uploaded) is not kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import trio

from tierfs.cache.blocks import BlockCache
from tierfs.cache.entries import block_key
from tierfs.cache.store import BlockFiles, checksum

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Taken:
    """A published file's staging data, moved into the block store's temp folder."""

    path: Path
    fd: int
    size: int
    #: Renamed into place as block 0: nothing left to remove.
    placed: bool = False


def take(files: BlockFiles, staging: Path, fd: int, size: int) -> Taken | None:
    """Move a staging file of ``size`` bytes (``fd`` open on it) out of staging into the block
    store's temp folder; None, the file removed and ``fd`` closed, if it cannot be (another
    size than published, or another file system). Blocking: a hot-tier thread."""
    tmp = files.temp_path()
    try:
        if os.fstat(fd).st_size != size:
            raise OSError("the staging file is not the size published")
        os.rename(staging, tmp)
    except OSError as e:
        log.debug("written data not kept hot: %s", e)
        os.close(fd)
        _remove(staging)
        return None
    return Taken(tmp, fd, size)


def drop(taken: Taken) -> None:
    """Close the taken file and remove what is left of it (blocking)."""
    os.close(taken.fd)
    if not taken.placed:
        _remove(taken.path)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _make_block(files: BlockFiles, taken: Taken, key: bytes, start: int, length: int,
                buf: bytearray) -> int:
    """Make one block of the taken file, the last one left in it, and cut the file before
    it; the block's checksum (blocking)."""
    view = memoryview(buf)[:length]
    done = 0
    while done < length:
        n = os.preadv(taken.fd, [view[done:]], start + done)
        if not n:
            raise OSError(f"the staged data ends at {start + done}, short of its size")
        done += n
    crc = checksum(view)
    if start == 0:  # the staging file itself, cut to one block
        os.ftruncate(taken.fd, length)
        taken.placed = True  # (install removes it if the rename fails)
        files.install(taken.path, key)
    else:
        files.write_range(key, taken.fd, start, view)
        os.ftruncate(taken.fd, start)
    return crc


def _touches(start: int, length: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < offset + size and offset < start + length for offset, size in spans)


async def keep_written(cache: BlockCache, source_id: bytes, taken: Taken,
                       missing: list[tuple[int, int]]) -> int:
    """Make blocks of source ``source_id`` from the taken file, as many as the cache keeps;
    ``missing``: (offset, length) ranges not in the file. Returns the bytes kept. The taken
    file is gone afterwards, whatever happens."""
    block_size = cache.block_size
    plan: list[tuple[bytes, int, int]] = []
    kept = 0
    try:
        for start in range(0, taken.size, block_size):
            length = min(block_size, taken.size - start)
            if _touches(start, length, missing):
                continue
            key = block_key(source_id, start // block_size)
            reserved = await cache.reserve_written(key, length)
            if reserved is None:
                continue  # cached already
            if not reserved:
                break
            plan.append((key, start, length))
        buf = bytearray(min(block_size, taken.size))
        while plan:
            key, start, length = plan[-1]  # last first: the staging file shrinks as it goes
            try:
                crc: int | None = await cache.hot.run(_make_block, cache.files, taken, key,
                                                      start, length, buf)
            except OSError as e:
                log.warning("written data not kept hot past block %d: %s",
                            start // block_size, e)
                break
            plan.pop()
            cache.end_written(key, length, crc)
            kept += length
            cache.counters.add("kept_written")
            cache.counters.add("bytes_kept_written", length)
    finally:
        for key, _, length in plan:  # not made (an error, or cancelled)
            cache.end_written(key, length, None)
        with trio.CancelScope(shield=True):
            await cache.hot.run(drop, taken)
    return kept
