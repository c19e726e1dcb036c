"""``tierfs warm --ray``: warm every node of a Ray cluster, each through its own mount.

A hot tier is one node's disk, so a job about to read a dataset on every node of a cluster
needs it warmed on each of them. One Ray task per alive node, pinned there by node affinity,
asks that node's mount to warm the paths over the same control socket ``tierfs warm`` uses;
the tasks report their bytes to one small actor, which the command reads for one progress bar
over the whole cluster.

Which mount a node uses: the one holding the path there (the usual case, every node mounting
tierfs at the same mount point), or, on a node whose environment names its mount point in
``TIERFS_MOUNT`` (set where the node's Ray is started), the path's part below the mount point
here taken below that node's mount point instead.

Importing this module imports Ray (the extra ``tierfs[ray]``): the command line imports it only
for ``--ray``, so tierfs itself never needs Ray.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tierfs.errors import TierfsError

#: A node's environment variable naming that node's mount point.
MOUNT_ENV = "TIERFS_MOUNT"
#: Seconds between reads of the cluster's progress.
POLL_INTERVAL = 0.2


class ClusterError(TierfsError):
    pass


@ray.remote(num_cpus=0)
class Progress:
    """Bytes fetched and to fetch, per node, as the nodes' tasks last reported them."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[int, int]] = {}

    def report(self, node: str, done: int, total: int) -> None:
        self.nodes[node] = (done, total)

    def totals(self) -> tuple[int, int]:
        return (sum(d for d, _ in self.nodes.values()),
                sum(t for _, t in self.nodes.values()))


def node_path(path: str, here: str | None, there: str | None) -> str:
    """``path`` (absolute, as named where the command runs) as a node names it: below the
    node's own mount point ``there`` when it has one, in place of the mount point ``here``
    holding it where the command runs."""
    if there is None:
        return path
    if here is not None:
        rel = os.path.relpath(path, here)
        return there if rel == "." else os.path.join(there, rel)
    if path == there or path.startswith(there.rstrip("/") + "/"):
        return path
    raise ClusterError(f"{path} is not inside a tierfs mount where the command runs, so it "
                       f"cannot be found below this node's {MOUNT_ENV}={there}")


@ray.remote(num_cpus=0)
def _warm_node(node: str, paths: list[tuple[str, str | None]], check: bool,
               progress: Any) -> dict[str, Any]:
    """On one node: warm (or check) the paths through this node's mount."""
    from tierfs.control.client import call, locate

    there = os.environ.get(MOUNT_ENV) or None
    out: dict[str, Any] = {"node": node, "host": socket.gethostname(), "results": []}
    groups: dict[Any, list[str]] = {}
    for path, here in paths:
        record, rel = locate(node_path(path, here, there))
        if there is not None and record.mountpoint != os.path.normpath(there):
            raise ClusterError(f"{path} is in the mount on {record.mountpoint}, not in this "
                               f"node's {MOUNT_ENV}={there}")
        groups.setdefault(record, []).append(rel)
    last = 0.0
    fetched = 0  # bytes fetched by the mounts done with (a node may mount several)
    for record, rels in groups.items():
        out["mountpoint"] = record.mountpoint
        seen = {"progress": 0, "total": 0}

        def report(message: dict[str, Any], final: bool = False) -> None:
            nonlocal last
            seen.update(progress=message["progress"], total=message["total"])
            now = time.monotonic()
            if final or now - last >= POLL_INTERVAL:  # (one actor call a poll at most)
                last = now
                sent = progress.report.remote(node, fetched + message["progress"],
                                              fetched + message["total"])
                if final:  # (in before the task ends, so the last totals read hold it)
                    ray.get(sent)

        found = call(record, {"cmd": "warm", "paths": rels, "check": check},
                     None if check else report)
        if not check:
            report({"progress": seen["total"], "total": seen["total"]}, final=True)
        fetched += seen["total"]
        out["results"] += found
    return out


def alive_nodes() -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def warm_cluster(paths: list[tuple[str, str | None]], address: str | None, check: bool,
                 on_progress: Callable[[int, int], None] | None = None
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Warm ``paths`` (each with the mount point holding it here, or None) on every alive
    node of the cluster at ``address`` (``auto``: the one this machine belongs to). Returns
    the results of the nodes that did it and a line for each node that failed (one node
    without its mount does not keep the others cold)."""
    try:
        ray.init(address=address or "auto", log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError) as e:  # (no cluster there, or not a Ray address)
        raise ClusterError(f"cannot connect to the Ray cluster at {address or 'auto'}: {e}"
                           ) from None
    try:
        nodes = alive_nodes()
        if not nodes:
            raise ClusterError("the Ray cluster has no alive node")
        progress = Progress.remote()
        pending = {
            _warm_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node_id=node, soft=False)).remote(node, paths, check, progress): node
            for node in nodes}
        results: list[dict[str, Any]] = []
        failed: list[str] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_INTERVAL)
            for ref in ready:
                node = pending.pop(ref)
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayError as e:
                    failed.append(f"node {node}: {_cause(e)}")
            if on_progress is not None:
                on_progress(*ray.get(progress.totals.remote()))
        return sorted(results, key=lambda r: (r["host"], r["node"])), failed
    finally:
        ray.shutdown()


def _cause(error: BaseException) -> str:
    """A task's own error message (a TierfsError raised on the node), not Ray's traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, TierfsError):
        return str(cause)
    return str(error).strip().splitlines()[-1]
