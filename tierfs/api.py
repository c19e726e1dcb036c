"""The Python face of running mounts, for training code: the control commands, found by path.

Each function takes paths as a user sees them (inside a mount point), finds the mount that holds
each one (``control.client.locate``) and asks it over its control socket, exactly as the
``tierfs`` commands do; results are plain dicts and lists, as ``--json`` prints them. A path
outside every running mount raises ``NotInMount`` (a ``TierfsError``), a refused request
``ControlError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from tierfs.control import registry
from tierfs.control.client import ControlError, NotInMount, call, locate
from tierfs.control.registry import MountRecord
from tierfs.errors import TierfsError

__all__ = ["ControlError", "NotInMount", "TierfsError", "prefetch", "stats", "stop_prefetch",
           "warm", "where"]

PathLike = str | os.PathLike[str]
#: A plan's item: a path, or (path, offset, length) for a byte range of it.
PlanItem = PathLike | tuple[PathLike, int, int]
#: Bytes of paths per prefetch request (a request line may not pass 1 MiB).
PLAN_CHUNK = 256 * 1024


def _grouped(paths: Iterable[PathLike]) -> list[tuple[MountRecord, list[tuple[int, str]]]]:
    """Paths by mount, in first-seen order, each with its place in the input. The live mounts
    are looked up once for all the paths: an epoch's plan names every file of the dataset."""
    groups: dict[str, tuple[MountRecord, list[tuple[int, str]]]] = {}
    records = registry.mounts()
    for i, path in enumerate(paths):
        record, rel = locate(os.fspath(path), records)
        groups.setdefault(record.mountpoint, (record, []))[1].append((i, rel))
    return list(groups.values())


def warm(paths: PathLike | Sequence[PathLike], check: bool = False) -> list[dict[str, Any]]:
    """Fetch every block of ``paths`` (files or directories) to the hot tier, and return
    each path's totals (``tierfs warm --json``); ``check``: only report."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[dict[str, Any] | None] = [None] * len(items)
    for record, group in _grouped(items):
        result = call(record, {"cmd": "warm", "paths": [rel for _, rel in group],
                               "check": check})
        for (i, _), summary in zip(group, result):
            out[i] = summary
    return [s for s in out if s is not None]


def where(path: PathLike) -> dict[str, Any]:
    """Where a path's bytes are: totals per tier and each file's (``tierfs where --json``)."""
    record, rel = locate(os.fspath(path))
    result = call(record, {"cmd": "where", "paths": [rel]})
    return dict(result[0])


def stats(mount: PathLike) -> dict[str, Any]:
    """The mount's counters, gauges and rates (``tierfs stats --json``); ``mount`` is any
    path inside it."""
    record, _ = locate(os.fspath(mount))
    return dict(call(record, {"cmd": "stats"}))


def _item(item: PlanItem) -> tuple[str, int | None, int | None]:
    if isinstance(item, tuple):
        path, offset, length = item
        return os.fspath(path), int(offset), int(length)
    return os.fspath(item), None, None


def prefetch(paths: Iterable[PlanItem], *, window: int | None = None,
             fetches: int | None = None) -> list[dict[str, Any]]:
    """Hand the mounts the order in which the caller will read ``paths`` (files, or
    ``(path, offset, length)`` ranges): each mount fetches ahead along it and keeps what comes
    next (``tierfs.cache.plan``). A new plan replaces the mount's previous one. ``window``
    (bytes fetched ahead) and ``fetches`` (GETs at once) override the mount's defaults.
    Returns each mount's plan status, with its mount point."""
    items = [_item(item) for item in paths]
    out = []
    for record, group in _grouped(path for path, _, _ in items):
        requests: list[list[Any]] = [[]]
        size = 0
        for i, rel in group:
            _, offset, length = items[i]
            entry: Any = rel if offset is None else {"path": rel, "offset": offset,
                                                    "length": length}
            cost = len(json.dumps(entry)) + 2
            if size + cost > PLAN_CHUNK and requests[-1]:
                requests.append([])
                size = 0
            requests[-1].append(entry)
            size += cost
        number = None
        status: dict[str, Any] = {}
        for n, chunk in enumerate(requests):
            request: dict[str, Any] = {"cmd": "prefetch", "paths": chunk,
                                       "more": n + 1 < len(requests)}
            if number is None:
                request.update({k: v for k, v in (("window", window), ("fetches", fetches))
                                if v is not None})
            else:
                request["plan"] = number
            status = dict(call(record, request))
            number = status["plan"]
        status["mountpoint"] = record.mountpoint
        out.append(status)
    return out


def stop_prefetch(mount: PathLike) -> dict[str, Any] | None:
    """Drop the mount's plan; returns its last status (None if it never had one)."""
    record, _ = locate(os.fspath(mount))
    return call(record, {"cmd": "prefetch", "stop": True})  # type: ignore[no-any-return]
