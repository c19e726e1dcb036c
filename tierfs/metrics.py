"""The opt-in Prometheus endpoint: the same counters as ``tierfs stats``, on 127.0.0.1 only.

A collector reads the live counters at each scrape (prometheus-client serves from its own
thread; the counters are plain integers, so a scrape sees each one whole).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from tierfs.cache.counters import NAMES

if TYPE_CHECKING:
    from tierfs.vfs.filesystem import FileSystem

#: What each counter is, for the HELP lines.
HELP = {
    "hits": "Block reads served by the hot tier",
    "misses": "Block reads that went to the warm tier or the bucket",
    "bytes_hot": "Bytes served from the hot tier's block cache",
    "bytes_warm": "Bytes served from the warm tier",
    "bytes_cold": "Bytes served from the bucket",
    "bytes_staged": "Bytes served from staging files",
    "fetches_hot": "Block files read from the hot tier's disk",
    "fetches_cold": "Ranged GETs of blocks",
    "fetches_warm": "Block reads from warm files",
    "evictions": "Blocks evicted from the hot tier",
    "bytes_evicted": "Bytes evicted from the hot tier",
    "stored": "Blocks written to the hot tier",
    "rejected": "Fetched blocks the admission filter did not keep",
    "store_failures": "Blocks that could not be cached",
    "bad_blocks": "Cached blocks that failed their checksum",
    "upload_errors": "Write-back publishes that failed and were retried",
    "uploads_lost": "Unfinished uploads the bucket dropped after parts had left staging",
    "demotions": "Warm files moved to the bucket, leaving stubs",
    "bytes_demoted": "Bytes moved from the warm tier to the bucket",
    "demotions_discarded": "Demotions given up because the file changed while it uploaded",
    "promotions": "Cold files brought back to the warm tier",
    "bytes_promoted": "Bytes brought back from the bucket to the warm tier",
}


class TierfsCollector(Collector):
    def __init__(self, fs: FileSystem) -> None:
        self.fs = fs

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        values = dict(self.fs.counters.values)
        for name in NAMES:
            yield CounterMetricFamily(f"tierfs_{name}", HELP.get(name, name),
                                      value=values.get(name, 0))
        gauges = dict(self.fs.counters.gauges)
        yield GaugeMetricFamily("tierfs_hot_bytes_cached", "Bytes in the hot tier's cache",
                                value=gauges.get("bytes_cached", 0))
        yield GaugeMetricFamily("tierfs_hot_capacity_bytes", "Capacity of the block cache",
                                value=gauges.get("capacity", 0))
        yield GaugeMetricFamily("tierfs_hot_pinned_bytes", "Pinned bytes on the hot tier",
                                value=gauges.get("pinned_bytes", 0))
        count, nbytes = self.fs.pending_uploads()
        yield GaugeMetricFamily("tierfs_pending_uploads", "Write-back files not yet home",
                                value=count)
        yield GaugeMetricFamily("tierfs_pending_upload_bytes", "Bytes not yet home",
                                value=nbytes)


def serve(fs: FileSystem, port: int) -> None:
    """Start the endpoint on 127.0.0.1:``port`` in a daemon thread."""
    registry = CollectorRegistry()
    registry.register(TierfsCollector(fs))
    start_http_server(port, addr="127.0.0.1", registry=registry)
