"""Running mounts, as records in a per-user runtime directory.

A mount writes ``<runtime>/<hash of the mount point>.json`` (its mount point, pid, tiers and
control socket) once it is live and removes it when it stops; commands find the mount serving a
path through it. A record whose process is gone, or whose mount point is no longer mounted, is
stale: it is ignored and removed. The runtime directory is ``/run/tierfs`` for root, else
``$XDG_RUNTIME_DIR/tierfs``, else ``/tmp/tierfs-<uid>`` (mode 0700 in every case).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
from pathlib import Path

from tierfs.errors import TierfsError


@dataclasses.dataclass(frozen=True)
class MountRecord:
    mountpoint: str
    pid: int
    hot: str
    warm: str
    bucket: str
    socket: str

    def relative(self, path: str) -> str | None:
        """``path`` relative to this mount's root ("" for the root), or None if outside; the
        mount point as given, or with its parent's links resolved (as the kernel names it,
        and as ``getcwd`` inside the mount does)."""
        for mountpoint in (self.mountpoint, resolved_parent(self.mountpoint)):
            if path == mountpoint:
                return ""
            prefix = mountpoint.rstrip("/") + "/"
            if path.startswith(prefix):
                return path[len(prefix):]
        return None


def resolved_parent(path: str) -> str:
    """``path`` with the links of its parent resolved, never its last component (resolving
    it would stat a mount point, a request to the mount, or follow a link inside one)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def runtime_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/tierfs")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    # (A relative one is ignored, as the XDG spec says: the daemon runs in "/", and the
    # commands in any folder, so they would look in different places.)
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return Path(xdg) / "tierfs"
    return Path(f"/tmp/tierfs-{os.geteuid()}")


def _record_path(mountpoint: str) -> Path:
    digest = hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:20]
    return runtime_dir() / f"{digest}.json"


def _check_owned(directory: Path) -> None:
    """Refuse a runtime directory that someone else could write to: in /tmp (the last
    fallback) another user can make it first, and its records name the sockets commands
    connect to."""
    st = os.lstat(directory)
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
            or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        raise TierfsError(f"{directory} must be a directory of yours that others cannot write "
                          "to: remove it (tierfs makes it again)")


def prepare() -> None:
    """Make the runtime directory if needed and check it is this user's alone (at mount,
    before the daemon starts: ``register`` then finds it fit)."""
    directory = runtime_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_owned(directory)


def register(record: MountRecord) -> None:
    prepare()
    path = _record_path(record.mountpoint)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dataclasses.asdict(record), f)
    os.replace(tmp, path)


def unregister(mountpoint: str, pid: int) -> None:
    path = _record_path(mountpoint)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def _mount_points() -> set[str]:
    """Mount points from /proc/self/mountinfo (its octal escapes undone)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    return {os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]),
                               line.split()[4]))
            for line in lines if len(line.split()) > 4}


def _alive(record: MountRecord, mounted: set[str]) -> bool:
    """Its daemon runs and its mount point is mounted. Read from the mount table, not by a
    stat of the mount point: that is a request to the mount, which waits for a stalled warm
    tier, and status and stats must answer then."""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # (The table names it with symlinks resolved.)
    return record.mountpoint in mounted or resolved_parent(record.mountpoint) in mounted


def mounts() -> list[MountRecord]:
    """Live mounts of this user (all mounts, for root)."""
    out: list[MountRecord] = []
    directory = runtime_dir()
    if not directory.is_dir():
        return out
    _check_owned(directory)
    mounted = _mount_points()
    for path in sorted(directory.glob("*.json")):
        try:
            record = MountRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if _alive(record, mounted):
            out.append(record)
        else:
            try:
                path.unlink()
            except OSError:
                pass
    return out


def mount_for(path: str, records: list[MountRecord] | None = None
              ) -> tuple[MountRecord, str] | None:
    """The live mount holding ``path`` and the path relative to its root; ``records``: the
    live mounts, when the caller looked them up once for many paths (each look reads every
    record and the mount table)."""
    records = mounts() if records is None else records
    given = os.path.abspath(path)
    # As given first (no look at the path at all); else reached through a link: to a folder
    # above the mount, or to the mount itself, or into it from outside. Its parent is
    # resolved before the link itself is followed: a link inside a mount that points out
    # of it is the mount's file, never where it points.
    for candidate in (given, resolved_parent(given), os.path.realpath(given)):
        best: tuple[MountRecord, str] | None = None
        for record in records:
            rel = record.relative(candidate)
            if rel is not None and (best is None or
                                    len(record.mountpoint) > len(best[0].mountpoint)):
                best = (record, rel)
        if best is not None:
            return best
    return None
