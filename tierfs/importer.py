"""``tierfs import``: stubs for objects already in the bucket, so an existing dataset appears in
the namespace without copying a byte.

Idempotent and resumable: an entry that already holds the same stub is left alone, so running
the import again after an interruption finishes the job. A real file or directory in the way is
never replaced (it is counted and reported).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from tierfs.config import Config
from tierfs.errors import ConfigError
from tierfs.objects.base import ObjectInfo, ObjectStore, parse_bucket_uri
from tierfs.stubs import Stub, looks_like_stub
from tierfs.tiers.warm import TEMP_PREFIX, TEMP_SUFFIX, is_internal


@dataclasses.dataclass
class ImportResult:
    created: int = 0
    unchanged: int = 0
    updated: int = 0
    conflicts: list[str] = dataclasses.field(default_factory=list)
    #: Keys whose path the warm tier cannot hold (S3 takes names past the 255 bytes a file
    #: system does); the rest of the import goes on.
    too_long: list[str] = dataclasses.field(default_factory=list)


def stub_for(info: ObjectInfo) -> Stub:
    """A stub for an object, taking mode and mtime from tierfs's metadata when present."""
    try:
        mode = int(info.metadata.get("mode", "644"), 8) & 0o7777
    except ValueError:
        mode = 0o644
    try:
        mtime_ns = int(info.metadata.get("mtime-ns", info.mtime_ns))
    except ValueError:
        mtime_ns = info.mtime_ns
    return Stub(info.key, info.size, info.etag, mode, mtime_ns)


def source_prefix(config: Config, uri_text: str) -> str:
    """The key prefix to import; it must lie inside the configured bucket and prefix, since
    tierfs refuses to follow stubs that point anywhere else."""
    src = parse_bucket_uri(uri_text)
    bucket = config.bucket
    if (src.scheme, src.bucket) != (bucket.scheme, bucket.bucket) or not (
            not bucket.prefix or src.prefix == bucket.prefix
            or src.prefix.startswith(bucket.prefix + "/")):
        raise ConfigError(f"{uri_text} is not inside the configured bucket {bucket}: tierfs only "
                          "follows stubs into its own bucket and prefix (see --bucket)")
    return src.prefix


def destination(config: Config, dest: str) -> Path:
    """DIR as a path in the namespace: relative to the warm root, or absolute inside it."""
    path = Path(dest)
    if path.is_absolute():
        try:
            path.resolve().relative_to(config.warm.resolve())
        except ValueError:
            raise ConfigError(f"{dest} is not inside the warm tier {config.warm}; give a path "
                              "in the namespace, such as datasets/imagenet") from None
        return path
    if ".." in path.parts:
        raise ConfigError(f"{dest} must not contain '..'")
    return config.warm / path


def import_objects(config: Config, store: ObjectStore, prefix: str, dest: Path,
                   advance: Callable[[int], None] = lambda n: None) -> ImportResult:
    result = ImportResult()
    listing = prefix + "/" if prefix else ""
    for info in store.list_objects(listing):
        rel = info.key[len(listing):]
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") or is_internal(p.encode()) for p in parts):
            advance(1)  # directory markers and names tierfs cannot hold
            continue
        path = dest.joinpath(*parts)
        # Listings carry no user metadata: HEAD for the mode and mtime tierfs stores there.
        try:
            _place(path, stub_for(store.head(info.key)).encode(config.bucket), result)
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
            result.too_long.append(info.key)
        advance(1)
    return result


def _place(path: Path, target: bytes, result: ImportResult) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        result.conflicts.append(str(path))
        return
    try:
        current = os.readlink(path)
    except FileNotFoundError:
        current = None
    except OSError as e:  # a real file or directory is there: never replace user data
        if e.errno == errno.ENAMETOOLONG:
            raise
        result.conflicts.append(str(path))
        return
    current_bytes = os.fsencode(current) if current is not None else None
    if current_bytes == target:
        result.unchanged += 1
        return
    if current_bytes is not None and not looks_like_stub(current_bytes):
        result.conflicts.append(str(path))  # a user's own symlink
        return
    tmp = path.parent / (TEMP_PREFIX + uuid.uuid4().hex.encode() + TEMP_SUFFIX).decode()
    os.symlink(target, tmp)
    os.rename(tmp, path)  # atomic: a reader sees the old stub or the new one
    if current_bytes is None:
        result.created += 1
    else:
        result.updated += 1
