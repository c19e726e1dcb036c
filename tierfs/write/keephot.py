"""Written files stay hot: when a publish has put a file's data home, the bytes it staged on the
hot tier become cached blocks of the version just published (``cache/written.py``), named
exactly as a later read of that version names them, instead of being deleted: an object by its
key, ETag and size as the stub records them (``Reads.cold_source``), a warm file with warm
caching on by its ``warm_id`` as the publish left it (``Reads.warm_source``).

Only data that is the published version byte for byte is kept. A file published to the bucket:
staging is taken after the stub naming the new object is in place, while the publisher holds
the file's lock, and parts punched out of staging once uploaded are left out. A warm file
published by copy: staging is taken when the state is retired, only if nothing changed it
since that publish (``OpenFile.published_as``, forgotten at any move but to STAGED) and the
file still has a name. A rewrite is another version (another ETag; another inode, ctime or
size), hence other block names: the old version's blocks are never served for it. Publishing
by rename leaves nothing to keep: the staging file is the warm file.
"""

from __future__ import annotations

import logging
import os

from tierfs.cache.entries import cold_source_id, warm_source_id
from tierfs.cache.written import Taken, drop, keep_written, take
from tierfs.core.context import Core
from tierfs.core.openfile import WarmId
from tierfs.stubs import Stub

log = logging.getLogger(__name__)


async def take_staging(core: Core, sid: str | None, fd: int | None, size: int, keep: bool
                       ) -> Taken | None:
    """Close a published file's staging and remove it, or (``keep``: its data is home and
    named) take its bytes aside for ``keep_object``; None when nothing was taken (nothing
    staged, or the cache could keep none of it)."""
    if (not keep or sid is None or fd is None or size == 0
            or core.cache.capacity < min(size, core.cache.block_size)):
        await core.hot.run(_close_and_remove, core, sid, fd)
        return None
    return await core.hot.run(take, core.cache.files, core.hot.staging_dir / sid, fd, size)


async def keep_object(core: Core, taken: Taken, stub: Stub,
                      missing: list[tuple[int, int]]) -> int:
    """Make the taken bytes cached blocks of the object ``stub`` names; the bytes kept."""
    source = cold_source_id(str(core.config.bucket), stub.key, stub.etag, stub.size)
    kept = await _keep(core, source, taken, missing)
    log.debug("%d of %d written bytes of %s kept hot", kept, taken.size, stub.key)
    return kept


async def keep_warm(core: Core, taken: Taken, version: WarmId) -> int:
    """Make the taken bytes cached blocks of the warm file's ``version`` (as a later open
    finds it: ``Reads.warm_source``); the bytes kept."""
    ino, size, mtime_ns, ctime_ns = version
    if size != taken.size:  # (staging is that version: never so)
        await core.hot.run(drop, taken)
        return 0
    source = warm_source_id(str(core.config.warm), ino, size, mtime_ns, ctime_ns)
    return await _keep(core, source, taken, [])


async def _keep(core: Core, source: bytes, taken: Taken, missing: list[tuple[int, int]]
                ) -> int:
    """``keep_written``, whose failure never fails the publish it follows: the data is home,
    the cache only misses a chance."""
    try:
        return await keep_written(core.cache, source, taken, missing)
    except OSError as e:
        log.warning("written data not kept hot: %s", e)
        return 0


def _close_and_remove(core: Core, sid: str | None, fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
    if sid is not None:
        core.hot.remove_staging(sid)
