"""The filesystem core driven directly, without FUSE or a kernel mount: one place that builds it.

``open_core`` builds a ``FileSystem`` over a hot, a warm and a cold tier in a temp folder (the
bucket a local folder behind a ``FaultStore``), with its background task running, and stops it
either cleanly (publishing what is still dirty) or as a crash would (``core.crash()``: nothing
published, the index closed without its last batch). A second ``open_core`` on the same folder
is the next mount. Everything that reaches into tierfs's internals is in this file, so that a
change of where the core's parts live costs a few lines here.

The test files call the core's public methods (those the FUSE layer calls) and the helpers
below. Test bodies are async functions decorated with ``core_test``, which runs them with trio
under a timeout, so no test can hang the run.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec

import trio

from tierfs.config import build_config
from tierfs.index import Index
from tierfs.objects.local import WORK_DIR, LocalStore
from tierfs.stubs import Stub, looks_like_stub, parse_stub
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier
from tierfs.tiers.scan import is_internal
from tierfs.tiers.warm import WarmTier
from tierfs.write import entries as journal_module
from tierfs.vfs.filesystem import FileSystem, SetAttr
from tierfs.vfs.residency import Residency
from tierfs.core.inodes import ROOT_INODE
from tierfs.write.recovery import Report, purge_temps

from .faults import FaultStore

__all__ = ["MIB", "PART", "ROOT", "Core", "FaultStore", "SetAttr", "Stub", "core_test",
           "open_core"]

MIB = 1024 * 1024
#: The smallest part size the configuration takes (S3's minimum part).
PART = 5 * MIB
ROOT = ROOT_INODE
#: Seconds any one test may take before it fails instead of hanging the run.
TEST_TIMEOUT = 30.0

P = ParamSpec("P")


def core_test(fn: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """Run an async test body with trio, under ``TEST_TIMEOUT``. pytest sees the body's own
    parameters (fixtures) through ``functools.wraps``. A failure inside a nursery arrives
    wrapped in an exception group: the single exception is raised as itself, for a readable
    report."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        async def main() -> None:
            with trio.fail_after(TEST_TIMEOUT):
                await fn(*args, **kwargs)

        try:
            trio.run(main)
        except BaseExceptionGroup as group:
            leaves = _leaves(group)
            if len(leaves) == 1:
                raise leaves[0] from group
            raise

    return wrapper


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


