"""The ``tierfs stats`` document: one versioned JSON shape, built from a running mount's live
figures or from the last snapshot a mount saved in its index.

Schema version 1 (documented in docs/stats.md)::

    {"schema": 1, "live": bool, "mountpoint": str | null, "saved_at": float,
     "tiers": {
       "hot":  {"path", "used", "capacity", "usable_capacity", "blocks", "pinned",
                "staged_files", "staged_bytes", "hit_ratio", "hits", "misses",
                "bytes_served", "evictions", "bytes_evicted", "disk_free"},
       "warm": {"path", "bytes_served", "fetches", "disk_used", "disk_size"},
       "cold": {"bucket", "bytes_served", "fetches", "pending_uploads",
                "pending_bytes", "upload_errors", "uploads_lost"}},
     "rates": {"interval", "hot", "warm", "cold"} | null,
     "counters": {...every counter...}}

Sizes are bytes; rates are bytes per second over the last ``interval`` seconds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tierfs.cache.capacity import usable_capacity

SCHEMA = 1


def _disk(path: str) -> tuple[int, int, int]:
    """(size, used, free) of the file system holding ``path``; zeros if unreachable."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0, 0, 0
    size = st.f_blocks * st.f_frsize
    return size, size - st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize


def staged(hot: str) -> tuple[int, int]:
    """Staging files on the hot tier: (count, bytes allocated)."""
    count = used = 0
    try:
        with os.scandir(Path(hot) / "staging") as it:
            for entry in it:
                try:
                    used += entry.stat().st_blocks * 512
                    count += 1
                except OSError:
                    continue
    except OSError:
        pass
    return count, used


def build(snapshot: dict[str, Any], *, live: bool, mountpoint: str | None, hot: str,
          warm: str, bucket: str, pending: tuple[int, int] = (0, 0),
          rates: dict[str, float] | None = None, warm_disk: bool = True) -> dict[str, Any]:
    """The stats document; ``warm_disk`` False leaves the warm tier's disk figures at zero
    (a stalled warm tier, whose statvfs would not return)."""
    counters: dict[str, int] = dict(snapshot.get("counters", {}))
    gauges: dict[str, int] = dict(snapshot.get("gauges", {}))
    hits, misses = counters.get("hits", 0), counters.get("misses", 0)
    staged_files, staged_bytes = staged(hot)
    warm_size, warm_used, _ = _disk(warm) if warm_disk else (0, 0, 0)
    hot_free = _disk(hot)[2]
    used, capacity = gauges.get("bytes_cached", 0), gauges.get("capacity", 0)
    return {
        "schema": SCHEMA,
        "live": live,
        "mountpoint": mountpoint,
        "saved_at": snapshot.get("saved_at", time.time()),
        "tiers": {
            "hot": {
                "path": hot,
                "used": used,
                "capacity": capacity,
                "usable_capacity": usable_capacity(capacity, used, hot_free),
                "blocks": gauges.get("blocks_cached", 0),
                "pinned": gauges.get("pinned_bytes", 0),
                "staged_files": staged_files,
                "staged_bytes": staged_bytes,
                "hit_ratio": hits / (hits + misses) if hits + misses else None,
                "hits": hits,
                "misses": misses,
                "bytes_served": counters.get("bytes_hot", 0),
                "fetches": counters.get("fetches_hot", 0),
                "evictions": counters.get("evictions", 0),
                "bytes_evicted": counters.get("bytes_evicted", 0),
                "disk_free": hot_free,
            },
            "warm": {
                "path": warm,
                "bytes_served": counters.get("bytes_warm", 0) + counters.get("bytes_staged", 0),
                "fetches": counters.get("fetches_warm", 0),
                "disk_used": warm_used,
                "disk_size": warm_size,
            },
            "cold": {
                "bucket": bucket,
                "bytes_served": counters.get("bytes_cold", 0),
                "fetches": counters.get("fetches_cold", 0),
                "pending_uploads": pending[0],
                "pending_bytes": pending[1],
                "upload_errors": counters.get("upload_errors", 0),
                "uploads_lost": counters.get("uploads_lost", 0),
            },
        },
        "rates": rates,
        "counters": counters,
    }


def rates(history: list[tuple[float, dict[str, int]]]) -> dict[str, float] | None:
    """Bytes per second served by each tier between the oldest and newest sample."""
    if len(history) < 2:
        return None
    (t0, first), (t1, last) = history[0], history[-1]
    dt = t1 - t0
    if dt <= 0:
        return None

    def rate(*names: str) -> float:
        return sum(last.get(n, 0) - first.get(n, 0) for n in names) / dt

    return {"interval": dt, "hot": rate("bytes_hot"),
            "warm": rate("bytes_warm", "bytes_staged"), "cold": rate("bytes_cold")}
