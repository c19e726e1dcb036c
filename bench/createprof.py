"""Where a create's time goes in the tierfs daemon: py-spy on it during bench/small.py's
create job (create, write 4 KiB, close; one file after another), in each durability mode.

    sudo .venv/bin/python bench/createprof.py [--files 2000] [--rate 500] [--nonblocking]
                                              [--modes sync writeback] [--keep DIR]

For each mode: mounts tierfs as bench/small.py does (hot and warm tiers on one disk), makes
200 creates to warm it up, times the job once without the profiler, then once more while
``py-spy record --format raw --threads --idle`` samples the daemon (every thread, idle or
not: a thread waiting on the disk in an fsync counts as idle to py-spy). Every figure is in
µs per create: each sample stands for the recording's wall time over the event loop thread's
samples. Printed per mode:

- the create's wall time, with and without the profiler (py-spy pauses the daemon at each
  sample unless --nonblocking);
- per thread: its samples not waiting for work, by the call a worker thread was given (the
  frame under ``Workers._work``) and by the innermost frame there (the line of tierfs that
  made the system call, e.g. an fsync or LMDB's commit);
- the event loop thread: its time waiting in epoll, and its time working by the module of the
  innermost frame (a tierfs module, trio, pyfuse3, the standard library; pyfuse3's request
  handling is Cython, which py-spy does not see, so its reading of requests and writing of
  replies shows as the innermost Python frame above it, ``async_wrapper``'s in
  pyfuse3/_pyfuse3.py), then the tierfs functions with the most time under them (inclusive;
  ``Operations.<request>`` per FUSE request, where py-spy sees it);
- what is left of the wall time once the loop's and the workers' work is taken out: the FUSE
  round trips in the kernel and the job's own system calls (an estimate: with one file
  created at a time, the loop and a worker seldom work at once, but write-back's background
  publishes overlap).

Needs root (FUSE mounts as bench/small.py; py-spy attaches with ptrace) and py-spy beside the
interpreter (``pip install py-spy`` in the same environment). ``--keep DIR`` keeps the raw
profiles there (``<mode>.txt``, one line per stack with its sample count).
"""

from __future__ import annotations

import argparse
import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from common import drop_caches
from run import create_files, timed
from small import tierfs_mounted

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tierfs.mounting import daemon_pids

PY_SPY = Path(sys.executable).parent / "py-spy"
#: A frame in py-spy's raw output: "function (file:line)".
FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def record(pid: int, out: Path, args: argparse.Namespace, job: Callable[[], object]
           ) -> float:
    """Run ``job`` while py-spy records ``pid`` into ``out``; the recording's wall time."""
    cmd = [str(PY_SPY), "record", "-p", str(pid), "-f", "raw", "-o", str(out), "-r",
           str(args.rate), "--threads", "--idle", "--full-filenames"]
    cmd += ["--nonblocking"] * args.nonblocking
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert spy.stdout is not None
    for line in spy.stdout:  # "py-spy> Sampling process N times a second ..." once attached
        if "Sampling" in line:
            break
    start = time.perf_counter()
    job()
    spy.send_signal(signal.SIGINT)
    wall = time.perf_counter() - start
    spy.wait(timeout=60)
    return wall


