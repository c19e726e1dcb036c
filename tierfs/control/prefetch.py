"""The ``prefetch`` command: a job's reading order for a mount (``tierfs.cache.plan``).

A request names the files in the order they will be read, each a path relative to the mount's
root or ``{"path": ..., "offset": ..., "length": ...}`` for a byte range. An epoch of a large
dataset does not fit in one request line, so a plan may come in parts: the first request starts
it and gets its number back, the next ones name it (``"plan": number``) and append; every part
but the last says ``"more": true``. ``{"stop": true}`` drops the plan, ``{"status": true}``
reports on it (or on the last one, once it ended).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tierfs.cache.plan import Entry, Planner
from tierfs.control.server import CommandError, Handler, Send
from tierfs.vfs.residency import Residency

if TYPE_CHECKING:
    from tierfs.vfs.filesystem import FileSystem

#: Paths named in a result when some of a plan's do not exist.
SHOW_MISSING = 5


def _entry(item: object) -> tuple[str, int, int | None]:
    if isinstance(item, str):
        return item, 0, None
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        offset, length = item.get("offset", 0), item.get("length")
        if (isinstance(offset, int) and offset >= 0
                and (length is None or isinstance(length, int) and length >= 0)):
            return item["path"], offset, length
    raise CommandError("each path of a plan is a string or {path, offset, length}")


def _size(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or value <= 0:
        raise CommandError(f"{what}: expected a positive integer")
    return value


def make_prefetch_handler(fs: FileSystem, residency: Residency,
                          rel: Any) -> dict[str, Handler]:
    """``rel`` turns a request's path into the warm tier's (``commands._rel``)."""
    config = fs.config
    planner = Planner(fs.cache, lambda: fs.nursery,
                      window=min(config.prefetch_limit, fs.cache.capacity // 4),
                      fetches=config.cold_threads)

    async def prefetch(request: dict[str, Any], send: Send) -> Any:
        if request.get("stop"):
            planner.stop("stopped")
            return planner.status()
        if request.get("status"):
            return planner.status()
        items = request.get("paths")
        if not isinstance(items, list):
            raise CommandError("no paths given")
        wanted = [_entry(item) for item in items]
        resolved = await residency.resolve([rel(path) for path, _, _ in wanted])
        entries, missing = [], []
        for (path, offset, length), states in zip(wanted, resolved):
            if states is None:
                missing.append(path)
                continue
            entries += [Entry(s.path, s.source, offset, length)
                        for s in states if s.source is not None]
        more = bool(request.get("more"))
        number = request.get("plan")
        if number is None:
            planner.start(entries, complete=not more,
                          window=_size(request.get("window"), "window"),
                          fetches=_size(request.get("fetches"), "fetches"))
        else:
            current = planner.current
            if current is None or current.number != number:
                raise CommandError(f"plan {number} is not running (it ended or was replaced)")
            planner.add(current, entries, complete=not more)
        status = planner.status()
        assert status is not None
        status["missing"] = len(missing)
        status["missing_paths"] = missing[:SHOW_MISSING]
        return status

    return {"prefetch": prefetch}
