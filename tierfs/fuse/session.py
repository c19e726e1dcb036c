"""Run one mount in this process: open the tiers and the index, mount, serve, shut down cleanly.

SIGTERM and SIGINT end the FUSE loop; whatever is still dirty is published, the index batch is
committed, and only then is the file system unmounted.
"""

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from tierfs.config import Config
from tierfs.errors import MountError
from tierfs.control import registry
from tierfs.control import server as control
from tierfs.control.commands import make_handlers
from tierfs.control.routing import make_root_handlers
from tierfs.control.registry import MountRecord
from tierfs.control.server import socket_path
from tierfs.fuse.operations import Operations
from tierfs.index import Index, RunStart
from tierfs.mounting import NETWORK_FS, fs_type, open_checked_store
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier, own_folder
from tierfs.tiers.warm import WarmTier
from tierfs.vfs.filesystem import FileSystem
from tierfs.vfs.roots import ROOTS_DIR, Root, Roots, assign_slots, root_config
from tierfs.write import acklog, entries, recovery

log = logging.getLogger(__name__)

#: FUSE worker tasks. Each request holds one until it is answered, and a stalled root holds
#: every request that touches it: once none is left, no request is read, the other roots'
#: included. So there are far more than a node's readers of one root will ever be (64 were
#: not: a data loader's 80 workers stalled the mount). A waiting task costs a trio task and the few
#: pages of its request buffer written; the tiers' threads bound the work, not this.
MAX_FUSE_TASKS = 1024


def mount_device(mountpoint: str) -> str | None:
    """The ``major:minor`` of the file system mounted at ``mountpoint`` (the last one)."""
    found = None
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            # Mount points are octal-escaped (a space is \040).
            point = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]),
                                       fields[4]))
            if point == mountpoint:
                found = fields[2].decode()
    return found


