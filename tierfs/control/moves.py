"""What the control socket serves for moving files between the warm tier and the bucket:
``demote``, ``promote`` and ``scan`` (``write.demote``, ``write.warmscan``).

A directory stands for the files under it, found by one walk of the warm tree in a warm-tier
thread, which hands back at most ``warmscan.KEEP`` of them: a larger directory is done in
part, and the answer says how many files are left (run the command again).
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING, Any

from tierfs.control.server import CommandError, Handler, Send
from tierfs.paths import show
from tierfs.write.demote import Outcome
from tierfs.write.warmscan import KEEP, Walk, walk

if TYPE_CHECKING:
    from tierfs.vfs.filesystem import FileSystem


def make_handlers(fs: FileSystem, rel_of: Any) -> dict[str, Handler]:
    """``rel_of``: a request's path to a warm path (``commands._rel``)."""
    demoter = fs.demoter

    async def targets(rel: bytes, links: bool, min_size: int = 1) -> tuple[list[bytes], int]:
        """The path itself, or the files under a directory (regular files, or symbolic
        links for ``links``); and how many more there were than were handed back."""
        try:
            st = await fs.warm.run(fs.warm.lstat, rel)
        except FileNotFoundError:
            raise CommandError(f"{show(rel)}: no such file or directory") from None
        if not stat.S_ISDIR(st.st_mode):
            return [rel], 0
        seen: Walk = await fs.warm.run(walk, fs.warm, min_size, rel, KEEP, links)
        found = [f.rel for f in seen.oldest]
        return found, max(0, seen.large - len(found))

    async def move(request: dict[str, Any], send: Send, promote: bool) -> Any:
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths:
            raise CommandError("no paths given")
        outcomes: list[Outcome] = []
        left = 0
        for path in paths:
            found, more = await targets(rel_of(path), links=promote)
            left += more
            for i, rel in enumerate(found):
                await send({"progress": i, "total": len(found)})
                outcomes.append(await (demoter.promote(rel) if promote
                                       else demoter.demote(rel)))
        await fs.save_index()
        return {"files": [o.to_json() for o in outcomes], "left": left}

    async def demote(request: dict[str, Any], send: Send) -> Any:
        return await move(request, send, promote=False)

    async def promote(request: dict[str, Any], send: Send) -> Any:
        return await move(request, send, promote=True)

    async def scan(request: dict[str, Any], send: Send) -> Any:
        rel = rel_of(request.get("path", ""))
        threshold = fs.config.large_file_threshold
        seen: Walk = await fs.warm.run(walk, fs.warm, threshold, rel)
        result = scan_report(seen, threshold)
        if request.get("demote"):
            outcomes = []
            for i, found in enumerate(seen.oldest):
                await send({"progress": i, "total": len(seen.oldest)})
                outcomes.append((await demoter.demote(found.rel)).to_json())
            await fs.save_index()
            result["demoted"] = outcomes
        return result

    return {"demote": demote, "promote": promote, "scan": scan}


def scan_report(seen: Walk, threshold: int) -> dict[str, Any]:
    """What ``tierfs scan`` prints: large plain files on the warm tier, oldest first."""
    return {"threshold": threshold, "count": seen.large, "bytes": seen.large_bytes,
            "files": [{"path": show(f.rel), "size": f.size} for f in seen.oldest],
            "listed": len(seen.oldest), "unreadable": seen.unreadable}
