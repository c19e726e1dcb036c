"""Small operations through tierfs against three baselines on the same disk, in one run.

    sudo .venv/bin/python bench/small.py [--files 2000] [--entries 10000] [--size-mib 256]
                                         [--dl-files 2000 | --dl-full] [--only creates]

Columns: the plain directory; the floor (bench/floor.py's passthrough file system: pyfuse3
with each disk call made inline on the event loop, so the least a pyfuse3 file system that
keeps its files in a directory can cost); mergerfs over a directory of its own (an
established FUSE file system, installed with apt-get when missing); tierfs (hot and warm tiers
on the same disk, as bench/run.py mounts it). Each gets a directory of its own under one
temporary directory; the files the read, stat, listing and DataLoader jobs use are written
into the backing directory (tierfs's warm tier) directly, so those rows measure reading, not
creating. Higher is better in every row; the ratios are tierfs over each baseline.

Below the table, the create job once more on a durable floor: the same passthrough on a
mount and backing directory of its own, whose close of a file written since open makes an
``fdatasync`` (``--sync-close``), the least a close that promises durability must pay, as
both of tierfs's durability modes do; and on a floor that also publishes as sync mode
promises (``--publish-close``: the name made at create, the data written to a temp file
beside it, fdatasynced and renamed over the name at close). tierfs's creates over both.
``--only creates`` runs the create job alone on every system.

Root is needed to drop the page cache. The machine is shared and noisy: compare ratios
within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common import MIB, TIERFS, drop_caches
from floor import start_floor, stop_floor
from run import create_files, seq_write, stat_files, timed

KIB = 1024
SYSTEMS = ("plain", "floor", "mergerfs", "tierfs")


def populate(d: Path, count: int, size: int, classes: int = 1) -> None:
    """``count`` files of ``size`` bytes, spread over ``classes`` subdirectories if > 1."""
    data = os.urandom(size)
    d.mkdir(parents=True, exist_ok=True)
    if classes > 1:
        for c in range(classes):
            (d / f"c{c:02d}").mkdir(exist_ok=True)
    for i in range(count):
        where = d / f"c{i % classes:02d}" if classes > 1 else d
        with open(where / f"f{i:05d}", "wb") as f:
            f.write(data)


def read_files(d: Path, count: int) -> None:
    for i in range(count):
        fd = os.open(d / f"f{i:05d}", os.O_RDONLY)
        try:
            while os.read(fd, 128 * KIB):
                pass
        finally:
            os.close(fd)


def ls_l(d: Path) -> None:
    for entry in os.scandir(d):
        entry.stat(follow_symlinks=False)


def loader_epoch(root: Path, files: int) -> Callable[[], None]:
    """One epoch of a torch DataLoader (2 workers, batches of 32) over an image-folder tree:
    each item the bytes of one file as a uint8 tensor."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    paths = sorted(str(p) for p in root.rglob("f*"))
    assert len(paths) == files, (len(paths), files)

    class Files(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int) -> torch.Tensor:
            with open(paths[i], "rb") as f:
                return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)

    def epoch() -> None:
        seen = 0
        for batch in DataLoader(Files(), batch_size=32, shuffle=True, num_workers=2):
            seen += batch.shape[0]
        assert seen == files

    return epoch


def jobs(root: Path, args: argparse.Namespace, torch_ok: bool, creates_only: bool = False,
         new: str = "new") -> dict[str, float]:
    """Rates of every job on a mounted (or plain) directory ``root``: operations or MB/s."""
    out: dict[str, float] = {}
    n = args.files
    drop_caches()
    out["create+write+close 4 KiB (files/s)"] = n / timed(
        lambda: create_files(root / new, n))
    if creates_only:
        return out
    for size in (4, 64):
        d = root / f"r{size}"
        read_files(d, n)
        out[f"open+read+close {size} KiB, cache warm (files/s)"] = n / timed(
            lambda d=d: read_files(d, n))
        drop_caches()
        out[f"open+read+close {size} KiB, cache dropped (files/s)"] = n / timed(
            lambda d=d: read_files(d, n))
    for block in (16, 128):
        drop_caches()
        out[f"seq write {args.size_mib} MiB in {block} KiB writes + fsync (MB/s)"] = (
            args.size_mib / timed(lambda block=block: seq_write(root / "seq",
                                                                args.size_mib * MIB,
                                                                block * KIB)))
        (root / "seq").unlink()
    drop_caches()
    out["stat, not looked up (stats/s)"] = n / timed(lambda: stat_files(root / "st", n))
    drop_caches()
    out[f"ls -l of {args.entries} entries (entries/s)"] = args.entries / timed(
        lambda: ls_l(root / "ls"))
    if torch_ok:
        epoch = loader_epoch(root / "dl", args.dl_files)
        drop_caches()
        out["DataLoader epoch 1, cache dropped (files/s)"] = args.dl_files / timed(epoch)
        out["DataLoader epoch 2 (files/s)"] = args.dl_files / timed(epoch)
    return out


