"""Where the tiers are when nothing says: the zero-config defaults (Anyscale's node-local
NVMe, its NFS mounts and artifact bucket where they exist, per-user folders elsewhere), and
the warm tier's value, one directory or named roots."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs

from tierfs.objects.base import BucketURI, parse_bucket_uri

#: Anyscale's node-local NVMe and per-user NFS mounts; used when they exist.
ANYSCALE_HOT = Path("/mnt/local_storage")
ANYSCALE_WARM = Path("/mnt/user_storage")
#: Where Anyscale's shared NFS mounts are found ($TIERFS_MOUNTS_BASE overrides it, for tests
#: and images that mount them elsewhere), and the named warm
#: roots the zero-config default mounts when all of them are there: NAME, folder under it.
ANYSCALE_MOUNTS = Path("/mnt")
ANYSCALE_ROOTS = (("cluster", "cluster_storage"), ("user", "user_storage"),
                  ("shared", "shared_storage"))

#: Named warm roots, (NAME, DIR) in the order given; empty for the one unnamed root.
Roots = tuple[tuple[str, Path], ...]

#: The file beside the roots' folders on the hot tier that keeps their inode number slots
#: (``vfs.roots``), and its temp file: no root may be named so.
SLOTS_FILE = "slots.json"
RESERVED_ROOT_NAMES = (SLOTS_FILE, f"{SLOTS_FILE}.new")

#: Most named warm roots a mount takes (their index is kept in a few bits of inode numbers,
#: see ``vfs.roots``).
MAX_ROOTS = 63


def default_hot() -> Path:
    if ANYSCALE_HOT.is_dir():
        return ANYSCALE_HOT / "tierfs"
    return Path(platformdirs.user_cache_dir("tierfs")) / "hot"


def defaultwarm_value() -> Path:
    # A subfolder, not the NFS root itself: tierfs keeps temp files in the namespace while it
    # publishes, and a user's existing files should not be mixed into its tree unasked.
    if ANYSCALE_WARM.is_dir():
        return ANYSCALE_WARM / "tierfs"
    return Path(platformdirs.user_data_dir("tierfs")) / "warm"


def default_roots() -> Roots:
    """On a node with all of Anyscale's NFS mounts, each is a named root (the same
    ``tierfs`` subfolder as the single default, for the same reason); elsewhere none."""
    base = Path(os.environ.get("TIERFS_MOUNTS_BASE") or ANYSCALE_MOUNTS)
    found = tuple((name, base / folder) for name, folder in ANYSCALE_ROOTS)
    if all(path.is_dir() for _, path in found):
        return tuple((name, path / "tierfs") for name, path in found)
    return ()


def default_warm_roots() -> tuple[Path, Roots]:
    roots = default_roots()
    return (roots[0][1] if roots else defaultwarm_value()), roots


def root_name(name: str) -> str:
    """A named root's name: one path component, shown as the mount's top-level directory."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"{name!r}: a root's name is one file name (no '/', not '.' or '..')")
    if name in RESERVED_ROOT_NAMES:
        raise ValueError(f"{name!r}: tierfs keeps a file of its own under this name beside "
                         "the roots' folders on the hot tier; name the root otherwise")
    return name


def is_named(item: str) -> bool:
    """``NAME=DIR`` rather than a directory: a NAME holds no '/' (so a path with an '=' in
    it is still a path as long as a '/' comes first, such as ``./a=b``)."""
    name, sep, _ = item.partition("=")
    return bool(sep) and "/" not in name and not name.startswith("~")


def warm_value(value: Any) -> tuple[Path, Roots]:
    """One directory (the mount's top level), or named roots: ``NAME=DIR`` strings (the flag
    given several times, or a TOML list) or a TOML table ``{NAME = "DIR"}``. Returns the
    first directory and the named roots (none for a plain directory)."""
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
        if not items:
            raise ValueError('expected a directory, or NAME=DIR roots such as '
                             '["cluster=/mnt/cluster_storage/tierfs"]')
    else:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError('expected a directory, or NAME=DIR roots such as '
                             '["cluster=/mnt/cluster_storage/tierfs"]')
        if len(value) == 1 and isinstance(value[0], str) and not is_named(value[0]):
            return path_value(value[0]), ()
        items = []
        for item in value:
            if not isinstance(item, str) or not is_named(item):
                raise ValueError(f"{item!r}: with several warm roots each is NAME=DIR")
            name, _, folder = item.partition("=")
            items.append((name, folder))
    roots: list[tuple[str, Path]] = []
    for name, folder in items:
        root_name(name)
        if any(name == seen for seen, _ in roots):
            raise ValueError(f"{name!r}: two roots of the same name")
        try:
            roots.append((name, path_value(folder)))
        except ValueError as e:
            raise ValueError(f"root {name!r}: {e}") from None
    if len(roots) > MAX_ROOTS:
        raise ValueError(f"at most {MAX_ROOTS} roots")
    return roots[0][1], tuple(roots)


def default_bucket() -> BucketURI:
    env = os.environ.get("ANYSCALE_ARTIFACT_STORAGE")
    if env:
        return parse_bucket_uri(env.rstrip("/") + "/tierfs")
    return parse_bucket_uri(f"file://{Path(platformdirs.user_data_dir('tierfs')) / 'cold'}")


def path_value(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty path string")
    if "\0" in value:
        raise ValueError("a path cannot hold a NUL character")
    return Path(value).expanduser().absolute()
