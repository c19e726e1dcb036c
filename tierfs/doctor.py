"""``tierfs doctor``: what a mount needs, checked one by one, each failure with its fix."""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tierfs.config import Config
from tierfs.errors import TierfsError
from tierfs.mounting import NETWORK_FS, fs_type

#: Less free space than this on a tier is reported as a problem.
MIN_FREE = 1024**3


@dataclasses.dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str
    fix: str = ""


def _size(n: int) -> str:
    import humanfriendly

    return str(humanfriendly.format_size(n, binary=True))


def _tier(name: str, path: Path) -> Iterator[Check]:
    what = f"{name} tier {path}"
    if not path.is_dir():
        yield Check(what, False, "does not exist or is not a directory",
                    f"mkdir -p {path}, or point --{name} at an existing directory")
        return
    probe = path / f".tierfs-doctor-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        yield Check(what, False, f"not writable ({e.strerror})",
                    f"give this user write access to {path} (and check it is not mounted "
                    "read-only or made immutable)")
        return
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    kind = fs_type(path)
    yield Check(what, True, f"writable, {_size(free)} free, on {kind}")
    if free < MIN_FREE:
        yield Check(f"{name} tier free space", False, f"only {_size(free)} free",
                    f"free space on the file system holding {path}")
    if name == "hot" and kind in NETWORK_FS:
        yield Check("index location", False,
                    f"the hot tier (and its LMDB index) is on {kind}: LMDB's locks and memory "
                    "map do not work on network file systems",
                    "use a node-local disk for --hot, such as /mnt/local_storage")
    elif name == "hot":
        yield Check("index location", True, f"{path / 'index'} is on a local file system")
    if name == "hot":
        yield from _set_aside(path / "lost+found")


def _set_aside(lost: Path) -> Iterator[Check]:
    """Staged data recovery did not trust after a restart of the system (vfs/recovery.py)."""
    try:
        kept = [p for p in lost.iterdir() if p.suffix != ".txt"]
    except FileNotFoundError:
        return
    if kept:
        yield Check("set-aside data", False,
                    f"{len(kept)} staged file(s) in {lost} were not published after the system "
                    "restarted before they were flushed to disk (they may be incomplete)",
                    f"read each note ({lost}/<id>.txt: the file's path and size), copy back "
                    "what you can verify, then delete both")


def _large_plain_files(config: Config, root: Path) -> Iterator[Check]:
    """Files past the threshold that sit on the warm tier as plain files (written there
    before tierfs, or by tools that bypass the mount): not a fault, but room the bucket could
    hold instead (``tierfs scan``)."""
    from tierfs.tiers.warm import WarmTier
    from tierfs.write.warmscan import walk

    if not root.is_dir():
        return
    try:
        warm = WarmTier(root, 1)
    except OSError:
        return
    try:
        seen = walk(warm, config.large_file_threshold, keep=0)
    finally:
        warm.close()
    what = f"large files on the warm tier {root} (over {_size(config.large_file_threshold)})"
    if not seen.large:
        yield Check(what, True, "none: every file past the threshold is in the bucket")
        return
    yield Check(what, True, f"{seen.large} plain file(s), {_size(seen.large_bytes)}; "
                "`tierfs scan` lists them, `tierfs scan --demote` moves them to the bucket")


def run_checks(config: Config) -> list[Check]:
    checks = []
    if not os.path.exists("/dev/fuse"):
        checks.append(Check("/dev/fuse", False, "missing",
                            "load the module (modprobe fuse), or start the container with "
                            "--device /dev/fuse"))
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        checks.append(Check("/dev/fuse", False, "not readable and writable by this user",
                            "run as root, or add this user to the group owning /dev/fuse"))
    else:
        checks.append(Check("/dev/fuse", True, "present and usable"))
    found = shutil.which("fusermount3")
    checks.append(Check("fusermount3", found is not None, found or "not on PATH",
                        "apt-get install fuse3"))
    checks += list(_tier("hot", config.hot))
    for _, path in config.roots or (("", config.warm),):  # each named root's directory
        checks += list(_tier("warm", path))
        checks += list(_large_plain_files(config, path))
    from tierfs.mounting import open_checked_store

    try:
        open_checked_store(config)
        checks.append(Check(f"bucket {config.bucket}", True, "reachable, credentials accepted"))
    except TierfsError as e:
        checks.append(Check(f"bucket {config.bucket}", False, str(e),
                            "check the bucket name, --endpoint-url and the credentials "
                            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the "
                            "instance role)"))
    return checks