def fill(backing: Path, args: argparse.Namespace, torch_ok: bool) -> None:
    """The files the read, stat, listing and DataLoader jobs use, written directly."""
    populate(backing / "r4", args.files, 4 * KIB)
    populate(backing / "r64", args.files, 64 * KIB)
    populate(backing / "st", args.files, 0)
    populate(backing / "ls", args.entries, 0)
    if torch_ok:
        populate(backing / "dl", args.dl_files, 64 * KIB, classes=10)
    os.sync()


def unmount(mnt: Path) -> None:
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


@contextmanager
def floor_mounted(mnt: Path, backing: Path, sync_close: bool = False,
                  publish_close: bool = False) -> Iterator[Path]:
    proc = start_floor(mnt, backing, sync_close, publish_close=publish_close)
    try:
        yield mnt
    finally:
        stop_floor(proc, mnt)
        unmount(mnt)


def have_mergerfs() -> str | None:
    """None when mergerfs can be run (installing it if missing), else why not."""
    if shutil.which("mergerfs"):
        return None
    if not shutil.which("apt-get"):
        return "mergerfs is not installed and there is no apt-get"
    got = subprocess.run(["apt-get", "install", "-y", "-q", "mergerfs"],
                         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                         capture_output=True, text=True, check=False)
    if got.returncode != 0 or not shutil.which("mergerfs"):
        last = (got.stderr or got.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"apt-get install mergerfs failed: {last[0]}"
    return None


@contextmanager
def mergerfs_mounted(mnt: Path, backing: Path) -> Iterator[Path]:
    # Entry and attribute timeouts of 1 s, as tierfs's and the floor's.
    subprocess.run(["mergerfs", "-o", "fsname=bench-mergerfs,cache.entry=1,cache.attr=1",
                    str(backing), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        unmount(mnt)


@contextmanager
def tierfs_mounted(mnt: Path, hot: Path, warm: Path, durability: str) -> Iterator[Path]:
    try:
        subprocess.run([*TIERFS, "mount", str(mnt), "--hot", str(hot), "--warm", str(warm),
                        "--durability", durability], check=True)
        yield mnt
    finally:
        subprocess.run([*TIERFS, "unmount", str(mnt)], check=False, capture_output=True)
        unmount(mnt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to put everything (default: a temporary directory under "
                        "/var/tmp)")
    parser.add_argument("--files", type=int, default=2000,
                        help="files per read, create and stat job")
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--size-mib", type=int, default=256,
                        help="size of the sequentially written file")
    parser.add_argument("--dl-files", type=int, default=2000,
                        help="64 KiB files in the DataLoader's tree")
    parser.add_argument("--dl-full", action="store_true", help="the DataLoader over 8,000 files")
    parser.add_argument("--only", choices=["creates"], help="run the create job alone")
    args = parser.parse_args()
    creates_only = args.only == "creates"
    if args.dl_full:
        args.dl_files = 8000
    try:
        import torch  # noqa: F401
        torch_ok = True
    except ImportError:
        torch_ok = False
    if not drop_caches():
        print("not root: the page cache is not dropped, cache-dropped rows are warm",
              file=sys.stderr)

    # Killed with SIGTERM, the run still unmounts and removes what it made.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="tierfs-small-", dir=args.dir or "/var/tmp"))
    results: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    try:
        dirs = {n: base / n for n in ("plain", "floor-back", "floor", "synced-back", "synced",
                                      "published-back", "published", "merger-back", "merger",
                                      "hot", "warm", "mnt")}
        for d in dirs.values():
            d.mkdir()
        for backing in (dirs["plain"], dirs["floor-back"], dirs["merger-back"], dirs["warm"]):
            if not creates_only:  # the create job makes its own files
                fill(backing, args, torch_ok)

        results["plain"] = jobs(dirs["plain"], args, torch_ok, creates_only)
        with floor_mounted(dirs["floor"], dirs["floor-back"]) as mnt:
            results["floor"] = jobs(mnt, args, torch_ok, creates_only)
        with floor_mounted(dirs["synced"], dirs["synced-back"], sync_close=True) as mnt:
            synced = jobs(mnt, args, torch_ok, creates_only=True)
        with floor_mounted(dirs["published"], dirs["published-back"],
                           publish_close=True) as mnt:
            published = jobs(mnt, args, torch_ok, creates_only=True)
        why = have_mergerfs()
        if why is None:
            with mergerfs_mounted(dirs["merger"], dirs["merger-back"]) as mnt:
                results["mergerfs"] = jobs(mnt, args, torch_ok, creates_only)
        else:
            notes.append(f"mergerfs: not measured ({why})")
        with tierfs_mounted(dirs["mnt"], dirs["hot"], dirs["warm"], "sync") as mnt:
            results["tierfs"] = jobs(mnt, args, torch_ok, creates_only)
        with tierfs_mounted(dirs["mnt"], dirs["hot"], dirs["warm"], "writeback") as mnt:
            wb = jobs(mnt, args, torch_ok, creates_only=True, new="new-writeback")
    finally:
        for name in ("floor", "synced", "published", "merger", "mnt"):
            unmount(base / name)
        shutil.rmtree(base, ignore_errors=True)

    if not torch_ok:
        notes.append("DataLoader rows: not measured (torch is not importable)")
    print(f"tierfs small-operations bench: {args.files} files per job, {args.entries}-entry "
          f"directory, {args.size_mib} MiB sequential file, DataLoader over {args.dl_files} "
          f"files of 64 KiB; tierfs in sync durability unless marked"
          f"{'; the create job alone' if creates_only else ''}")
    rows: list[tuple[str, str, dict[str, float]]] = []
    for key in results["plain"]:
        rows.append((key, key, results["tierfs"]))
        if key.startswith("create"):
            rows.append(("  tierfs in writeback durability", key, wb))
    width = max(len(label) for label, _, _ in rows)
    head = "".join(f"{s:>10}" for s in SYSTEMS)
    print(f"{'job'.ljust(width)}{head}{'t/floor':>9}{'t/merger':>9}{'t/plain':>9}")
    for label, key, ours in rows:
        cells = [results.get(s, {}).get(key) for s in ("plain", "floor", "mergerfs")]
        mine = ours[key]
        figs = "".join("       n/a" if v is None else f"{v:10.0f}" for v in cells)
        ratios = "".join("      n/a" if v is None else f"{mine / v:8.2f}x"
                         for v in (cells[1], cells[2], cells[0]))
        print(f"{label.ljust(width)}{figs}{mine:10.0f}{ratios}")
    key = next(iter(synced))
    floor, durable, put = results["floor"][key], synced[key], published[key]
    print(f"\n{'durable floors (creates, files/s)':<{width}}{'floor':>10}{'+fdatasync':>11}"
          f"{'+publish':>10}{'tierfs':>10}{'t/+fdatasync':>13}{'t/+publish':>11}")
    for label, ours in ((key, results["tierfs"]), ("  tierfs in writeback durability", wb)):
        print(f"{label.ljust(width)}{floor:10.0f}{durable:11.0f}{put:10.0f}{ours[key]:10.0f}"
              f"{ours[key] / durable:12.2f}x{ours[key] / put:10.2f}x")
    print(f"(of the floor: with fdatasync at close {durable / floor:.2f}x, with sync mode's "
          f"publish at close {put / floor:.2f}x)")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
