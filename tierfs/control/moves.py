"""What the control socket serves for moving files between the warm tier and the bucket:
``demote``, ``promote`` and ``scan`` (``write.demote``, ``write.warmscan``).

A directory stands for the files under it, found by walks of the warm tree in a warm-tier
thread, each handing back at most ``warmscan.KEEP`` of them, oldest first: a larger directory
is done a page at a time, each walk starting past the last file of the page before.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
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

    async def pages(rel: bytes, links: bool, min_size: int
                    ) -> AsyncIterator[tuple[list[bytes], int]]:
        """The path itself, or the files under a directory (regular files of at least
        ``min_size`` bytes, or symbolic links for ``links``) a page of at most ``KEEP`` at a
        time, oldest first; each page with how many are left after it."""
        try:
            st = await fs.warm.run(fs.warm.lstat, rel)
        except FileNotFoundError:
            raise CommandError(f"{show(rel)}: no such file or directory") from None
        if not stat.S_ISDIR(st.st_mode):
            yield [rel], 0
            return
        after = None
        while True:
            seen: Walk = await fs.warm.run(walk, fs.warm, min_size, rel, KEEP, links, after)
            if not seen.oldest:
                return
            yield [f.rel for f in seen.oldest], seen.offered - len(seen.oldest)
            if seen.offered <= len(seen.oldest):
                return
            after = seen.oldest[-1].cursor

    async def move_all(rels: list[bytes], send: Send, promote: bool, min_size: int = 1
                       ) -> list[Outcome]:
        """Demote (or promote) each path, a directory standing for the files under it."""
        outcomes: list[Outcome] = []
        # A file moved on by the move itself (a stub's access time, read for a refusal) is
        # found again on a later page: tried once only.
        tried: set[bytes] = set()
        await fs.settle_names()  # (a file just created is on the warm tier once named)
        for top in rels:
            before = 0  # (files of the pages before: the progress runs on across pages)
            async for found, left in pages(top, promote, min_size):
                for i, rel in enumerate(found):
                    await send({"progress": before + i, "total": before + len(found) + left})
                    if rel in tried:
                        continue
                    tried.add(rel)
                    outcomes.append(await (demoter.promote(rel) if promote
                                           else demoter.demote(rel)))
                before += len(found)
        await fs.save_index()
        return outcomes

    async def move(request: dict[str, Any], send: Send, promote: bool) -> Any:
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths:
            raise CommandError("no paths given")
        outcomes = await move_all([rel_of(path) for path in paths], send, promote)
        return {"files": [o.to_json() for o in outcomes]}

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
            # Every large file, a page at a time as ``demote`` of a directory: the report's
            # walk keeps only the oldest ``KEEP``. (None found: ``rel`` may be no directory.)
            outcomes = await move_all([rel], send, False, threshold) if seen.large else []
            result["demoted"] = [o.to_json() for o in outcomes]
        return result

    return {"demote": demote, "promote": promote, "scan": scan}


def scan_report(seen: Walk, threshold: int) -> dict[str, Any]:
    """What ``tierfs scan`` prints: large plain files on the warm tier, oldest first."""
    return {"threshold": threshold, "count": seen.large, "bytes": seen.large_bytes,
            "files": [{"path": show(f.rel), "size": f.size} for f in seen.oldest],
            "listed": len(seen.oldest), "unreadable": seen.unreadable}
