"""The control socket of a mount with named roots: each request is answered by the roots it
names. A path's first component is its root (``cluster/datasets/x`` is ``datasets/x`` in the
root ``cluster``), the mount's top (``.``) is every root, and each root answers with its own
handlers (``control.commands``); paths in the answers are the mount's again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from tierfs.control.commands import make_handlers, stats_document
from tierfs.control.server import CommandError, Handler, Send
from tierfs.stats import build as build_stats
from tierfs.stats import sum_snapshots, with_roots

if TYPE_CHECKING:
    from tierfs.vfs.roots import Root, Roots

#: Figures of a path's summary that add up over roots.
SUMMED = ("files", "size", "cold", "warm", "hot", "to_fetch", "pinned")


def _join(name: str, path: str) -> str:
    return name if path in ("", ".") else f"{name}/{path}"


def _merge(path: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One path's summary from its roots' (the top: several)."""
    out: dict[str, Any] = {"path": path or "."}
    for name in SUMMED:
        out[name] = sum(p[name] for p in parts)
    if any("entries" in p for p in parts):
        out["entries"] = [e for p in parts for e in p.get("entries", [])]
    return out


def make_root_handlers(roots: Roots, mountpoint: str) -> dict[str, Handler]:
    handlers = {root.name: make_handlers(root.fs, mountpoint) for root in roots.roots}

    def targets(path: object) -> list[tuple[Root, str]]:
        if not isinstance(path, str):
            raise CommandError("paths must be strings")
        try:
            found = roots.root_of(path)
        except KeyError:
            raise CommandError(f"{path}: no such file or directory") from None
        if found is None:
            return [(root, ".") for root in roots.roots]
        root, sub = found
        return [(root, sub or ".")]

    async def ask(root: Root, cmd: str, request: dict[str, Any], sub: str, path: str,
                  send: Send) -> Any:
        try:
            return await handlers[root.name][cmd]({**request, "paths": [sub]}, send)
        except CommandError as e:  # (it names the path inside the root)
            text = str(e)
            if text.startswith(f"{sub}:"):
                text = f"{path or '.'}:{text[len(sub) + 1:]}"
            raise CommandError(text) from None

    def rooted(root: Root, summary: dict[str, Any]) -> dict[str, Any]:
        if "entries" in summary:
            summary = {**summary, "entries": [{**e, "path": _join(root.name, e["path"])}
                                              for e in summary["entries"]]}
        return summary

    def paths_of(request: dict[str, Any]) -> list[Any]:
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths:
            raise CommandError("no paths given")
        return paths

    def per_path(cmd: str) -> Handler:
        """warm, where and pin: a summary per path."""
        async def handler(request: dict[str, Any], send: Send) -> Any:
            out = []
            for path in paths_of(request):
                parts = []
                for root, sub in targets(path):
                    result = await ask(root, cmd, request, sub, path, send)
                    parts.append(rooted(root, result[0]))
                out.append(_merge(path, parts))
            return out
        return handler

    async def evict(request: dict[str, Any], send: Send) -> Any:
        freed, out = 0, []
        for path in paths_of(request):
            parts = []
            for root, sub in targets(path):
                result = await ask(root, "evict", request, sub, path, send)
                freed += result["freed"]
                parts.append(result["paths"][0])
            out.append(_merge(path, parts))
        return {"freed": freed, "paths": out}

    async def flush(request: dict[str, Any], send: Send) -> Any:
        total: dict[str, Any] = {"flushed": 0, "pending": 0, "pending_bytes": 0, "failed": []}
        for root in roots.roots:
            result = await handlers[root.name]["flush"](request, send)
            for name in ("flushed", "pending", "pending_bytes"):
                total[name] += result[name]
            total["failed"] += [{**f, "path": _join(root.name, f["path"])}
                                for f in result["failed"]]
        return total

    def move(cmd: str) -> Handler:
        """demote and promote: each path's files moved by its root."""
        async def handler(request: dict[str, Any], send: Send) -> Any:
            files = []
            for path in paths_of(request):
                for root, sub in targets(path):
                    result = await ask(root, cmd, request, sub, path, send)
                    files += [{**f, "path": _join(root.name, f["path"])}
                              for f in result["files"]]
            return {"files": files}
        return handler

    async def scan(request: dict[str, Any], send: Send) -> Any:
        """Each root's large plain files under the path, listed and counted together."""
        path = request.get("path", "")
        total: dict[str, Any] = {"count": 0, "bytes": 0, "files": [], "listed": 0,
                                 "unreadable": 0}
        for root, sub in targets(path or "."):
            result = await handlers[root.name]["scan"]({**request, "path": sub}, send)
            for name in ("count", "bytes", "listed", "unreadable"):
                total[name] += result[name]
            total["threshold"] = result["threshold"]
            total["files"] += [{**f, "path": _join(root.name, f["path"])}
                               for f in result["files"]]
            if "demoted" in result:
                total.setdefault("demoted", []).extend(
                    {**f, "path": _join(root.name, f["path"])} for f in result["demoted"])
        return total

    #: The plans handed out here: number -> each root's own plan number.
    plans: dict[int, dict[str, int]] = {}

    async def prefetch(request: dict[str, Any], send: Send) -> Any:
        """A plan split by root, each root's part in the plan's order (each root fetches
        ahead in its own cache); stop and status go to every root."""
        async def each(names: list[str], part: dict[str, Any]) -> dict[str, Any]:
            return {name: await handlers[name]["prefetch"](part, send) for name in names}

        everyone = [root.name for root in roots.roots]
        if request.get("stop") or request.get("status"):
            return _plan_status(None, await each(everyone, request))
        items = request.get("paths")
        if not isinstance(items, list):
            raise CommandError("no paths given")
        split: dict[str, list[Any]] = {}
        for item in items:
            path = item.get("path") if isinstance(item, dict) else item
            for root, sub in targets(path):
                moved = {**item, "path": sub} if isinstance(item, dict) else sub
                split.setdefault(root.name, []).append(moved)
        more = bool(request.get("more"))
        number = request.get("plan")
        if number is None:
            number = len(plans) + 1
            plans[number] = {}
            for name in everyone:  # a new plan replaces every root's
                if name not in split:
                    await handlers[name]["prefetch"]({"stop": True}, send)
        elif number not in plans:
            raise CommandError(f"plan {number} is not running (it ended or was replaced)")
        known = plans[number]
        answers = {}
        for name in dict.fromkeys([*split, *(known if not more else ())]):
            part = {"paths": split.get(name, []), "more": more,
                    **{k: request[k] for k in ("window", "fetches") if k in request}}
            if name in known:
                part["plan"] = known[name]
            answers[name] = await handlers[name]["prefetch"](part, send)
            known[name] = answers[name]["plan"]
        return _plan_status(number, answers)

    async def stats(request: dict[str, Any], send: Send) -> Any:
        return await roots_stats_document(roots, mountpoint)

    async def health(request: dict[str, Any], send: Send) -> Any:
        return await roots.health()

    async def tiers(request: dict[str, Any], send: Send) -> Any:
        config = roots.config
        return {"hot": str(config.hot), "warm": str(config.warm), "bucket": str(config.bucket),
                "endpoint_url": config.endpoint_url, "region": config.region,
                "addressing_style": config.addressing_style,
                "roots": {r.name: {"warm": str(r.fs.config.warm),
                                   "bucket": str(r.fs.config.bucket)} for r in roots.roots}}

    return {"warm": per_path("warm"), "where": per_path("where"), "pin": per_path("pin"),
            "evict": evict, "flush": flush, "stats": stats, "health": health, "tiers": tiers,
            "prefetch": prefetch, "demote": move("demote"), "promote": move("promote"), "scan": scan}


