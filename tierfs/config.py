"""Configuration: the key table, zero-config defaults, TOML loading and validation.

Every key is declared once in ``KEYS``; the CLI builds one flag per key from the same table
(``large_file_threshold`` becomes ``--large-file-threshold``), so the config file, the flags and
docs/configuration.md cannot drift apart. Precedence: flag > config file > default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import humanfriendly
import platformdirs

from tierfs.errors import ConfigError
from tierfs.objects.base import MIN_PART_SIZE, BucketURI, parse_bucket_uri
from tierfs.places import (Roots, default_bucket, default_hot, default_warm_roots, path_value,
                           warm_value)

Number = TypeVar("Number", int, float)

#: Largest size any key takes: no disk (or memory) is larger, and a bigger number is a typo
#: (humanfriendly turns ``99999999999999999999999999EiB`` into an integer of 47 digits).
MAX_SIZE = 1024**6
#: S3's largest object: a file past the threshold could never be uploaded whole anyway.
MAX_OBJECT_SIZE = 5 * 1024**4
def _bucket(value: Any) -> BucketURI:
    if not isinstance(value, str):
        raise ValueError("expected a URI such as s3://bucket/prefix")
    try:
        uri = parse_bucket_uri(value)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    if uri.scheme == "file" and uri.bucket == "/":
        raise ValueError("the root folder cannot be a bucket: name a folder of its own, such "
                         "as file:///srv/tierfs-cold")
    return uri


def _optional_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _addressing(value: Any) -> str:
    if value not in ("auto", "path", "virtual"):
        raise ValueError("expected auto, path or virtual")
    return str(value)


def _threshold(value: Any) -> int:
    size = parse_size(value, bounded=False)
    if not 4096 <= size <= MAX_OBJECT_SIZE:
        raise ValueError("expected a size from 4KiB to 5TiB (S3's largest object)")
    return size


def _optional_size(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return _threshold(value)


def _optional_quota(value: Any) -> int | None:
    if value is None or value == "" or (isinstance(value, str) and value.lower() == "none"):
        return None
    return parse_size(value)


def _demote_min_size(value: Any) -> int:
    size = parse_size(value, bounded=False)
    if not 4096 <= size <= MAX_OBJECT_SIZE:
        raise ValueError("expected a size from 4KiB to 5TiB")
    return size


def _interval(value: Any) -> float:
    seconds = _number(value, float, "expected a number of seconds")
    if not 0.1 <= seconds <= 86400:
        raise ValueError("expected seconds between 0.1 and 86400")
    return seconds


def _rules(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError('expected a list such as ["checkpoints/**=cold"]')
    rules = []
    for item in value:
        pattern, sep, tier = str(item).rpartition("=")
        if not sep or not pattern or tier not in ("warm", "cold"):
            raise ValueError(f"{item!r}: expected PATTERN=warm or PATTERN=cold")
        if pattern.startswith("/"):
            raise ValueError(f"{item!r}: patterns are relative to the mount's root")
        rules.append((pattern, tier))
    return tuple(rules)


def _part_size(value: Any) -> int:
    size = parse_size(value, bounded=False)
    if not MIN_PART_SIZE <= size <= 1024**3:
        raise ValueError("expected a size from 5MiB (S3's minimum part) to 1GiB")
    return size


def _block_size(value: Any) -> int:
    size = parse_size(value, bounded=False)
    if not 64 * 1024 <= size <= 256 * 1024 * 1024:
        raise ValueError("expected a size from 64KiB to 256MiB")
    return size


def _window(value: Any) -> int:
    count = _count(value)
    if count < 2:
        raise ValueError("expected at least 2 parts")
    return count


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir("tierfs")) / "config.toml"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError("expected true or false")


def _number(value: Any, kind: Callable[[Any], Number], expected: str) -> Number:
    """``kind(value)``, with ``expected`` as the error; booleans are refused, though TOML and
    Python would both let ``true`` pass for 1."""
    if isinstance(value, bool) or (kind is int and isinstance(value, float)
                                   and not value.is_integer()):
        raise ValueError(expected)  # (nor is 1.5 threads taken for 1)
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):  # (OverflowError: int of an infinity)
        raise ValueError(expected) from None


def _seconds(value: Any) -> float:
    seconds = _number(value, float, "expected a number of seconds")
    if not 0 <= seconds <= 3600:
        raise ValueError("expected seconds between 0 and 3600")
    return seconds


def _count(value: Any) -> int:
    count = _number(value, int, "expected a whole number")
    if not 1 <= count <= 1024:
        raise ValueError("expected a whole number from 1 to 1024")
    return count


def parse_size(value: Any, bounded: bool = True) -> int:
    """Bytes from ``4096``, ``"512MiB"`` or ``"10GB"`` (decimal and binary units both accepted),
    at most ``MAX_SIZE`` unless the caller states a tighter bound of its own."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8MiB")
    if isinstance(value, int):
        size = value
    else:
        try:
            size = humanfriendly.parse_size(str(value))
        except humanfriendly.InvalidSize:
            raise ValueError(f"expected a size such as 8MiB, not {value!r}") from None
    if size < 0:
        raise ValueError("a size cannot be negative")
    if bounded and size > MAX_SIZE:
        raise ValueError("expected at most 1EiB, more than any disk holds")
    return int(size)