def parse(path: Path) -> dict[str, Counter[tuple[str, ...]]]:
    """Stacks (root first) and their sample counts, per thread name (trailing number
    dropped: tierfs-hot-0 and tierfs-hot-1 are one pool)."""
    threads: dict[str, Counter[tuple[str, ...]]] = defaultdict(Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2:  # a thread py-spy saw no Python frame in
            continue
        name = frames[0].split(": ", 1)[-1]
        threads[re.sub(r"-\d+$", "", name)][tuple(frames[1:])] += int(count)
    return threads


def where(frame: str) -> tuple[str, str, str]:
    """(function, module, line) of a frame; module relative to tierfs's repository or to
    site-packages / the standard library."""
    m = FRAME.match(frame)
    if not m:
        return frame, "native", ""
    path = m["file"]
    for marker in ("/site-packages/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            path = path.split("/", 1)[1] if marker == "/lib/python3." else path
            break
    else:
        path = re.sub(r".*/(?=tierfs/)", "", path)
    return m["fn"], path, m["line"]


def is_tierfs(frame: str) -> bool:
    return where(frame)[1].startswith("tierfs/")


def waiting(stack: tuple[str, ...]) -> bool:
    """The event loop waiting in epoll, or a worker thread waiting for its next call (its
    innermost frame the line of ``_work`` that takes from the queue, or trio's that waits
    for its lock)."""
    m = FRAME.match(stack[-1]) if stack else None
    if m is None:
        return False
    if m["fn"].endswith("get_events"):
        return True
    line = linecache.getline(m["file"], int(m["line"]))
    return m["fn"].endswith("._work") and (".get(" in line or ".acquire(" in line)


def worker_call(stack: tuple[str, ...]) -> str:
    """The function a worker thread was handed: the frame under outcome's ``capture``."""
    for i, frame in enumerate(stack):
        if where(frame)[0] == "capture" and i + 1 < len(stack):
            fn, module, _ = where(stack[i + 1])
            return f"{fn} ({module})"
    return "(between calls: handing the result back to the loop)"


def report(mode: str, threads: dict[str, Counter[tuple[str, ...]]], wall: float, files: int,
           plain: float, top: int) -> None:
    loop = threads.get("MainThread", Counter())
    per = wall / max(1, sum(loop.values())) / files * 1e6  # µs per create of one sample
    print(f"\n== tierfs, {mode} durability: {wall / files * 1e6:.0f} µs per create while "
          f"profiled, {plain / files * 1e6:.0f} µs without the profiler "
          f"({sum(loop.values())} samples of the event loop)")
    busy_total = 0.0
    for name in sorted(threads):
        if name == "MainThread":
            continue
        stacks = threads[name]
        busy = Counter({s: n for s, n in stacks.items() if not waiting(s)})
        if not busy:
            continue
        busy_total += sum(busy.values()) * per
        print(f"thread {name}: {sum(busy.values()) * per:.0f} µs working")
        calls: Counter[str] = Counter()
        leaves: Counter[str] = Counter()
        for s, n in busy.items():
            calls[worker_call(s)] += n
            fn, module, line = where(s[-1])
            leaves[f"{fn} ({module}:{line})"] += n
        for label, counts in (("call", calls), ("innermost", leaves)):
            for what, n in counts.most_common(top):
                print(f"  {label:<9} {n * per:7.0f}  {what}")
    idle = sum(n for s, n in loop.items() if waiting(s))
    working = sum(loop.values()) - idle
    print(f"event loop: {working * per:.0f} µs working, {idle * per:.0f} µs waiting in epoll")
    modules: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for s, n in loop.items():
        if waiting(s):
            continue
        fn, module, _ = where(s[-1])
        modules[module] += n
        tasks = [i for i, f in enumerate(s) if where(f)[0] == "unrolled_run"]
        below = s[tasks[-1] + 1:] if tasks else s  # frames of the trio task, not the run
        for name in {f"{where(f)[0]} ({where(f)[1]})" for f in below if is_tierfs(f)}:
            inclusive[name] += n
    for module, n in modules.most_common(top):
        print(f"  self      {n * per:7.0f}  {module}")
    for name, n in inclusive.most_common(top):
        print(f"  inclusive {n * per:7.0f}  {name}")
    rest = wall / files * 1e6 - working * per - busy_total
    print(f"neither the loop nor a worker working (the kernel's FUSE round trips, the job's "
          f"own system calls): {rest:.0f} µs")


def profile(mode: str, base: Path, args: argparse.Namespace) -> None:
    hot, warm, mnt = (base / n for n in ("hot", "warm", "mnt"))
    for d in (hot, warm, mnt):
        d.mkdir(parents=True)
    out = (args.keep or base) / f"{mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tierfs_mounted(mnt, hot, warm, mode):
        (pid,) = daemon_pids(str(mnt))
        create_files(mnt / "warmup", 200)
        drop_caches()
        plain = timed(lambda: create_files(mnt / "plain", args.files))
        drop_caches()
        wall = record(pid, out, args, lambda: create_files(mnt / "profiled", args.files))
    report(mode, parse(out), wall, args.files, plain, args.top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="creates per profiled job")
    parser.add_argument("--rate", type=int, default=500, help="py-spy's samples per second")
    parser.add_argument("--modes", nargs="+", default=["sync", "writeback"],
                        choices=["sync", "writeback"])
    parser.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking")
    parser.add_argument("--top", type=int, default=8, help="lines per list")
    parser.add_argument("--keep", type=Path, help="keep the raw profiles in this directory")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="tierfs-createprof-", dir="/var/tmp"))
    try:
        for mode in args.modes:
            profile(mode, base / mode, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n(load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
