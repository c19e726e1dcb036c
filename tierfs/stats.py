"""The ``tierfs stats`` document: one versioned JSON shape, built from a running mount's live
figures or from the last snapshot a mount saved in its index.

Schema version 1 (documented in docs/stats.md)::

    {"schema": 1, "live": bool, "mountpoint": str | null, "saved_at": float,
     "tiers": {
       "hot":  {"path", "used", "capacity", "usable_capacity", "blocks", "pinned",
                "staged_files", "staged_bytes", "hit_ratio", "hits", "misses",
                "bytes_served", "evictions", "bytes_evicted", "kept_written",
                "disk_free"},
       "warm": {"path", "bytes_served", "fetches", "disk_used", "disk_size", "usage",
                "demotions", "bytes_demoted", "demotions_discarded", "promotions",
                "bytes_promoted"},
       "cold": {"bucket", "bytes_served", "fetches", "pending_uploads",
                "pending_bytes", "upload_errors", "uploads_lost"}},
     "rates": {"interval", "hot", "warm", "cold"} | null,
     "counters": {...every counter...},
     "roots": {NAME: {"hot": {"path", "used", "capacity", "blocks", "pinned",
                              "staged_files", "staged_bytes"},
                      "warm": {...as above}, "cold": {...as above}}}}

``roots`` is there only for a mount with named warm roots (``--warm NAME=DIR``); its
``tiers`` then add up the roots' figures, ``tiers.warm.path`` naming them all.

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
                "kept_written": counters.get("bytes_kept_written", 0),
                "disk_free": hot_free,
            },
            "warm": {
                "path": warm,
                "bytes_served": counters.get("bytes_warm", 0) + counters.get("bytes_staged", 0),
                "fetches": counters.get("fetches_warm", 0),
                "disk_used": warm_used,
                "disk_size": warm_size,
                "usage": gauges.get("warm_usage"),
                "demotions": counters.get("demotions", 0),
                "bytes_demoted": counters.get("bytes_demoted", 0),
                "demotions_discarded": counters.get("demotions_discarded", 0),
                "promotions": counters.get("promotions", 0),
                "bytes_promoted": counters.get("bytes_promoted", 0),
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


def sum_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Counter snapshots of several roots as one (each counter and gauge added up)."""
    out: dict[str, Any] = {"saved_at": max((s.get("saved_at", 0) for s in snapshots),
                                           default=time.time()),
                           "counters": {}, "gauges": {}}
    for snapshot in snapshots:
        for part in ("counters", "gauges"):
            for name, value in snapshot.get(part, {}).items():
                out[part][name] = out[part].get(name, 0) + value
    return out


#: A root's hot figures shown in its row (its share of the cache, its staged files).
ROOT_HOT = ("path", "used", "capacity", "blocks", "pinned", "staged_files", "staged_bytes")


def with_roots(doc: dict[str, Any], roots: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A mount with named roots: ``doc`` (the whole mount, built from the roots' counters
    added up) with each root's own document's rows under ``roots``, and the staged files
    and warm disks added up from them."""
    doc["roots"] = {name: {"hot": {k: d["tiers"]["hot"][k] for k in ROOT_HOT},
                           "warm": d["tiers"]["warm"], "cold": d["tiers"]["cold"]}
                    for name, d in roots.items()}
    rows = doc["roots"].values()
    for name in ("staged_files", "staged_bytes"):
        doc["tiers"]["hot"][name] = sum(r["hot"][name] for r in rows)
    for name in ("disk_used", "disk_size"):
        doc["tiers"]["warm"][name] = sum(r["warm"][name] for r in rows)
    return doc