def _read_ahead(value: Any) -> int:
    size = parse_size(value, bounded=False)
    if not 128 * 1024 <= size <= 1024**3:
        raise ValueError("expected a size from 128KiB to 1GiB")
    return size


def _publish_ahead(value: Any) -> int:
    size = parse_size(value, bounded=False)
    if size and not 4096 <= size <= 1024**3:
        raise ValueError("expected 0 (off) or a size from 4KiB to 1GiB")
    return size


def _capacity(value: Any) -> str:
    """A byte size, or a share of the hot disk such as ``50%`` (resolved at mount)."""
    text = str(value).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            raise ValueError(f"expected a size such as 100GiB or a share such as 50%, not "
                             f"{value!r}") from None
        if not 0 < share <= 100:
            raise ValueError("expected a share between 0% and 100%")
        return text
    size = parse_size(value)
    if size < 64 * 1024 * 1024:
        raise ValueError("expected at least 64MiB")
    return str(size)


def resolve_capacity(value: str, total: int) -> int:
    """Bytes from a ``hot_capacity`` value, given the hot disk's total size."""
    if value.endswith("%"):
        return int(total * float(value[:-1]) / 100)
    return int(value)


def _share(value: Any) -> float:
    share = _number(value, float, "expected a fraction such as 0.9")
    if not 0.1 <= share <= 1:
        raise ValueError("expected a fraction from 0.1 to 1")
    return share


def _eviction(value: Any) -> str:
    from tierfs.cache.eviction import POLICIES

    if not isinstance(value, str) or value not in POLICIES:
        raise ValueError(f"expected one of {', '.join(POLICIES)}")
    return str(value)


def _auto_bool(value: Any) -> str:
    if isinstance(value, str) and value.lower() == "auto":
        return "auto"
    return "true" if _bool(value) else "false"


#: Least read memory a warm root gets: a few blocks in flight for one reader.
MIN_READ_MEMORY = 16 * 1024 * 1024


def _memory(value: Any) -> int:
    size = parse_size(value)
    if size < MIN_READ_MEMORY:
        raise ValueError("expected at least 16MiB")
    return size


def _durability(value: Any) -> str:
    if value not in ("sync", "writeback"):
        raise ValueError("expected sync or writeback")
    return str(value)


def _port(value: Any) -> int:
    port = _number(value, int, "expected a port number")
    if not 0 <= port <= 65535:
        raise ValueError("expected a port from 1 to 65535, or 0 for none")
    return port


def _log_level(value: Any) -> str:
    levels = ("debug", "info", "warning", "error")
    if not isinstance(value, str) or value.lower() not in levels:
        raise ValueError(f"expected one of {', '.join(levels)}")
    return value.lower()


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[Any], Any]
    default: Callable[[], Any]
    help: str
    is_flag: bool = False
    #: A list: the flag may be given several times.
    multiple: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