@dataclasses.dataclass
class Core:
    """A running core and where its tiers are."""

    fs: FileSystem
    store: FaultStore
    root: Path
    hot: Path
    warm: Path
    bucket: Path
    nursery: trio.Nursery
    crashed: bool = False

    def crash(self) -> None:
        """Stop as a crash would: at the end of the ``open_core`` block nothing is published
        and the index batch not yet committed is lost."""
        self.crashed = True

    # -- paths ------------------------------------------------------------------------------

    async def lookup_path(self, path: bytes) -> Any:
        """The inode at a path (``a/b/c``), looked up name by name from the root."""
        ino = ROOT
        inode = None
        for name in path.split(b"/"):
            inode, _ = await self.fs.lookup(ino, name)
            ino = inode.ino
        return inode

    async def parent_and_name(self, path: bytes) -> tuple[int, bytes]:
        head, _, name = path.rpartition(b"/")
        if not head:
            return ROOT, name
        return (await self.lookup_path(head)).ino, name

    async def mkdirs(self, path: bytes) -> int:
        """Make every folder of ``path`` (``a/b``) that is missing; returns the last one's
        inode number."""
        ino = ROOT
        for name in path.split(b"/"):
            try:
                inode, _ = await self.fs.lookup(ino, name)
            except OSError:
                inode, _ = await self.fs.mkdir(ino, name, 0o755, os.getuid(), os.getgid())
            ino = inode.ino
        return ino

    # -- files ------------------------------------------------------------------------------

    async def create(self, path: bytes, mode: int = 0o644, flags: int = os.O_WRONLY) -> int:
        parent, name = await self.parent_and_name(path)
        fh, _, _, _ = await self.fs.create(parent, name, mode, flags, os.getuid(), os.getgid())
        return fh

    async def open(self, path: bytes, flags: int = os.O_RDONLY) -> int:
        inode = await self.lookup_path(path)
        fh, _, _ = await self.fs.open(inode.ino, flags)
        return fh

    async def write_all(self, fh: int, data: bytes, offset: int = 0, chunk: int = MIB
                        ) -> None:
        """Write in requests of at most ``chunk`` bytes, as the kernel sends them."""
        view = memoryview(data)
        pos = 0
        while pos < len(data):
            n = await self.fs.write(fh, offset + pos, bytes(view[pos:pos + chunk]))
            assert n > 0
            pos += n

    async def close(self, fh: int) -> None:
        """What close(2) makes the kernel send: flush, then release."""
        try:
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)

    async def write_file(self, path: bytes, data: bytes, mode: int = 0o644,
                         chunk: int = MIB) -> None:
        """Create (or truncate) a file, write ``data`` and close it."""
        try:
            inode = await self.lookup_path(path)
        except FileNotFoundError:
            fh = await self.create(path, mode)
        else:
            fh, _, _ = await self.fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
        await self.write_all(fh, data, chunk=chunk)
        await self.close(fh)

    async def read_all(self, fh: int, size: int | None = None, chunk: int = MIB) -> bytes:
        """Read from 0 to the end (``size``: stop there), in requests of ``chunk`` bytes."""
        out = bytearray()
        while size is None or len(out) < size:
            want = chunk if size is None else min(chunk, size - len(out))
            piece = await self.fs.read(fh, len(out), want)
            if not piece:
                break
            out += piece
        return bytes(out)

    async def read_file(self, path: bytes) -> bytes:
        fh = await self.open(path)
        try:
            return await self.read_all(fh)
        finally:
            await self.fs.release(fh)

    async def size_of(self, path: bytes) -> int:
        inode = await self.lookup_path(path)
        return int((await self.fs.getattr(inode.ino)).size)

    # -- what the tiers hold ----------------------------------------------------------------

    def count_warm_calls(self) -> dict[str, int]:
        """From now on, count the calls handed to the warm tier's threads (in ``["calls"]``)."""
        counts = {"calls": 0}
        warm = self.fs.warm
        inner = warm.run

        async def counted(fn: Callable[..., Any], *args: object) -> Any:
            counts["calls"] += 1
            return await inner(fn, *args)

        warm.run = counted  # type: ignore[method-assign]
        return counts

    def warm_path(self, path: bytes) -> Path:
        return self.warm / os.fsdecode(path)

    def stub(self, path: bytes) -> Stub | None:
        """The stub at a warm path, or None if it is not one."""
        p = self.warm_path(path)
        if not p.is_symlink():
            return None
        target = os.readlink(os.fsencode(p))
        if not looks_like_stub(target):
            return None
        return parse_stub(target, self.fs.config.bucket)

    def cold(self, path: bytes) -> Stub:
        """The stub at a warm path, which must be one."""
        stub = self.stub(path)
        assert stub is not None, f"{path!r} is not a stub"
        return stub

    def put_stub(self, path: bytes, stub: Stub) -> None:
        """Put a stub at a warm path as another node would (a new symlink renamed over it)."""
        p = self.warm_path(path)
        tmp = p.with_name(p.name + ".other-node")
        os.symlink(stub.encode(self.fs.config.bucket), tmp)
        os.rename(tmp, p)

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket folder, read straight from it: key -> content."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.bucket):
            if Path(dirpath) == self.bucket and WORK_DIR in dirnames:
                dirnames.remove(WORK_DIR)
            for name in filenames:
                p = Path(dirpath) / name
                out[str(p.relative_to(self.bucket))] = p.read_bytes()
        return out

    def uploads(self) -> list[tuple[str, str]]:
        """Unfinished multipart uploads in the bucket (key, id), asked of the store beneath
        the fault store (not counted)."""
        return self.store.inner.list_multipart("")

    def warm_names(self, folder: bytes = b"") -> list[str]:
        """Names in a warm folder, tierfs's temp files included (they start with ``.``)."""
        return sorted(os.listdir(self.warm / os.fsdecode(folder)))

    def warm_temps(self) -> list[str]:
        """tierfs temp files anywhere in the warm tree."""
        found = []
        for dirpath, _, filenames in os.walk(self.warm):
            found += [f for f in filenames if is_internal(os.fsencode(f))]
        return found

    def staged(self) -> list[str]:
        """Staging files on the hot tier (their ids)."""
        return sorted(os.listdir(self.fs.hot.staging_dir))

    def staging_path(self, sid: str) -> Path:
        return Path(self.fs.hot.staging_dir) / sid

    def staged_bytes(self) -> int:
        """Bytes the staging files take on the hot disk (punched-out parts take none)."""
        total = 0
        for sid in self.staged():
            try:
                total += self.staging_path(sid).stat().st_blocks * 512
            except FileNotFoundError:  # published or removed meanwhile
                continue
        return total

    def lost_found(self) -> list[str]:
        """What was set aside in ``<hot>/lost+found``: staged data and notes."""
        d = self.fs.hot.lost_dir
        return sorted(os.listdir(d)) if d.is_dir() else []

    def lost_path(self, name: str) -> Path:
        return Path(self.fs.hot.lost_dir) / name

    # -- the core's state -------------------------------------------------------------------

    def journal(self) -> dict[str, Any]:
        """The journal as the running core holds it: staging id -> entry (path, closed,
        size, synced, upload with key, upload_id and parts)."""
        return dict(self.fs.journal.entries)

    def stored_journal(self) -> dict[str, Any]:
        """The journal as committed to the index (what a crash leaves)."""
        return journal_module.load(self.fs.index, self.fs.journal.acks.path)

    async def sync_journal(self) -> None:
        await self.fs.journal.sync()

    def counter(self, name: str) -> int:
        return int(self.fs.counters.values[name])

    def cached_blocks(self) -> int:
        """Blocks the block cache holds on the hot tier."""
        return len(self.fs.cache.entries)

    async def evict(self, path: bytes) -> int:
        """Drop a path's cached blocks, as ``tierfs evict`` does (a file written through the
        mount keeps its written bytes cached); the bytes freed."""
        residency = Residency(self.fs)
        return await residency.evict(await residency.files(path))

    def writeback_pending(self) -> int:
        return self.fs.pending_uploads()[0]

    async def recover(self, rebooted: bool = False) -> Report:
        """Recovery as a mount runs it, before serving requests (``rebooted``: the system
        restarted since the last run)."""
        return await self.fs.recover(rebooted)

    async def purge_temps(self) -> int:
        """Remove this node's temp files from the warm tree, as a mount does after recovery."""
        return await self.fs.warm.run(purge_temps, self.fs.core)

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait for background work (write-back, streaming) until ``check()`` holds."""
        with trio.fail_after(timeout):
            while not check():
                await trio.sleep(0.01)

    async def publish_all(self) -> list[tuple[str, str]]:
        """Publish every write-back file now, as ``tierfs flush`` does: what failed."""
        return await self.fs.flush_all()


def rewrite_in_place(path: Path, data: bytes) -> None:
    """As another node writing into the file: the same inode, new content and mtime."""
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(0, 10**18))


def config_values(root: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {"hot": str(root / "hot"), "warm": str(root / "warm"),
                              "bucket": f"file://{root / 'cold'}", "block_size": "64KiB",
                              "read_memory": "16MiB", "hot_capacity": "64MiB",
                              "publish_ahead": 0, "part_size": PART}
    values.update(overrides)
    return values


@asynccontextmanager
async def open_core(root: Path, store: FaultStore | None = None, *,
                    by_rename: bool | None = None, cache_warm: bool = False,
                    **overrides: Any) -> AsyncIterator[Core]:
    """A core over tiers in ``root`` (made if missing), its background task running.
    ``overrides``: configuration keys (``large_file_threshold="64KiB"``, ``rules=[...]``).
    ``by_rename``: force publishing by rename (True) or by copy (False); by default the core
    decides (the tiers share a file system here, so by rename). ``store``: a FaultStore to
    reuse (its counts and faults carry over to the next mount)."""
    for d in ("hot", "warm", "cold"):
        (root / d).mkdir(exist_ok=True)
    config = build_config({}, config_values(root, overrides))
    hot = HotTier(config.hot, 4)
    hot.prepare()
    warm = WarmTier(config.warm, 4, config.bucket)
    index = Index(hot.index_dir)
    try:
        if store is None:
            store = FaultStore(LocalStore(config.bucket))
        store.inner.check()
        fs = FileSystem(config, hot, warm, ColdTier(store, 4), index, cache_warm=cache_warm)
        if by_rename is not None:
            fs.core.publish_by_rename = by_rename
        async with trio.open_nursery() as nursery:
            await nursery.start(fs.run_background)
            core = Core(fs, store, root, root / "hot", root / "warm", root / "cold", nursery)
            try:
                yield core
                if not core.crashed:
                    await fs.shutdown()
            finally:
                nursery.cancel_scope.cancel()
        fs.journal.close()
    finally:
        index.close()
        warm.close()
