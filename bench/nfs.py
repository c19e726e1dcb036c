"""tierfs over an NFS-like warm tier against the same work done directly on that tier, in one
run: sshfs from an OpenSSH server on 127.0.0.1 whose SFTP replies wait ``--latency-ms`` after
each request (tests/nfslike.py; 1 ms by default, as managed NFS), attributes cached 3 s.

    sudo .venv/bin/python bench/nfs.py [--latency-ms 1] [--dl-files 1000] [--ckpt-mib 256]
                                       [--rows REGEX]

Columns: direct (the work on the sshfs mount); the floor (bench/floor.py's passthrough file
system over the same sshfs mount, each call in one of 16 worker threads, tierfs's default
``warm_threads``: what a pyfuse3 file system reaches that makes the tier's calls on each
request's path and keeps nothing, so where tierfs can only pass a request through to the tier,
as the first epochs' reads, creates and listings must, the floor's ratio to direct bounds
tierfs's); and tierfs with its warm tier on the same sshfs mount and its hot tier on local disk
(warm blocks cached on the hot tier, the default for a network warm tier). floor/d is the
floor's rate over direct's (``--no-floor`` leaves it out). Both trees are written at the server beforehand, so reads start from the
network. Rows: DataLoader epochs over an image-folder tree and epochs over tar-like shards
(the page cache dropped before each epoch: the second epoch is served by the tier, not by
RAM), a checkpoint save (one large file, and many 8 MiB shards; each file fsynced, as
torch.save callers that want durability do) through tierfs in sync mode (close returns once
the file is on the warm tier) and write-back mode (once it is staged on the hot tier), the
same save without fsync in write-back mode (relying on write-back's durability: close returns
once the file is staged and journaled) beside the same save without fsync on the tier, small
creates (with and without an fsync before close: tierfs's sync mode makes every file durable
on the warm tier at close, so the fsynced row compares like with like), stats of names not
looked up, and ls -l. Higher is better in every row; the ratio is
tierfs/direct. Below the table, the floor under sync-mode creates: the steps sync mode
promises (the name at once, a temp file fsynced and renamed over it at close) done directly;
the floor under the second DataLoader epoch, which tierfs serves from the hot tier's disk:
the same epoch through the passthrough over a copy of the tree on the local disk; and the
floor under the write-back saves without fsync, which tierfs stages on the hot tier's disk:
the same saves through the passthrough over a directory on the local disk; the floor under
write-back creates and those saves where each new name is made on the tier at its create, as
tierfs makes it: the passthrough naming files on the tier and staging their data locally; and
the floor under the fsynced saves: each file saved directly in the steps an fsync through
tierfs promises (the name at once, a temp file fsynced and renamed over it).

Root is needed (sshd, FUSE mounts, dropping the page cache). The machine is shared and noisy:
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from checkpoint import write_file  # noqa: E402
from common import MIB, TIERFS, drop_caches, read_all  # noqa: E402
from floor import start_floor, stop_floor  # noqa: E402
from nfslike import NfsLike  # noqa: E402
from run import create_files, stat_files, timed  # noqa: E402
from small import loader_epoch, ls_l, populate  # noqa: E402

KIB = 1024


def populate_shards(d: Path, count: int, size: int) -> None:
    """Tar-like shards: ``count`` files of ``size`` bytes."""
    d.mkdir(parents=True, exist_ok=True)
    data = os.urandom(MIB)
    for i in range(count):
        with open(d / f"shard-{i:05d}.tar", "wb") as f:
            for _ in range(size // MIB):
                f.write(data)


def shard_epoch(d: Path) -> Callable[[], int]:
    """Read every shard front to back in 1 MiB reads, as a WebDataset-style loader does."""
    def epoch() -> int:
        return sum(read_all(p) for p in sorted(d.iterdir()))
    return epoch


def checkpoint(root: Path, name: str, big: int, shards: int, block: bytes, fsync: bool = True,
               settle: Callable[[], object] = lambda: None,
               write: Callable[[Path, int, bytes, bool], None] = write_file
               ) -> tuple[float, float]:
    """Seconds to save one ``big``-byte file, and ``shards`` files of 8 MiB; each fsynced
    unless ``fsync`` is false. ``settle`` runs after each save, untimed (for write-back: its
    publishing in the background must not slow the next save down); ``write`` saves a file."""
    d = root / name
    d.mkdir()
    drop_caches()
    one = timed(lambda: write(d / "model.pt", big, block, fsync))
    settle()
    many_dir = d / "shards"
    many_dir.mkdir()
    drop_caches()
    many = timed(lambda: [write(many_dir / f"shard-{i:04d}.pt", 8 * MIB, block, fsync)
                          for i in range(shards)])
    settle()
    return one, many


def create_as_sync_mode(d: Path, count: int) -> None:
    """The steps tierfs's sync mode promises for each new file, done directly on the tier:
    the name made at once (other nodes see an empty file from the create on), the data in a
    temp file beside it, fsynced, and renamed over the name at close (so that no reader ever
    sees it half-written, and it is durable when close returns). The floor under sync-mode
    creates on this tier: any tool keeping those promises makes these round trips."""
    d.mkdir()
    data = os.urandom(4096)
    for i in range(count):
        name = d / f"f{i:05d}"
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        tmp = d / f".f{i:05d}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, name)


def save_as_sync_mode(path: Path, size: int, block: bytes, fsync: bool) -> None:
    """One file saved (``fsync`` must be true) in the steps an fsync through tierfs promises,
    in either mode, done directly on the tier: the name made at once, the data written to a
    temp file beside it, fsynced, and renamed over the name (no reader sees it half-written).
    The floor under the fsynced saves for any file system keeping those promises."""
    assert fsync
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for _ in range(size // len(block)):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def fill(root: Path, args: argparse.Namespace) -> None:
    """The trees the read rows use, written at the server (no request over the network)."""
    populate(root / "dl", args.dl_files, args.dl_kib * KIB, classes=10)
    populate_shards(root / "shards", args.shards, args.shard_mib * MIB)
    populate(root / "st", args.files, 0)
    populate(root / "ls", args.entries, 0)


def wanted(args: argparse.Namespace, row: str) -> bool:
    """Whether ``--rows`` selects a row (by its name)."""
    return args.rows is None or re.search(args.rows, row) is not None


def loader_row(args: argparse.Namespace, epoch: int) -> str:
    return f"DataLoader epoch {epoch}, {args.dl_files} x {args.dl_kib} KiB (files/s)"


def reads(root: Path, args: argparse.Namespace, out: dict[str, float]) -> None:
    epoch = loader_epoch(root / "dl", args.dl_files)
    # A second epoch is measured only after its first (which fills the cache it reads).
    for n in ((1, 2) if wanted(args, loader_row(args, 2))
              else (1,) if wanted(args, loader_row(args, 1)) else ()):
        drop_caches()
        out[loader_row(args, n)] = args.dl_files / timed(epoch)
    shards = shard_epoch(root / "shards")
    total_mb = args.shards * args.shard_mib * MIB / 1e6
    row = f"shard epoch %d, {args.shards} x {args.shard_mib} MiB (MB/s)"
    for n in (1, 2) if wanted(args, row % 2) else (1,) if wanted(args, row % 1) else ():
        drop_caches()
        out[row % n] = total_mb / timed(shards)
    row = f"stat, not looked up, {args.files} (stats/s)"
    if wanted(args, row):
        drop_caches()
        out[row] = args.files / timed(lambda: stat_files(root / "st", args.files))
    row = f"ls -l of {args.entries} entries (entries/s)"
    if wanted(args, row):
        drop_caches()
        out[row] = args.entries / timed(lambda: ls_l(root / "ls"))


#: Worker threads of the floor's passthrough: tierfs's default ``warm_threads``.
FLOOR_THREADS = 16
#: The floor of the second DataLoader epoch (``cached_floor``), printed below the table.
CACHED_FLOOR = "DataLoader epoch 2 through the passthrough over the local disk (files/s)"


def cached_floor(base: Path, args: argparse.Namespace) -> float:
    """The most a second epoch served from the hot tier's disk can reach through pyfuse3:
    bench/floor.py's passthrough (its calls inline on the event loop, its fastest) over a copy
    of the tree on the local disk, the page cache dropped before each epoch as for the rows."""
    local, mnt = base / "local", base / "floor-local"
    populate(local / "dl", args.dl_files, args.dl_kib * KIB, classes=10)
    mnt.mkdir()
    proc = start_floor(mnt, local)
    try:
        epoch = loader_epoch(mnt / "dl", args.dl_files)
        rate = 0.0
        for _ in range(2):  # (a first epoch before, as tierfs's second epoch has)
            drop_caches()
            rate = args.dl_files / timed(epoch)
        return rate
    finally:
        stop_floor(proc, mnt)


#: The floors of the write-back saves without fsync (``staged_floor``), printed below the table.
STAGED_FLOORS = ("one file, no fsync, through the passthrough over the local disk (MB/s)",
                 "shards, no fsync, through the passthrough over the local disk (MB/s)")


def save_rows(args: argparse.Namespace, kind: str) -> tuple[str, str]:
    """The names of the checkpoint save rows of one kind (one file; the shards)."""
    return (f"checkpoint {args.ckpt_mib} MiB file, {kind} (MB/s)",
            f"checkpoint {args.ckpt_shards} x 8 MiB shards, {kind} (MB/s)")


def nofsync_rows(args: argparse.Namespace) -> tuple[str, str]:
    """The names of the write-back save rows without fsync (one file; the shards)."""
    return save_rows(args, "no fsync, writeback")


def save_rates(args: argparse.Namespace, one: float, many: float) -> tuple[float, float]:
    """MB/s of ``checkpoint``'s two saves, from their seconds."""
    return args.ckpt_mib * MIB / 1e6 / one, args.ckpt_shards * 8 * MIB / 1e6 / many