KEYS: tuple[Key, ...] = (
    Key("hot", path_value, default_hot,
        "Hot tier directory on node-local disk: staging files, the LMDB index, logs."),
    Key("warm", warm_value, default_warm_roots,
        "Warm tier directory (NFS): the namespace root; directories and small files live here. "
        "NAME=DIR, given several times, mounts each DIR as the top-level directory NAME.",
        multiple=True),
    Key("allow_other", _bool, lambda: False,
        "Let users other than the one who mounted access the mount (FUSE allow_other).",
        is_flag=True),
    Key("bucket", _bucket, default_bucket,
        "Cold tier: s3://bucket/prefix, gs://bucket/prefix or file:///folder. Default: "
        "$ANYSCALE_ARTIFACT_STORAGE/tierfs if set, else a local folder."),
    Key("endpoint_url", _optional_text, lambda: None,
        "S3 endpoint URL for S3-compatible stores (default: AWS, or GCS for gs://)."),
    Key("region", _optional_text, lambda: None, "S3 region (default: boto3's own choice)."),
    Key("addressing_style", _addressing, lambda: "auto",
        "S3 bucket addressing: auto, path or virtual."),
    Key("large_file_threshold", _threshold, lambda: 10 * 1024**3,
        "Files that grow past this size go straight to the bucket (a size such as 10GiB)."),
    Key("stream_after", _optional_size, lambda: None,
        "Start streaming a file written sequentially to the bucket once it passes this size, "
        "so the hot tier holds a bounded window from then on (default: the threshold)."),
    Key("warm_quota", _optional_quota, lambda: None,
        "Most bytes of plain files the warm tier may hold: past it, the least recently used "
        "files of at least demote_min_size go to the bucket, leaving stubs (default: none)."),
    Key("demote_min_size", _demote_min_size, lambda: 64 * 1024 * 1024,
        "Smallest file the warm quota moves to the bucket (a size such as 64MiB)."),
    Key("demote_interval", _interval, lambda: 60.0,
        "Seconds between looks at the warm tier's usage, when warm_quota is set."),
    Key("rules", _rules, lambda: (),
        "Pin paths to a tier: PATTERN=TIER, TIER being warm or cold, first match wins "
        "(* matches across /). The flag may be repeated.", multiple=True),
    Key("part_size", _part_size, lambda: 16 * 1024 * 1024,
        "Size of the first multipart-upload parts; later parts grow so a 5 TiB file fits."),
    Key("upload_window", _window, lambda: 4,
        "Parts of a streaming upload uploading or being filled at once; uploaded parts stay on "
        "the hot tier until its free space falls below this many parts."),
    Key("block_size", _block_size, lambda: 8 * 1024 * 1024,
        "Cold files (and cached warm files) are read and cached in blocks of this size."),
    Key("durability", _durability, lambda: "sync",
        "sync: close returns once the data is on its home tier; writeback: once it is staged "
        "on the hot tier (and journaled), the upload going on in the background. fsync always "
        "waits for the home tier."),
    Key("publish_ahead", _publish_ahead, lambda: 4 * 1024 * 1024,
        "Sync mode: copy a file being written to the warm tier (or, on one file system, start "
        "its write to disk) in steps of this size while the writer goes on, so close waits "
        "only for the last step (0: all of it at close)."),
    Key("hot_capacity", _capacity, lambda: "50%",
        "Most bytes the block cache may hold on the hot tier: a size (200GiB) or a share of "
        "the hot disk (50%)."),
    Key("cache_high_watermark", _share, lambda: 0.95,
        "Share of hot_capacity at which eviction starts."),
    Key("cache_low_watermark", _share, lambda: 0.85,
        "Share of hot_capacity eviction brings the cache back down to."),
    Key("eviction", _eviction, lambda: "tinylfu",
        "Eviction policy of the block cache: tinylfu (scan-resistant) or lru."),
    Key("cache_warm", _auto_bool, lambda: "auto",
        "Cache blocks of warm files on the hot tier: true, false, or auto (only when the "
        "warm tier is a network file system)."),
    Key("prefetch_limit", _read_ahead, lambda: 128 * 1024 * 1024,
        "Largest read-ahead window of a sequential reader of a cached file (a size)."),
    Key("read_memory", _memory, lambda: 256 * 1024 * 1024,
        "Memory for blocks being read, shared by all open files (a size)."),
    Key("cold_threads", _count, lambda: 16,
        "Worker threads for object-store calls (parallel GETs and part uploads)."),
    Key("attr_timeout", _seconds, lambda: 1.0,
        "Seconds the kernel may cache file attributes; bounds cross-node staleness."),
    Key("entry_timeout", _seconds, lambda: 1.0,
        "Seconds the kernel may cache name lookups; bounds cross-node staleness."),
    Key("read_ahead", _read_ahead, lambda: 8 * 1024 * 1024,
        "Kernel read-ahead window for the mount (a size such as 8MiB)."),
    Key("warm_threads", _count, lambda: 16,
        "Worker threads for warm-tier (NFS) calls; NFS servers limit connections."),
    Key("hot_threads", _count, lambda: 16,
        "Worker threads for hot-tier (local disk) calls."),
    Key("prometheus_port", _port, lambda: 0,
        "Serve Prometheus metrics on 127.0.0.1 at this port (0: no endpoint)."),
    Key("log_level", _log_level, lambda: "info",
        "Log level: debug, info, warning or error."),
)

