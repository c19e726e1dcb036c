"""The block cache as the last mount left it: index entries and block files made to agree.

Either side may be ahead of the other after a crash: a block file written whose entry never
reached the index, or an entry whose file was deleted (an eviction not yet committed). Both are
dropped here, once, at mount. What this cannot see (a file of the right name whose bytes a
crash tore) every load from the hot tier catches by size and checksum (``cache.store``).
"""

from __future__ import annotations

import logging
import struct

from tierfs.cache.entries import Entry
from tierfs.cache.store import BlockFiles
from tierfs.index import Index

log = logging.getLogger(__name__)

#: The index's databases of the cache: block key -> entry; pinned source id -> the path it
#: was pinned by.
DB = "blocks"
PINS = "pins"
#: The block size the cached blocks were cut with, in the index's ``meta``.
META = "meta"
BLOCK_SIZE = b"block_size"


def reconcile(files: BlockFiles, index: Index, block_size: int
              ) -> tuple[list[tuple[bytes, Entry]], dict[bytes, bytes]]:
    """The entries whose files are present, oldest access first, and the pins (blocking).
    All of them dropped if they were cached with another block size (or one not recorded):
    a block is named by its source and number, and block 1 of one size is other bytes than
    block 1 of another, sometimes of the same length."""
    files.prepare()
    stored: dict[bytes, Entry] = {}
    for key, raw in index.items(DB):
        try:
            stored[key] = Entry.decode(raw)
        except struct.error:
            stored[key] = Entry(0, 0)  # unreadable: dropped below
    pins = dict(index.items(PINS))
    present = set(files.keys())
    size = struct.pack(">Q", block_size)
    recorded = index.get(META, BLOCK_SIZE)
    if recorded != size:
        if stored:
            log.info("block cache: %d blocks cut with another block size dropped",
                     len(stored))
        stored = {k: Entry(0, 0) for k in stored}  # all dropped below
    stale = [k for k, e in stored.items() if k not in present or e.size == 0]
    orphans = present - stored.keys()
    for key in orphans:
        files.delete(key)
    for key in stale:
        files.delete(key)
        del stored[key]
    # The new size only with the old blocks gone: a crash before leaves them to drop next time.
    changes: dict[tuple[str, bytes], bytes | None] = {(DB, k): None for k in stale}
    if recorded != size:
        changes[(META, BLOCK_SIZE)] = size
    index.commit(changes)
    if orphans or stale:
        log.info("block cache: dropped %d files without an entry and %d entries without a "
                 "file", len(orphans), len(stale))
    return sorted(stored.items(), key=lambda item: item[1].seq), pins