def staged_floor(base: Path, args: argparse.Namespace, block: bytes) -> dict[str, float]:
    """The most a write-back save can reach through pyfuse3 on this machine: the same saves
    without fsync through bench/floor.py's passthrough (calls inline, its fastest) over a
    directory on the local disk, where write-back stages them; it makes no name and sends no
    byte to the tier, which tierfs's saves do (each name is made on the tier at its create)."""
    local, mnt = base / "local-saves", base / "floor-saves"
    local.mkdir()
    mnt.mkdir()
    proc = start_floor(mnt, local)
    try:
        one, many = checkpoint(mnt, "ckpt", args.ckpt_mib * MIB, args.ckpt_shards, block,
                               fsync=False)
    finally:
        stop_floor(proc, mnt)
        shutil.rmtree(local, ignore_errors=True)
    return dict(zip(STAGED_FLOORS, save_rates(args, one, many)))


#: The rows of ``named_floor``, printed below the table: the write-back create row and the two
#: saves without fsync.
NAMED_FLOORS = ("creates through the passthrough naming on the tier, staging locally (files/s)",
                "one file, no fsync, through the passthrough naming on the tier (MB/s)",
                "shards, no fsync, through the passthrough naming on the tier (MB/s)")


def named_floor(base: Path, tier: Path, args: argparse.Namespace, block: bytes
                ) -> dict[str, float]:
    """The most a write-back create and save reach through pyfuse3 here while each new name
    is made on the tier at its create, as tierfs makes it (other nodes see the name at once,
    and ``O_EXCL`` fails there on a name another node made): bench/floor.py's passthrough
    over the tier (its calls in worker threads, as tierfs's) whose creates make the name on
    the tier and stage the data in a local directory, never sent to the tier; its lookups and
    getattrs ask the tier (a name another node made is found at once, and times are the
    tier's)."""
    stage, mnt = base / "named-stage", base / "floor-named"
    tier.mkdir()
    stage.mkdir()
    mnt.mkdir()
    proc = start_floor(mnt, tier, threads=FLOOR_THREADS, stage=stage)
    try:
        drop_caches()
        creates = args.creates / timed(lambda: create_files(mnt / "new", args.creates))
        one, many = checkpoint(mnt, "ckpt", args.ckpt_mib * MIB, args.ckpt_shards, block,
                               fsync=False)
    finally:
        stop_floor(proc, mnt)
        shutil.rmtree(stage, ignore_errors=True)
    return dict(zip(NAMED_FLOORS, (creates, *save_rates(args, one, many))))


