"""Cache and tier counters: kept in memory on the hot path, saved to the index in batches.

Incrementing is a dict update on the event loop; the filesystem's background task puts a
snapshot into the index batch once per flush interval, so no FUSE request ever opens a write
transaction for a counter. Totals are cumulative over the life of the hot tier's index, and
another process (``tierfs stats``) can read the last saved snapshot at any time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: Saved under this key of the ``meta`` database, as JSON.
KEY = b"counters"

NAMES = (
    "hits",            # block reads served by the hot tier (memory or disk)
    "misses",          # block reads that had to go to the warm or cold tier
    "bytes_hot",       # bytes returned to readers from the hot tier's block cache
    "bytes_warm",      # bytes returned to readers from the warm tier
    "bytes_cold",      # bytes returned to readers from the bucket
    "bytes_staged",    # bytes returned to readers from staging files (written, not published)
    "fetches_hot",     # block files read from the hot tier's disk (not hits from memory)
    "fetches_cold",    # ranged GETs of blocks
    "fetches_warm",    # block reads from warm files
    "evictions",       # blocks evicted (by the eviction policy or by ``tierfs evict``)
    "bytes_evicted",
    "stored",          # blocks written to the cache
    "rejected",        # fetched blocks not kept: the admission filter preferred what was cached
    "kept_written",    # blocks made from written data at its publish (not fetched again)
    "bytes_kept_written",
    "store_failures",  # blocks that could not be cached (disk full, I/O error): read through
    "bad_blocks",      # cached blocks that failed their checksum and were dropped
    "upload_errors",   # write-back publishes that failed (and were retried)
    "uploads_lost",    # unfinished uploads the bucket dropped after parts left staging
    "demotions",       # warm files moved to the bucket, leaving stubs (quota or on demand)
    "bytes_demoted",
    "demotions_discarded",  # demotions whose file changed while it uploaded (object deleted)
    "promotions",      # cold files brought back to the warm tier (``tierfs promote``)
    "bytes_promoted",
    "listings",        # directories listed to answer lookups in them (``vfs.listed``)
    "lookups_listed",  # lookups answered from those listings, with no warm call
)


class Counters:
    def __init__(self) -> None:
        self.values: dict[str, int] = dict.fromkeys(NAMES, 0)
        #: Gauges set by the cache: bytes and blocks currently cached.
        self.gauges: dict[str, int] = {"bytes_cached": 0, "blocks_cached": 0,
                                       "capacity": 0, "pinned_bytes": 0}
        self.changed = False

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount
        self.changed = True

    def evicted(self, blocks: int, nbytes: int) -> None:
        """Blocks dropped on request (``tierfs evict``) count as evictions too: a user who
        evicts and then looks at ``tierfs stats`` expects to see them."""
        if blocks or nbytes:
            self.add("evictions", blocks)
            self.add("bytes_evicted", nbytes)

    def set_gauge(self, name: str, value: int) -> None:
        self.gauges[name] = value
        self.changed = True

    def snapshot(self) -> dict[str, object]:
        return {"saved_at": time.time(), "counters": dict(self.values),
                "gauges": dict(self.gauges)}

    def encode(self) -> bytes:
        self.changed = False
        return json.dumps(self.snapshot(), sort_keys=True).encode()

    def restore(self, saved: bytes | None) -> None:
        """Continue the totals of an earlier mount (gauges are recomputed, not restored)."""
        if not saved:
            return
        try:
            values = json.loads(saved).get("counters", {})
        except ValueError:
            return
        for name in NAMES:
            if isinstance(values.get(name), int):
                self.values[name] = values[name]


def load_saved(hot_root: Path) -> dict[str, Any] | None:
    """The last snapshot a mount saved on this hot tier (read-only; safe while it runs)."""
    from tierfs.index import Index

    if not (hot_root / "index" / "data.mdb").exists():
        return None
    index = Index(hot_root / "index", readonly=True)
    try:
        raw = index.get("meta", KEY)
    finally:
        index.close()
    return None if raw is None else json.loads(raw)
