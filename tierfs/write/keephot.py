"""Written files stay hot: when a publish has put a file's data home, the bytes it staged on the
hot tier become cached blocks of the version just published (``cache/written.py``), named
exactly as a later read of that version names them (``Reads.cold_source``: the object's key and
ETag as the stub records them), instead of being deleted.

Only data that is the published version byte for byte is kept: staging is taken after the stub
naming the new object is in place and before anything else can change it (the publisher holds
the file's lock and the staging file leaves staging in the same call that closes the writer's
descriptor), and parts punched out of staging once uploaded are left out. A rewrite gets a new
ETag, hence other block names: the old version's blocks are never served for it.
"""

from __future__ import annotations

import logging
import os

from tierfs.cache.blocks import cold_source_id
from tierfs.cache.written import Taken, keep_written, take
from tierfs.core.context import Core
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
    source = cold_source_id(str(core.config.bucket), stub.key, stub.etag)
    kept = await keep_written(core.cache, source, taken, missing)
    log.debug("%d of %d written bytes of %s kept hot", kept, taken.size, stub.key)
    return kept


def _close_and_remove(core: Core, sid: str | None, fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
    if sid is not None:
        core.hot.remove_staging(sid)