#: The direct-only rows of the fsynced saves in sync mode's steps, printed below the table.
SYNC_SAVES = ("one file saved in sync mode's steps, directly (MB/s)",
              "shards saved in sync mode's steps, directly (MB/s)")


#: The direct-only row of ``create_as_sync_mode``, printed below the table.
SYNC_STEPS = "create+write+close 4 KiB, sync mode's steps done directly (files/s)"


def writes(root: Path, args: argparse.Namespace, mode: str, block: bytes,
           out: dict[str, float]) -> None:
    """Creates and checkpoint saves; ``mode`` names the rows (direct: both modes' rows)."""
    modes = ("sync", "writeback") if mode in ("direct", "floor") else (mode,)
    # Write-back leaves publishing in the background: done, untimed, before the next row,
    # which would otherwise share the tier with it and be slowed by another row's work.
    settle = (lambda: subprocess.run([*TIERFS, "flush", str(root)], check=True,
                                     capture_output=True)) if mode == "writeback" else (
        lambda: None)
    drop_caches()
    rate = args.creates / timed(lambda: create_files(root / f"new-{mode}", args.creates))
    settle()
    durable = args.creates / timed(lambda: create_files(root / f"durable-{mode}", args.creates,
                                                        fsync=True))
    one, many = checkpoint(root, f"ckpt-{mode}", args.ckpt_mib * MIB, args.ckpt_shards, block)
    for m in modes:
        out[f"create+write+close 4 KiB, {m} (files/s)"] = rate
        out[f"create+write+fsync+close 4 KiB, {m} (files/s)"] = durable
        out.update(zip(save_rows(args, m), save_rates(args, one, many)))
    if mode in ("direct", "floor", "writeback"):
        # Without fsync: write-back's close returns once the file is staged and journaled
        # (durable on the hot tier, home later), beside the same save straight to the tier.
        # Last, so the publishing it leaves in the background slows no other row.
        one, many = checkpoint(root, f"ckpt-{mode}-nofsync", args.ckpt_mib * MIB,
                               args.ckpt_shards, block, fsync=False, settle=settle)
        out.update(zip(nofsync_rows(args), save_rates(args, one, many)))