def set_read_ahead(mountpoint: str, size: int) -> None:
    """Raise the kernel's read-ahead for this mount so sequential reads arrive in large requests.

    FUSE mounts get a backing-device entry named after their device number; its default
    read-ahead (128 KiB) is far below what a tiered store wants.
    """
    # Not os.stat(mountpoint): before the loop serves, that request would wait on ourselves.
    device = mount_device(mountpoint)
    if device is None:
        log.warning("could not find %s in /proc/self/mountinfo; read-ahead left alone",
                    mountpoint)
        return
    path = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    try:
        path.write_text(str(size // 1024))
    except OSError as e:
        log.warning("could not set read-ahead to %d KiB (%s): %s", size // 1024, path, e)


def _invalidate_attrs(ino: int) -> None:
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except OSError:
        pass  # the kernel does not know this inode any more: nothing to invalidate


async def _purge_temps(fs: FileSystem) -> None:
    removed = await fs.warm.run(recovery.purge_temps, fs.core)
    if removed:
        log.warning("removed %d temp files an unclean stop left on the warm tier %s", removed,
                    fs.config.warm)


async def _recover(fs: FileSystem | Roots, starts: list[RunStart],
                   nursery: trio.Nursery) -> None:
    """Recover each root as its own index says its last run ended; temp files of an
    unclean stop are purged in the background."""
    parts = [r.fs for r in fs.roots] if isinstance(fs, Roots) else [fs]
    for part, start in zip(parts, starts):
        await part.recover(rebooted=start.rebooted)
        if not start.clean:
            nursery.start_soon(_purge_temps, part)


async def _serve(fs: FileSystem | Roots, ops: Operations, mountpoint: str, read_ahead: int,
                 on_ready: Callable[[], None], starts: list[RunStart]) -> bool:
    """Serve until unmounted or signalled; returns True if a signal asked us to unmount."""
    signalled = False
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            nonlocal signalled
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("received %s: unmounting", signal.Signals(signum).name)
                    signalled = True
                    pyfuse3.terminate()
                    return

        async def when_initialized() -> None:
            await ops.initialized.wait()
            # The kernel clamps read-ahead while it processes INIT, so raise it afterwards.
            await trio.to_thread.run_sync(set_read_ahead, mountpoint, read_ahead)
            log.info("serving %s", mountpoint)
            await trio.to_thread.run_sync(registry.register, MountRecord(
                mountpoint, os.getpid(), str(fs.config.hot), _warm_text(fs.config),
                str(fs.config.bucket), str(socket_path(fs.hot.root))))
            on_ready()

        await nursery.start(fs.run_background)
        # Before any request: nobody sees a half-recovered file.
        await _recover(fs, starts, nursery)
        nursery.start_soon(watch_signals)
        handlers = make_root_handlers(fs, mountpoint) if isinstance(fs, Roots) \
            else make_handlers(fs, mountpoint)
        await nursery.start(control.serve, socket_path(fs.hot.root), handlers)
        nursery.start_soon(when_initialized)
        await pyfuse3.main(min_tasks=2, max_tasks=MAX_FUSE_TASKS)
        await fs.shutdown()  # before the cancel: streaming uploads still need their tasks
        nursery.cancel_scope.cancel()
    return signalled


def _escape_option(value: str) -> str:
    """A value for a FUSE mount option: libfuse splits options at commas, and a backslash
    escapes the next character (a warm tier at ``/data/a,b`` would otherwise end the option
    at the comma and fail the mount)."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _cache_warm(config: Config) -> bool:
    """Caching warm blocks pays off when the warm tier is remote; a local one is as fast."""
    if config.cache_warm == "auto":
        return fs_type(config.warm) in NETWORK_FS
    return config.cache_warm == "true"


def _open_fs(config: Config, hot: HotTier) -> tuple[FileSystem, RunStart]:
    """One root's file system on an opened hot tier (blocking: at mount)."""
    warm = WarmTier(config.warm, config.warm_threads, config.bucket)
    index = Index(hot.index_dir)
    try:
        warm.node = index.node_id()
        start = index.begin_run()
        cold = ColdTier(open_checked_store(config), config.cold_threads)
        return FileSystem(config, hot, warm, cold, index, cache_warm=_cache_warm(config)), start
    except BaseException:
        index.close()
        warm.close()
        raise


def _close_fs(fs: FileSystem, ended: bool) -> None:
    if ended:
        fs.index.end_run()
    for tier in (fs.hot, fs.warm, fs.cold):
        tier.workers.close()
    fs.journal.close()
    fs.index.close()
    fs.warm.close()


def _open_roots(config: Config, hot: HotTier) -> tuple[Roots, dict[str, RunStart]]:
    """A file system per named root, each on a folder of the hot tier of its own."""
    try:
        own_folder(config.hot / ROOTS_DIR)
        slots = assign_slots(config.hot / ROOTS_DIR, [name for name, _ in config.roots])
    except OSError as e:
        raise MountError(f"hot tier: {e.strerror or e}") from None
    opened: list[Root] = []
    starts: dict[str, RunStart] = {}
    try:
        for name, path in config.roots:
            sub_config = root_config(config, name, path)
            sub_hot = HotTier(sub_config.hot, config.hot_threads)
            sub_hot.workers = hot.workers  # one disk: one set of threads
            try:
                own_folder(sub_config.hot)
            except OSError as e:
                raise MountError(f"hot tier: {e.strerror or e}") from None
            sub_hot.prepare()
            fs, starts[name] = _open_fs(sub_config, sub_hot)
            opened.append(Root(name, slots[name], fs, fs.index))
    except BaseException:
        for root in opened:
            _close_fs(root.fs, ended=False)
        raise
    return Roots(config, hot, opened), starts


def _journaled(index_dir: Path) -> int:
    """How many files the index in ``index_dir`` keeps journaled (staged, not yet home)."""
    if not (index_dir / "data.mdb").exists():
        return 0
    index = Index(index_dir, readonly=True)
    try:
        return len(entries.load(index, index_dir / acklog.NAME))
    finally:
        index.close()


def _refuse_stranded(config: Config) -> None:
    """Staged data another layout of this hot tier journaled (a mount of one warm directory
    before named roots, or the other way round, or a root since dropped) would be neither
    published nor recovered by this mount: it is refused until a mount as before has
    published it. Raises MountError."""
    roots_dir = config.hot / ROOTS_DIR
    names = {name for name, _ in config.roots}
    others = [("one warm directory", config.hot / "index")] if config.roots else []
    if roots_dir.is_dir():
        others += [(f"the root {d.name}", d / "index") for d in sorted(roots_dir.iterdir())
                   if d.is_dir() and d.name not in names]
    for what, index_dir in others:
        count = _journaled(index_dir)
        if count:
            raise MountError(f"the hot tier {config.hot} keeps {count} staged files of a "
                             f"mount with {what} that are not published yet: mount it as "
                             "before once, so they are published, then mount this way")


def run(config: Config, mountpoint: str, on_ready: Callable[[], None]) -> None:
    """Mount and serve in the foreground; returns after a clean unmount."""
    os.umask(0)  # modes come from the kernel request, already masked by the caller's umask
    # While the event loop serves, it handles SIGTERM and SIGINT (watch_signals). Outside that
    # window, before it starts and while it shuts down, the signals are ignored: trio restores
    # this disposition when its receiver closes, and a second SIGTERM arriving then (say, after
    # a lazy unmount has already ended the loop) must not kill the daemon half-way through
    # committing its index and unmounting.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    hot = HotTier(config.hot, config.hot_threads)
    hot.prepare()
    hot.acquire(mountpoint)
    try:
        _refuse_stranded(config)
        fs: FileSystem | Roots
        if config.roots:
            fs, starts = _open_roots(config, hot)
            parts = [root.fs for root in fs.roots]
        else:
            single, start = _open_fs(config, hot)
            fs, starts, parts = single, {"": start}, [single]
        ended = False
        try:
            _mount_and_serve(config, mountpoint, on_ready, fs, list(starts.values()))
            ended = True
        finally:
            for part in parts:
                _close_fs(part, ended)
    finally:
        hot.release()


def _mount_and_serve(config: Config, mountpoint: str, on_ready: Callable[[], None],
                     fs: FileSystem | Roots, starts: list[RunStart]) -> None:
    fs.invalidate_attrs = _invalidate_attrs
    if config.prometheus_port:
        from tierfs import metrics

        try:
            # (Roots has what the endpoint reads: counters, pending_uploads)
            metrics.serve(fs, config.prometheus_port)  # type: ignore[arg-type]
        except OSError as e:
            raise MountError(f"cannot serve Prometheus metrics on 127.0.0.1:"
                             f"{config.prometheus_port}: {e.strerror}") from None
    ops = Operations(fs, config.entry_timeout, config.attr_timeout)  # type: ignore[arg-type]
    options = set(pyfuse3.default_options)
    options |= {f"fsname=tierfs:{_escape_option(_warm_text(config))}", "subtype=tierfs"}
    if config.allow_other:
        options.add("allow_other")
    pyfuse3.init(ops, mountpoint, options)
    unmount = True
    try:
        log.info("mounted %s (hot %s, warm %s)", mountpoint, config.hot, _warm_text(config))
        unmount = trio.run(_serve, fs, ops, mountpoint, config.read_ahead, on_ready,
                           starts)
    finally:
        registry.unregister(mountpoint, os.getpid())
        pyfuse3.close(unmount=unmount)
        log.info("unmounted %s", mountpoint)


def _warm_text(config: Config) -> str:
    """The warm tier as the mount table and the registry show it: its directory, or each
    named root as NAME=DIR."""
    if not config.roots:
        return str(config.warm)
    return " ".join(f"{name}={path}" for name, path in config.roots)