def _plan_status(number: int | None, answers: dict[str, Any]) -> dict[str, Any]:
    """One plan's status from its roots' (the figures added up), with each root's own."""
    shown = {name: a for name, a in answers.items() if a is not None}
    out: dict[str, Any] = {"plan": number, "roots": shown,
                           "active": any(a.get("active") for a in shown.values())}
    for key in ("files", "blocks", "bytes", "fetched", "missing"):
        out[key] = sum(a.get(key) or 0 for a in shown.values())
    out["missing_paths"] = [_join(name, p) for name, a in shown.items()
                            for p in a.get("missing_paths", [])]
    return out


async def roots_stats_document(roots: Roots, mountpoint: str) -> dict[str, Any]:
    """The whole mount's figures (the roots' counters summed) with each root's own rows;
    each root's disks are looked at in its own warm-tier threads."""
    docs: dict[str, dict[str, Any]] = {}

    async def one(root: Root) -> None:
        docs[root.name] = await stats_document(root.fs, mountpoint)

    async with trio.open_nursery() as nursery:  # side by side: each stalled root's wait at once
        for root in roots.roots:
            nursery.start_soon(one, root)
    docs = {root.name: docs[root.name] for root in roots.roots}  # in the roots' order
    config = roots.config
    summed = sum_snapshots([root.fs.counters.snapshot() for root in roots.roots])
    rates = [d["rates"] for d in docs.values() if d["rates"]]
    total_rates = None
    if rates:
        total_rates = {"interval": max(r["interval"] for r in rates),
                       **{t: sum(r[t] for r in rates) for t in ("hot", "warm", "cold")}}
    pending = roots.pending_uploads()
    warm = " ".join(f"{name}={path}" for name, path in config.roots)

    def build() -> dict[str, Any]:
        return build_stats(summed, live=True, mountpoint=mountpoint, hot=str(config.hot),
                           warm=warm, bucket=str(config.bucket), pending=pending,
                           rates=total_rates)

    return with_roots(await roots.hot.run(build), docs)