KEYS_BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}


@dataclasses.dataclass(frozen=True)
class Config:
    hot: Path
    warm: Path
    allow_other: bool
    bucket: BucketURI
    endpoint_url: str | None
    region: str | None
    addressing_style: str
    large_file_threshold: int
    stream_after: int | None
    warm_quota: int | None
    demote_min_size: int
    demote_interval: float
    rules: tuple[tuple[str, str], ...]
    part_size: int
    upload_window: int
    block_size: int
    durability: str
    publish_ahead: int
    hot_capacity: str
    cache_high_watermark: float
    cache_low_watermark: float
    eviction: str
    cache_warm: str
    prefetch_limit: int
    read_memory: int
    cold_threads: int
    attr_timeout: float
    entry_timeout: float
    read_ahead: int
    warm_threads: int
    hot_threads: int
    prometheus_port: int
    log_level: str
    #: Which keys were set explicitly (file or flag); zero-config tiers are created on demand.
    explicit: frozenset[str] = frozenset()
    #: Named warm roots (``--warm NAME=DIR``); empty when ``warm`` is the mount's top level.
    #: With roots, ``warm`` is the first root's directory.
    roots: Roots = ()
    #: In a named root's own configuration (``vfs.roots.root_config``), the root's name:
    #: ``rules`` are written relative to the mount's top, where the root's files are under it.
    rules_root: str = ""

    def to_args(self) -> list[str]:
        """Flags that reproduce this configuration exactly (used to start the daemon)."""
        args: list[str] = []
        for key in KEYS:
            value = getattr(self, key.name)
            if key.is_flag:
                args.append(key.flag if value else "--no-" + key.flag[2:])
            elif key.name == "warm":
                for name, path in self.roots or (("", value),):
                    args += [key.flag, f"{name}={path}" if name else str(path)]
            elif key.multiple:
                for pattern, tier in value:
                    args += [key.flag, f"{pattern}={tier}"]
            elif value is not None:
                args += [key.flag, str(value)]
        return args


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    return data


