"""What the control socket can be asked: each command translates a request into calls on the
filesystem core (its residency helper and cache) and its result back into JSON."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio

from tierfs.control import moves
from tierfs.control.prefetch import make_prefetch_handler
from tierfs.control.server import CommandError, Handler, Send
from tierfs.stats import build as build_stats
from tierfs.stats import rates as stats_rates
from tierfs.vfs.residency import FileState, Residency

if TYPE_CHECKING:
    from tierfs.vfs.filesystem import FileSystem

#: Seconds between progress lines.
PROGRESS_INTERVAL = 0.2
#: Seconds the warm tier's disk figures may take before stats answers without them.
WARM_DISK_TIMEOUT = 1.0


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


async def summaries(found: list[tuple[str, list[FileState]]]) -> list[dict[str, Any]]:
    """``summary`` of each path, in a thread (a path may hold millions of files)."""
    return await trio.to_thread.run_sync(lambda: [summary(path, states)
                                                  for path, states in found])


def make_handlers(fs: FileSystem, mountpoint: str) -> dict[str, Handler]:
    residency = Residency(fs)
    fs.upkeep.start(residency.follow_pins)  # (pins are this module's: they follow paths)

    async def states_of(request: dict[str, Any]) -> list[tuple[str, list[FileState]]]:
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths:
            raise CommandError("no paths given")
        await fs.settle_names()  # (a file just created is on the warm tier once named)
        out = []
        for path in paths:
            try:
                out.append((path, await residency.files(_rel(path))))
            except FileNotFoundError:
                raise CommandError(f"{path or '.'}: no such file or directory") from None
        return out

    async def fetch(states: list[FileState], send: Send) -> None:
        """Fetch every block of ``states`` not yet hot, reporting progress."""
        total = sum(s.size - s.hot for s in states if s.source is not None)
        done = 0

        def progress(nbytes: int) -> None:
            nonlocal done
            done += nbytes

        failed: OSError | None = None
        async with trio.open_nursery() as nursery:
            async def report() -> None:
                while True:
                    await send({"progress": done, "total": total})
                    await trio.sleep(PROGRESS_INTERVAL)

            nursery.start_soon(report)
            try:
                await residency.warm(states, progress)
            except OSError as e:  # (said to the caller, not raised out of the nursery)
                failed = e
            nursery.cancel_scope.cancel()
        if failed is not None:
            raise CommandError(f"could not fetch all of it: {failed.strerror or failed}")

    async def warm(request: dict[str, Any], send: Send) -> Any:
        found = await states_of(request)
        if not request.get("check"):
            await fetch([s for _, states in found for s in states], send)
            found = await states_of(request)
        return await summaries(found)

    async def where(request: dict[str, Any], send: Send) -> Any:
        found = await states_of(request)
        # (Made in a thread: one entry per file, as many as the directory holds.)
        return await trio.to_thread.run_sync(lambda: [
            {**summary(path, states), "entries": [s.to_json() for s in states]}
            for path, states in found])

    async def pin(request: dict[str, Any], send: Send) -> Any:
        found = await states_of(request)
        pinned = request.get("pin", True)
        everything = [s for _, states in found for s in states]
        await residency.pin(everything, pinned, under=[_rel(path) for path, _ in found])
        if pinned:  # pinned data is fetched now and kept
            await fetch(everything, send)
        await fs.save_index()
        return await summaries(await states_of(request))

    async def evict(request: dict[str, Any], send: Send) -> Any:
        found = await states_of(request)
        freed = await residency.evict([s for _, states in found for s in states])
        await fs.save_index()
        return {"freed": freed, "paths": await summaries(await states_of(request))}

    async def flush(request: dict[str, Any], send: Send) -> Any:
        start_count, start_bytes = fs.pending_uploads()
        async with trio.open_nursery() as nursery:
            async def report() -> None:
                while True:
                    count, nbytes = fs.pending_uploads()
                    await send({"progress": max(0, start_bytes - nbytes), "total": start_bytes,
                                "pending": count})
                    await trio.sleep(PROGRESS_INTERVAL)

            nursery.start_soon(report)
            failed = await fs.flush_all()
            nursery.cancel_scope.cancel()
        await fs.save_index()
        count, nbytes = fs.pending_uploads()
        return {"flushed": start_count - len(failed), "pending": count,
                "pending_bytes": nbytes,
                "failed": [{"path": path, "error": why} for path, why in failed]}

    async def stats(request: dict[str, Any], send: Send) -> Any:
        return await stats_document(fs, mountpoint)

    async def health(request: dict[str, Any], send: Send) -> Any:
        return await fs.health()

    async def tiers(request: dict[str, Any], send: Send) -> Any:
        """Where this mount's tiers are and how its bucket is reached (``tierfs import`` into
        the mount uses the same); credentials are not configuration and are never sent."""
        config = fs.config
        return {"hot": str(config.hot), "warm": str(config.warm), "bucket": str(config.bucket),
                "endpoint_url": config.endpoint_url, "region": config.region,
                "addressing_style": config.addressing_style}

    handlers: dict[str, Handler] = {
        "warm": warm, "where": where, "pin": pin, "evict": evict, "flush": flush,
        "stats": stats, "health": health, "tiers": tiers}

    # -- order-aware prefetch (tierfs/control/prefetch.py) --------------------------------
    handlers.update(make_prefetch_handler(fs, residency, _rel))
    handlers.update(moves.make_handlers(fs, _rel))
    return handlers


async def stats_document(fs: FileSystem, mountpoint: str) -> dict[str, Any]:
    """Counters read on the event loop; the tiers' disks (statvfs of NFS, the staging
    directory) looked at in a thread of its own, not the warm tier's: those may all wait
    for a stalled server, and stats must answer then too (without the warm disk's figures
    if its statvfs hangs; ``Probes``)."""
    snapshot, pending = fs.counters.snapshot(), fs.pending_uploads()
    rates = stats_rates(list(fs.history))

    def build(warm_disk: bool = True) -> dict[str, Any]:
        return build_stats(snapshot, live=True, mountpoint=mountpoint, hot=str(fs.config.hot),
                           warm=str(fs.config.warm), bucket=str(fs.config.bucket),
                           pending=pending, rates=rates, warm_disk=warm_disk)

    try:
        return await fs.upkeep.probes.run("stats", WARM_DISK_TIMEOUT, build)
    except trio.TooSlowError:
        return await trio.to_thread.run_sync(build, False)