@contextmanager
def tierfs_mounted(mnt: Path, hot: Path, warm: Path, durability: str) -> Iterator[Path]:
    mnt.mkdir(exist_ok=True)
    hot.mkdir(exist_ok=True)
    subprocess.run([*TIERFS, "mount", str(mnt), "--hot", str(hot), "--warm", str(warm),
                    "--durability", durability, "--cache-warm", "true"], check=True)
    try:
        yield mnt
    finally:
        start = time.perf_counter()
        subprocess.run([*TIERFS, "unmount", str(mnt)], check=False, capture_output=True)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        print(f"  (tierfs {durability} unmounted in {time.perf_counter() - start:.1f} s)",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=1.0)
    parser.add_argument("--max-conns", type=int, default=4,
                        help="sshfs connections to the server (as NFS nconnect)")
    parser.add_argument("--dl-files", type=int, default=1000)
    parser.add_argument("--dl-kib", type=int, default=32)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--shard-mib", type=int, default=8)
    parser.add_argument("--ckpt-mib", type=int, default=256)
    parser.add_argument("--ckpt-shards", type=int, default=16)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rows", default=None, metavar="REGEX",
                        help="only the rows whose name this matches (the write rows all or "
                             "none: 'create|checkpoint' runs them), e.g. 'epoch 1'")
    parser.add_argument("--no-floor", action="store_true",
                        help="leave out the floor column (bench/floor.py's passthrough)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the hot tier and the server's files go (a local disk)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/nfs.py needs root (sshd, FUSE mounts, drop_caches)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup below still runs
    base = Path(tempfile.mkdtemp(prefix="tierfs-nfs-bench-", dir=args.dir))
    server = NfsLike(base / "nfs", latency=args.latency_ms / 1000, max_conns=args.max_conns)
    results: dict[str, dict[str, float]] = {"direct": {}, "floor": {}, "tierfs": {}}
    block = os.urandom(MIB)
    try:
        server.start()
        for tree in ("direct", "warm") if args.no_floor else ("direct", "floor-back", "warm"):
            fill(server.export / tree, args)
        direct, warm = server.path / "direct", server.path / "warm"
        print(f"NFS-like tier: sshfs, {args.latency_ms:g} ms per reply, {args.max_conns} "
              f"connections; files under {base}", flush=True)
        requests: dict[str, int] = {}
        server.reset_stats()
        reads(direct, args, results["direct"])
        requests["direct reads"] = server.stats()[0]
        do_writes = wanted(args, "create") or wanted(args, "checkpoint")
        if do_writes:
            server.reset_stats()
            writes(direct, args, "direct", block, results["direct"])
            requests["direct writes"] = server.stats()[0]
            # (Not in the request count above, which compares the same work on each side.)
            results["direct"][SYNC_STEPS] = args.creates / timed(
                lambda: create_as_sync_mode(direct / "as-sync-mode", args.creates))
            one, many = checkpoint(direct, "ckpt-as-sync-mode", args.ckpt_mib * MIB,
                                   args.ckpt_shards, block, write=save_as_sync_mode)
            results["direct"].update(zip(SYNC_SAVES, save_rates(args, one, many)))
        print("  (direct done)", flush=True)
        if not args.no_floor:
            (base / "floor").mkdir()
            proc = start_floor(base / "floor", server.path / "floor-back",
                               threads=FLOOR_THREADS)
            try:
                server.reset_stats()
                reads(base / "floor", args, results["floor"])
                requests["floor reads"] = server.stats()[0]
                if do_writes:
                    server.reset_stats()
                    writes(base / "floor", args, "floor", block, results["floor"])
                    requests["floor writes"] = server.stats()[0]
            finally:
                stop_floor(proc, base / "floor")
            print("  (floor done)", flush=True)
        if not args.no_floor and wanted(args, loader_row(args, 2)):
            results["direct"][CACHED_FLOOR] = cached_floor(base, args)
        if not args.no_floor and do_writes:
            results["direct"].update(staged_floor(base, args, block))
            results["direct"].update(named_floor(base, server.path / "floor-named", args,
                                                 block))
        for durability in ("sync", "writeback") if do_writes else ("sync",):
            with tierfs_mounted(base / "mnt", base / f"hot-{durability}", warm,
                                durability) as mnt:
                if durability == "sync":
                    server.reset_stats()
                    reads(mnt, args, results["tierfs"])
                    requests["tierfs reads"] = server.stats()[0]
                if do_writes:
                    server.reset_stats()
                    writes(mnt, args, durability, block, results["tierfs"])
                    requests[f"tierfs {durability} writes"] = server.stats()[0]
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n{'':58} {'direct':>10} {'floor':>10} {'tierfs':>10} {'ratio':>7} "
          f"{'floor/d':>8}")
    for row, raw in results["direct"].items():
        ours = results["tierfs"].get(row)
        if ours is None:
            continue
        floor = results["floor"].get(row)
        cells = ("-", "-") if floor is None else (f"{floor:.1f}", f"{floor / raw:.2f}x")
        print(f"{row:58} {raw:10.1f} {cells[0]:>10} {ours:10.1f} {ours / raw:6.2f}x "
              f"{cells[1]:>8}")
    steps = results["direct"].get(SYNC_STEPS)
    plain = results["direct"].get("create+write+close 4 KiB, sync (files/s)")
    ours = results["tierfs"].get("create+write+close 4 KiB, sync (files/s)")
    if steps and plain and ours:
        print(f"\nSync mode's steps done directly (name at once, temp file fsynced and renamed "
              f"at close): {steps:.1f} files/s, {steps / plain:.2f}x of direct's plain create; "
              f"tierfs's sync-mode creates {ours / steps:.2f}x of it")
    cached = results["direct"].get(CACHED_FLOOR)
    plain = results["direct"].get(loader_row(args, 2))
    ours = results["tierfs"].get(loader_row(args, 2))
    if cached and plain and ours:
        print(f"\nSecond DataLoader epoch's floor (the passthrough over a copy on the local "
              f"disk, calls inline): {cached:.1f} files/s, {cached / plain:.2f}x of direct's "
              f"second epoch; tierfs's second epoch {ours / cached:.2f}x of it")
    for floor_row, row in zip(STAGED_FLOORS, nofsync_rows(args)):
        floor, plain, ours = (results["direct"].get(floor_row), results["direct"].get(row),
                              results["tierfs"].get(row))
        if floor and plain and ours:
            print(f"\nFloor of the write-back save ({row.split(',')[0]}, no fsync): "
                  f"{floor:.1f} MB/s through the passthrough over the local disk (calls "
                  f"inline), {floor / plain:.2f}x of direct's save; tierfs's {ours / floor:.2f}x "
                  f"of it")
    plain = results["direct"].get("create+write+close 4 KiB, writeback (files/s)")
    ours = results["tierfs"].get("create+write+close 4 KiB, writeback (files/s)")
    named = results["direct"].get(NAMED_FLOORS[0])
    if named and plain and ours:
        print(f"\nFloor of write-back creates that make the name on the tier at once (the "
              f"passthrough naming on the tier, data staged locally): {named:.1f} files/s, "
              f"{named / plain:.2f}x of direct's create; tierfs's {ours / named:.2f}x of it")
    for floor_row, row in zip(NAMED_FLOORS[1:], nofsync_rows(args)):
        floor, plain, ours = (results["direct"].get(floor_row), results["direct"].get(row),
                              results["tierfs"].get(row))
        if floor and plain and ours:
            print(f"Floor of the write-back save ({row.split(',')[0]}, no fsync) with each "
                  f"name made on the tier at once: {floor:.1f} MB/s, {floor / plain:.2f}x of "
                  f"direct's save; tierfs's {ours / floor:.2f}x of it")
    for steps_row, sync_row, wb_row in zip(SYNC_SAVES, save_rows(args, "sync"),
                                           save_rows(args, "writeback")):
        steps, plain = results["direct"].get(steps_row), results["direct"].get(sync_row)
        if steps and plain:
            ours = [results["tierfs"].get(r) for r in (sync_row, wb_row)]
            mine = " / ".join(f"{o / steps:.2f}x" for o in ours if o)
            print(f"Fsynced save ({sync_row.split(',')[0]}) in sync mode's steps done "
                  f"directly (name at once, temp file fsynced and renamed): {steps:.1f} MB/s, "
                  f"{steps / plain:.2f}x of direct's fsynced save; tierfs's (sync / "
                  f"write-back) {mine} of it")
    print("\nSFTP requests: " + ", ".join(f"{k} {v:,}" for k, v in requests.items())
          + " (tierfs's write-back counts stop at the last save, not when its uploads end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
