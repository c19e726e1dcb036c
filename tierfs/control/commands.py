"""What the control socket can be asked: each command translates a request into calls on the
filesystem core (its residency helper and cache) and its result back into JSON."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio

from tierfs.control.server import CommandError, Handler, Send
from tierfs.vfs.residency import FileState, Residency

if TYPE_CHECKING:
    from tierfs.vfs.filesystem import FileSystem

#: Seconds between progress lines.
PROGRESS_INTERVAL = 0.2


def _rel(path: object) -> bytes:
    """A path relative to the mount's root, as the warm tier names it."""
    if not isinstance(path, str):
        raise CommandError("paths must be strings")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or path.startswith("/"):
        raise CommandError(f"{path!r}: expected a path relative to the mount's root")
    return os.fsencode("/".join(parts)) if parts else b"."


def summary(path: str, states: list[FileState]) -> dict[str, Any]:
    """A path's totals: bytes per home tier, bytes hot, and bytes still to fetch."""
    cacheable = [s for s in states if s.source is not None]
    return {
        "path": path or ".",
        "files": len(states),
        "size": sum(s.size for s in states),
        "cold": sum(s.size for s in states if s.tier == "cold"),
        "warm": sum(s.size for s in states if s.tier == "warm"),
        "hot": sum(s.hot for s in states),
        "to_fetch": sum(s.size - s.hot for s in cacheable),
        "pinned": sum(s.size for s in states if s.pinned),
    }


def make_handlers(fs: FileSystem) -> dict[str, Handler]:
    residency = Residency(fs)

    async def states_of(request: dict[str, Any]) -> list[tuple[str, list[FileState]]]:
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths:
            raise CommandError("no paths given")
        out = []
        for path in paths:
            try:
                out.append((path, await residency.files(_rel(path))))
            except FileNotFoundError:
                raise CommandError(f"{path or '.'}: no such file or directory") from None
        return out

    async def warm(request: dict[str, Any], send: Send) -> Any:
        found = await states_of(request)
        if not request.get("check"):
            everything = [s for _, states in found for s in states]
            total = sum(s.size - s.hot for s in everything if s.source is not None)
            done = 0

            def progress(nbytes: int) -> None:
                nonlocal done
                done += nbytes

            async with trio.open_nursery() as nursery:
                async def report() -> None:
                    while True:
                        await send({"progress": done, "total": total})
                        await trio.sleep(PROGRESS_INTERVAL)

                nursery.start_soon(report)
                await residency.warm(everything, progress)
                nursery.cancel_scope.cancel()
            found = await states_of(request)
        return [summary(path, states) for path, states in found]

    return {"warm": warm}