def build_config(file_values: Mapping[str, Any], flag_values: Mapping[str, Any],
                 source: str = "config") -> Config:
    """Merge file and flag values over the defaults, naming the key on any bad input."""
    values: dict[str, Any] = {}
    for name in file_values:
        if name not in KEYS_BY_NAME:
            raise ConfigError(f"{source}: unknown key '{name}' (known keys: "
                              f"{', '.join(k.name for k in KEYS)})")
    # An unused flag is None (or, for a repeatable one, empty): it overrides nothing.
    flags = {k: v for k, v in flag_values.items() if v not in (None, ())}
    merged = {**file_values, **flags}
    _refuse_credentials(merged, flag_values, source)

    def where(name: str) -> str:
        """Where the key's value came from: its flag, the file, or (never a file that may
        not exist) the default."""
        if name in flags:
            return KEYS_BY_NAME[name].flag
        if name in file_values:
            return f"{source}: key '{name}'"
        return f"default {name}"

    for key in KEYS:
        if key.name in merged:
            try:
                values[key.name] = key.parse(merged[key.name])
            except ValueError as e:
                raise ConfigError(f"{where(key.name)}: bad value {merged[key.name]!r}: "
                                  f"{e}") from None
        else:
            values[key.name] = key.default()
    low, high = values["cache_low_watermark"], values["cache_high_watermark"]
    if low > high:
        # Blame the one that was set (the defaults agree with each other).
        name = "cache_low_watermark" if "cache_low_watermark" in merged \
            else "cache_high_watermark"
        raise ConfigError(f"{where(name)}: bad value {values[name]!r}: cache_low_watermark "
                          f"({low}) must not exceed cache_high_watermark ({high})")
    values["warm"], roots = values["warm"]
    if "read_memory" not in merged:  # (the default grows with the roots, up to 63 of them)
        values["read_memory"] = max(values["read_memory"], MIN_READ_MEMORY * len(roots))
    if values["read_memory"] < MIN_READ_MEMORY * len(roots):
        # Each root reads from its own share; no share may fall under the least one reader
        # needs, nor may the shares add up to more than was given.
        raise ConfigError(f"{where('read_memory')}: bad value {values['read_memory']!r}: "
                          f"{len(roots)} warm roots need at least "
                          f"{MIN_READ_MEMORY * len(roots) // 2**20}MiB (16MiB each)")
    _check_bucket_apart(values, roots, merged, where)
    return Config(**values, explicit=frozenset(merged), roots=roots)


def _check_bucket_apart(values: Mapping[str, Any], roots: Roots, merged: Mapping[str, Any],
                        where: Callable[[str], str]) -> None:
    """A local-folder bucket must neither hold nor sit in the hot or warm tier: its objects
    would show in the namespace as files (or lie among the cache's blocks), and the tiers'
    files would be listed as objects by an import."""
    uri: BucketURI = values["bucket"]
    if uri.scheme != "file":
        return
    folder = Path(os.path.realpath(uri.bucket))
    tiers = [("warm", p) for _, p in roots] or [("warm", values["warm"])]
    for tier, value in [*tiers, ("hot", values["hot"])]:
        path = Path(os.path.realpath(value))
        if folder == path or path in folder.parents:
            what = f"is the {tier} tier" if folder == path else f"is inside the {tier} tier"
        elif folder in path.parents:
            what = f"holds the {tier} tier"
        else:
            continue
        # The flag or key the user gave is at fault, the bucket's if both were given.
        name = "bucket" if "bucket" in merged or tier not in merged else tier
        raise ConfigError(f"{where(name)}: the bucket folder {folder} {what} {path}: a "
                          "local-folder bucket must lie apart from the hot and warm tiers")


#: Keys whose values are URLs.
URL_KEYS = ("bucket", "endpoint_url")


def _refuse_credentials(merged: Mapping[str, Any], flag_values: Mapping[str, Any],
                        source: str) -> None:
    """A URL with a user or password in it is refused, and its value not shown: the daemon
    gets its configuration as flags, which any user sees in ``ps``. Credentials come from
    boto3's usual chain instead."""
    for name in URL_KEYS:
        value = merged.get(name)
        try:
            userinfo = isinstance(value, str) and "@" in urlsplit(value).netloc
        except ValueError:
            continue  # not a URL at all: the key's own check says so
        if userinfo:
            where = KEYS_BY_NAME[name].flag if flag_values.get(name) is not None \
                else f"{source}: key '{name}'"
            raise ConfigError(f"{where}: the URL holds credentials (user:password@), which "
                              "every user could read in the process list; give them as "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or an "
                              "instance role instead")


def load_config(config_file: Path | None, flag_values: Mapping[str, Any]) -> Config:
    """The effective configuration: an explicit file must exist; the default file may not."""
    if config_file is None:
        env_file = os.environ.get("TIERFS_CONFIG")
        config_file = Path(env_file) if env_file else None
    if config_file is not None:
        return build_config(read_config_file(config_file), flag_values, str(config_file))
    default = default_config_file()
    if default.is_file():
        return build_config(read_config_file(default), flag_values, str(default))
    return build_config({}, flag_values)
