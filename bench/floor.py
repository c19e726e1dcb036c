"""The floor under tierfs's metadata and write rates: what a pyfuse3 file system that does
nothing reaches on this machine, beside tierfs and the raw directory, in one run.

    sudo .venv/bin/python bench/floor.py [--files 2000] [--size-mib 512]

The no-op file system (``--serve``, started here in a process of its own as tierfs is) keeps
names and sizes in memory and discards every byte written, so its rates are the cost of the
FUSE round trips alone: the kernel, libfuse, pyfuse3 and trio. tierfs answers the same
requests, and for each one also works on its tiers in worker threads (a metadata request
makes one or two such calls); the last rows time one hand-off to a worker thread and back
(``tierfs.tiers.workers``) and the same through ``trio.to_thread``, for scale.

Rows: creating files of 4 KiB one after another (each: lookup, create, write, flush,
release; tierfs in its default sync mode also fsyncs each file on the warm tier before close
returns, so the raw directory is measured with and without an fsync per file); one file
written in 1 MiB writes (plus an fsync: a no-op on the floor), then read back in 1 MiB reads
with the page cache dropped (the floor answers with zeros from memory).

``--serve MOUNTPOINT --backing DIR`` serves a passthrough floor instead: each request makes
its disk call on a real file in DIR, inline on the event loop (bench/small.py uses it); with
``--sync-close`` too, the close of a file written since it was opened also makes an
``fdatasync``, what a close that promises durability has to pay at least; with
``--publish-close``, a file it creates is written to a temp file beside its name, which its
first close fdatasyncs and renames over the (empty) file made at create: what a close in
tierfs's sync mode promises (the name made on the tier at once, the data put in place
whole and durable), done as cheaply as pyfuse3 allows; with ``--stage DIR``, a file it
creates gets its name in the backing directory at once (as the caller's flags ask, closed
again at once) and its data in a file in DIR, which its writes go to and its close leaves
there: what a write-back create must do at least where names are made on the tier at create
and data staged on a local disk (bench/nfs.py).
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import MIB, drop_caches, mounted
from run import create_files, seq_read, seq_write, timed

#: Attribute and entry timeouts of the floor: tierfs's defaults.
TIMEOUT = 1.0


def serve(mountpoint: str) -> None:
    """Run the no-op file system on ``mountpoint`` until SIGTERM."""
    import pyfuse3
    import trio

    class Floor(pyfuse3.Operations):
        def __init__(self) -> None:
            super().__init__()
            self.children: dict[tuple[int, bytes], int] = {}
            self.modes: dict[int, int] = {pyfuse3.ROOT_INODE: stat.S_IFDIR | 0o755}
            self.sizes: dict[int, int] = {pyfuse3.ROOT_INODE: 0}
            self.next_ino = pyfuse3.ROOT_INODE + 1

        def _attrs(self, ino: int) -> pyfuse3.EntryAttributes:
            entry = pyfuse3.EntryAttributes()
            entry.st_ino = ino
            entry.st_mode = self.modes[ino]
            entry.st_nlink = 2 if stat.S_ISDIR(self.modes[ino]) else 1
            entry.st_uid, entry.st_gid = os.getuid(), os.getgid()
            entry.st_size = self.sizes[ino]
            entry.st_blksize = 4096
            entry.st_blocks = (self.sizes[ino] + 511) // 512
            entry.entry_timeout = entry.attr_timeout = TIMEOUT
            return entry

        def _new(self, parent: int, name: bytes, mode: int) -> int:
            if (parent, name) in self.children:
                raise pyfuse3.FUSEError(errno.EEXIST)
            ino, self.next_ino = self.next_ino, self.next_ino + 1
            self.children[(parent, name)] = ino
            self.modes[ino], self.sizes[ino] = mode, 0
            return ino

        async def lookup(self, parent_inode: int, name: bytes, ctx: object = None
                         ) -> pyfuse3.EntryAttributes:
            ino = self.children.get((parent_inode, name))
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attrs(ino)

        async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
            return self._attrs(inode)

        async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                          fields: pyfuse3.SetattrFields, fh: int | None, ctx: object
                          ) -> pyfuse3.EntryAttributes:
            if fields.update_size:
                self.sizes[inode] = attr.st_size
            return self._attrs(inode)

        async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: object
                        ) -> pyfuse3.EntryAttributes:
            return self._attrs(self._new(parent_inode, name, stat.S_IFDIR | mode))

        async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                         ctx: object) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
            ino = self._new(parent_inode, name, stat.S_IFREG | mode)
            return pyfuse3.FileInfo(fh=ino), self._attrs(ino)

        async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=inode)

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            self.sizes[fh] = max(self.sizes[fh], off + len(buf))
            return len(buf)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return bytes(max(0, min(size, self.sizes[fh] - off)))

        async def getxattr(self, inode: int, name: bytes, ctx: object) -> bytes:
            raise pyfuse3.FUSEError(errno.ENODATA)

        async def unlink(self, parent_inode: int, name: bytes, ctx: object) -> None:
            self.children.pop((parent_inode, name), None)

        async def flush(self, fh: int) -> None:
            pass

        async def fsync(self, fh: int, datasync: bool) -> None:
            pass

        async def release(self, fh: int) -> None:
            pass

    run_until_signalled(pyfuse3, trio, Floor(), mountpoint, "floor")


def serve_passthrough(mountpoint: str, backing: str, sync_close: bool = False,
                      threads: int = 0, publish_close: bool = False,
                      stage: str | None = None) -> None:
    """Run the passthrough floor on ``mountpoint`` over the directory ``backing`` until SIGTERM.

    Each request makes the disk call tierfs must make for it (an lstat for a lookup, a real
    open, pread and pwrite on a backing file, a scandir for a listing) directly on the event
    loop, with no hand-off to a worker thread: so its rates are the least that pyfuse3 allows
    for a file system that keeps its files in a directory, disk work included.

    With ``sync_close``, the flush (each close) or release of a handle written since it was
    opened or last synced also makes an ``fdatasync`` of the backing file: the least sync a
    close can make and still promise the data durable, as both of tierfs's durability modes
    do (sync mode fsyncs the file, write-back commits a journal entry: one fdatasync).

    With ``publish_close`` (which implies ``sync_close``), a create makes the file at its name
    (``O_EXCL``, closed at once) and a temp file beside it, whose descriptor is the handle;
    the handle's first flush or its release fdatasyncs the temp file and renames it over the
    name. Sync mode's promise at close, without tierfs's hot-tier staging or its hand-offs.

    With ``threads``, each backing call is made in one of that many worker threads instead
    (tierfs's own ``Workers``, its cheapest hand-off), one hand-off per request: the floor over
    a network file system, where a call made on the event loop would hold every other request
    behind its round trip. (bench/nfs.py.)

    With ``stage``, a create makes the name in ``backing`` (in a worker thread, as the
    caller's flags ask: ``O_EXCL`` fails on a name that is there) and closes it, and the handle
    is a new file in the local directory ``stage``, written and closed inline (the local disk
    is not worth a hand-off), with no sync at close: the least a write-back create costs
    where its name is made on the tier at once and its data staged locally. A create's
    attributes and a getattr of a file staged so are the staging file's (the name on the
    tier is empty). Nothing is ever copied to ``backing``: it bounds the rate from above."""
    import pyfuse3
    import trio

    from tierfs.tiers.workers import Workers

    workers = Workers("floor", threads) if threads else None
    sync_close = sync_close or publish_close

    async def call(fn: Any, *args: Any) -> Any:
        if workers is None:
            return fn(*args)
        return await workers.run(fn, *args)

    def attrs_of(ino: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = ino
        entry.st_mode, entry.st_nlink = st.st_mode, st.st_nlink
        entry.st_uid, entry.st_gid = st.st_uid, st.st_gid
        entry.st_size, entry.st_blksize, entry.st_blocks = st.st_size, 4096, st.st_blocks
        entry.st_atime_ns, entry.st_mtime_ns = st.st_atime_ns, st.st_mtime_ns
        entry.st_ctime_ns = st.st_ctime_ns
        entry.entry_timeout = entry.attr_timeout = TIMEOUT
        return entry

    class Passthrough(pyfuse3.Operations):
        def __init__(self) -> None:
            super().__init__()
            # The backing file's own inode number names it (the root excepted).
            self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: backing}
            self.listings: dict[int, tuple[str, list[tuple[bytes, os.stat_result]]]] = {}
            self.next_dir = 0
            #: Handles written since opened or synced (kept with ``sync_close`` only).
            self.written: set[int] = set()
            #: Created handles not published yet (``publish_close``): (temp path, name).
            self.unpublished: dict[int, tuple[str, str]] = {}
            #: With ``stage``: the handles of staged files, and each staged inode's file.
            self.staged_fds: set[int] = set()
            self.staged: dict[int, str] = {}

        def _settle(self, fh: int) -> None:
            if fh in self.written:
                self.written.discard(fh)
                os.fdatasync(fh)
            if fh in self.unpublished:
                temp, path = self.unpublished.pop(fh)
                os.rename(temp, path)

        def _entry(self, path: str) -> pyfuse3.EntryAttributes:
            try:
                st = os.lstat(path)
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno) from None
            self.paths[st.st_ino] = path
            return attrs_of(st.st_ino, st)

        def _child(self, parent: int, name: bytes) -> str:
            return os.path.join(self.paths[parent], os.fsdecode(name))

        async def lookup(self, parent_inode: int, name: bytes, ctx: object = None
                         ) -> pyfuse3.EntryAttributes:
            return await call(self._entry, self._child(parent_inode, name))

        async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
            if inode in self.staged:
                return attrs_of(inode, os.lstat(self.staged[inode]))
            try:
                st = await call(os.lstat, self.paths[inode])
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno) from None
            return attrs_of(inode, st)

        async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                          fields: pyfuse3.SetattrFields, fh: int | None, ctx: object
                          ) -> pyfuse3.EntryAttributes:
            if fields.update_size:
                await call(os.truncate, self.paths[inode], attr.st_size)
            return await self.getattr(inode)

        async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: object
                        ) -> pyfuse3.EntryAttributes:
            path = self._child(parent_inode, name)

            def make() -> pyfuse3.EntryAttributes:
                try:
                    os.mkdir(path, mode)
                except OSError as e:
                    raise pyfuse3.FUSEError(e.errno) from None
                return self._entry(path)

            return await call(make)

        async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                         ctx: object) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
            path = self._child(parent_inode, name)
            if stage is not None:
                return await self._create_staged(path, mode, flags)

            def make() -> tuple[int, pyfuse3.EntryAttributes]:
                try:
                    fd = os.open(path, flags | os.O_CREAT, mode)
                except OSError as e:
                    raise pyfuse3.FUSEError(e.errno) from None
                if publish_close:
                    # The kernel knows the file by the temp file's number, the one its name
                    # will have (the empty file's is freed at the rename, and reused).
                    os.close(fd)
                    temp = os.path.join(os.path.dirname(path),
                                        f".floor~{os.path.basename(path)}")
                    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)
                    self.unpublished[fd] = (temp, path)
                    self.written.add(fd)
                st = os.fstat(fd)
                self.paths[st.st_ino] = path
                return fd, attrs_of(st.st_ino, st)

            fd, entry = await call(make)
            return pyfuse3.FileInfo(fh=fd), entry

        async def _create_staged(self, path: str, mode: int, flags: int
                                 ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
            def name() -> int:
                try:
                    fd = os.open(path, (flags & ~os.O_ACCMODE) | os.O_WRONLY | os.O_CREAT,
                                 mode)
                except OSError as e:
                    raise pyfuse3.FUSEError(e.errno) from None
                try:
                    return os.fstat(fd).st_ino
                finally:
                    os.close(fd)

            ino = await call(name)
            self.paths[ino] = path
            self.staged[ino] = os.path.join(stage, str(ino))
            fd = os.open(self.staged[ino], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            self.staged_fds.add(fd)
            return pyfuse3.FileInfo(fh=fd), attrs_of(ino, os.fstat(fd))

        async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            try:
                return pyfuse3.FileInfo(fh=await call(os.open, self.paths[inode],
                                                      flags & ~os.O_CREAT))
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno) from None

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            if fh in self.staged_fds:
                return os.pwrite(fh, buf, off)
            if sync_close:
                self.written.add(fh)
            return await call(os.pwrite, fh, buf, off)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return await call(os.pread, fh, size, off)

        async def getxattr(self, inode: int, name: bytes, ctx: object) -> bytes:
            raise pyfuse3.FUSEError(errno.ENODATA)

        async def unlink(self, parent_inode: int, name: bytes, ctx: object) -> None:
            try:
                await call(os.unlink, self._child(parent_inode, name))
            except OSError as e:
                raise pyfuse3.FUSEError(e.errno) from None

        async def flush(self, fh: int) -> None:
            if fh in self.written or fh in self.unpublished:
                await call(self._settle, fh)

        async def fsync(self, fh: int, datasync: bool) -> None:
            self.written.discard(fh)
            await call(os.fsync, fh)

        async def release(self, fh: int) -> None:
            if fh in self.staged_fds:
                self.staged_fds.discard(fh)
                os.close(fh)
                return

            def close() -> None:
                self._settle(fh)
                os.close(fh)

            await call(close)

        async def opendir(self, inode: int, ctx: object) -> int:
            self.next_dir += 1
            parent = self.paths[inode]

            def listing() -> list[tuple[bytes, os.stat_result]]:
                entries = []
                for e in os.scandir(parent):
                    try:
                        entries.append((os.fsencode(e.name), e.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue
                return entries

            # Names and attributes in one call (one hand-off, not one per entry).
            self.listings[self.next_dir] = (parent, await call(listing))
            return self.next_dir

        async def readdir(self, fh: int, start_id: int, token: object) -> None:
            parent, entries = self.listings[fh]
            for i in range(start_id, len(entries)):
                name, st = entries[i]
                self.paths[st.st_ino] = os.path.join(parent, os.fsdecode(name))
                if not pyfuse3.readdir_reply(token, name, attrs_of(st.st_ino, st), i + 1):
                    return

        async def releasedir(self, fh: int) -> None:
            self.listings.pop(fh, None)

    run_until_signalled(pyfuse3, trio, Passthrough(), mountpoint, "passthrough")


def run_until_signalled(pyfuse3: object, trio: object, ops: object, mountpoint: str,
                        subtype: str) -> None:
    options = set(pyfuse3.default_options) | {"fsname=tierfs-floor", f"subtype={subtype}"}
    pyfuse3.init(ops, mountpoint, options)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)


def start_floor(mnt: Path, backing: Path | None = None, sync_close: bool = False,
                threads: int = 0, publish_close: bool = False,
                stage: Path | None = None) -> subprocess.Popen[bytes]:
    """The floor in a process of its own: the no-op file system, or with ``backing`` the
    passthrough one over that directory (``sync_close``: with an fdatasync at close;
    ``publish_close``: new files published at close as sync mode does; ``threads``: its
    calls in worker threads, at most that many at once; ``stage``: new files named in
    ``backing`` and their data staged in that local directory)."""
    extra = ["--backing", str(backing)] if backing is not None else []
    extra += ["--sync-close"] if sync_close else []
    extra += ["--publish-close"] if publish_close else []
    extra += ["--threads", str(threads)] if threads else []
    extra += ["--stage", str(stage)] if stage is not None else []
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(mnt), *extra])
    for _ in range(200):
        if os.path.ismount(mnt):
            return proc
        if proc.poll() is not None:
            raise SystemExit("the no-op file system did not start")
        time.sleep(0.05)
    proc.terminate()
    raise SystemExit("the no-op file system did not mount in 10 s")


def stop_floor(proc: subprocess.Popen[bytes], mnt: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


def hand_offs(calls: int) -> tuple[float, float, float]:
    """Microseconds of wall time per call: a tierfs worker hand-off, trio.to_thread, and a
    bare trio checkpoint."""
    import trio

    from tierfs.tiers.workers import Workers

    out: list[float] = []

    async def main() -> None:
        workers = Workers("bench", 1)
        try:
            for call in (lambda: workers.run(os.getpid),
                         lambda: trio.to_thread.run_sync(os.getpid),
                         trio.lowlevel.checkpoint):
                await call()  # threads started outside the timing
                start = time.perf_counter()
                for _ in range(calls):
                    await call()
                out.append((time.perf_counter() - start) / calls * 1e6)
        finally:
            workers.close()

    trio.run(main)
    return out[0], out[1], out[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", metavar="MOUNTPOINT", help=argparse.SUPPRESS)
    parser.add_argument("--backing", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--sync-close", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--publish-close", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stage", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    if args.serve:
        if args.backing:
            serve_passthrough(args.serve, args.backing, args.sync_close, args.threads,
                              args.publish_close, args.stage)
        else:
            serve(args.serve)
        return 0

    base = Path(tempfile.mkdtemp(prefix="tierfs-floor-bench-", dir="/var/tmp"))
    size = args.size_mib * MIB
    rows: list[tuple[str, float, float, float, float | None]] = []
    try:
        floor_mnt, mnt, hot, warm, raw = (base / n for n in ("floor", "mnt", "hot", "warm",
                                                              "raw"))
        for d in (floor_mnt, mnt, hot, warm, raw):
            d.mkdir()
        proc = start_floor(floor_mnt)
        try:
            drop_caches()
            floor_creates = args.files / timed(lambda: create_files(floor_mnt / "c", args.files))
            floor_write = args.size_mib / timed(lambda: seq_write(floor_mnt / "big", size))
            drop_caches()
            floor_read = args.size_mib / timed(lambda: seq_read(floor_mnt / "big"))
        finally:
            stop_floor(proc, floor_mnt)
        with mounted(mnt, "--hot", str(hot), "--warm", str(warm)):
            drop_caches()
            ours_creates = args.files / timed(lambda: create_files(mnt / "c", args.files))
            drop_caches()
            ours_write = args.size_mib / timed(lambda: seq_write(mnt / "big", size))
            drop_caches()
            ours_read = args.size_mib / timed(lambda: seq_read(mnt / "big"))
        drop_caches()
        raw_creates = args.files / timed(lambda: create_files(raw / "c", args.files))
        drop_caches()
        raw_durable = args.files / timed(lambda: create_files(raw / "d", args.files,
                                                              fsync=True))
        drop_caches()
        raw_write = args.size_mib / timed(lambda: seq_write(raw / "big", size))
        drop_caches()
        raw_read = args.size_mib / timed(lambda: seq_read(raw / "big"))
        rows.append((f"create {args.files} files of 4 KiB (files/s)", floor_creates,
                     ours_creates, raw_creates, raw_durable))
        rows.append(("write 1 file in 1 MiB writes + fsync (MB/s)", floor_write, ours_write,
                     raw_write, None))
        rows.append(("read it in 1 MiB reads, page cache dropped (MB/s)", floor_read, ours_read,
                     raw_read, None))
        worker, to_thread, checkpoint = hand_offs(args.calls)
    finally:
        for d in (base / "floor", base / "mnt"):
            if os.path.ismount(d):
                subprocess.run(["fusermount3", "-u", "-z", str(d)], check=False)
        shutil.rmtree(base, ignore_errors=True)

    print("tierfs floor bench: a pyfuse3 file system that does nothing, tierfs (sync mode, "
          "the tiers on one file system) and the raw directory, in one run")
    print(f"{'workload':<50}  {'no-op':>8}  {'tierfs':>8}  {'raw':>8}  {'raw+fsync':>9}  "
          f"{'tierfs/no-op':>12}")
    for name, floor, ours, plain, durable in rows:
        fsynced = "-" if durable is None else f"{durable:.0f}"
        print(f"{name:<50}  {floor:8.0f}  {ours:8.0f}  {plain:8.0f}  {fsynced:>9}  "
              f"{ours / floor:11.2f}x")
    print(f"hand-off to a worker thread and back: {worker:.0f} µs (tierfs's workers), "
          f"{to_thread:.0f} µs (trio.to_thread), against {checkpoint:.1f} µs for a bare "
          f"trio checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
