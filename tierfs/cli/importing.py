"""``tierfs import``: objects already in a bucket made part of the namespace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from tierfs.cli.common import config_options, fail
from tierfs.config import Config, load_config
from tierfs.errors import ConfigError, TierfsError


@click.command(name="import")
@click.argument("uri")
@click.argument("directory")
@config_options
def import_(uri: str, directory: str, config_file: Path | None, **flags: Any) -> None:
    """Make objects under URI appear in the namespace under DIRECTORY, as stubs.

    DIRECTORY is a path inside a running mount (/mnt/data/datasets/imagenet: that mount's
    tiers and bucket are used), or a path in the namespace (datasets/imagenet) or an absolute
    path inside the warm tier, with the tiers given by --warm, --bucket or the configuration.
    No data is copied; running it again is harmless and finishes an interrupted run.
    """
    from rich.console import Console
    from rich.progress import Progress

    from tierfs.importer import destination, import_objects, source_prefix
    from tierfs.objects.base import ObjectStoreError
    from tierfs.mounting import open_checked_store

    try:
        config, dest, shown = _import_target(directory, config_file, flags)
        if dest is None:
            if config.roots:
                config, dest = _in_root(config, directory)
            else:
                dest = destination(config, directory)
            shown = str(Path(config.warm, *dest))
        prefix = source_prefix(config, uri)
        store = open_checked_store(config)
        console = Console(stderr=True)
        with Progress(transient=True, console=console,
                      disable=not console.is_terminal) as progress:
            task = progress.add_task("importing", total=None)
            result = import_objects(config, store, prefix, dest,
                                    lambda n: progress.advance(task, n))
    except TierfsError as e:
        fail(str(e))
    except ObjectStoreError as e:
        fail(f"listing {uri}: {e}")
    except OSError as e:
        fail(f"importing into {directory}: {e}")
    click.echo(f"imported {uri} into {shown}: {result.created} new, {result.updated} updated, "
               f"{result.unchanged} unchanged, {len(result.conflicts)} in the way"
               + (f", {len(result.too_long)} with names too long" if result.too_long else "")
               + (f", {len(result.owned)} already named by a stub" if result.owned else ""))
    for path in result.conflicts[:20]:
        click.echo(f"  not replaced (a file, directory or link is there): {path}", err=True)
    for key in result.too_long[:20]:
        click.echo(f"  not imported (a name longer than the warm tier takes): {key}", err=True)
    for key, stub in result.owned[:20]:
        click.echo(f"  not imported (already the data of {stub}): {key}", err=True)
    for path in result.unread[:20]:
        click.echo(f"  not searched for stubs (could not be read): {path}", err=True)


def _in_root(config: Config, directory: str) -> tuple[Config, list[str]]:
    """With named roots and no mount: the root DIRECTORY is in (an absolute path inside a
    root's directory, or a namespace path whose first component names the root), as that
    root's own configuration (its warm directory and bucket prefix), and the path in it."""
    from tierfs.importer import destination
    from tierfs.vfs.roots import root_config

    roots = [root_config(config, name, path) for name, path in config.roots]
    if os.path.isabs(directory):
        for root in roots:
            try:
                return root, destination(root, directory)
            except ConfigError:
                continue
        raise ConfigError(f"{directory} is not inside any warm root "
                          f"({', '.join(str(p) for _, p in config.roots)})")
    parts = destination(config, directory)
    for (name, _), root in zip(config.roots, roots):
        if parts and parts[0] == name:
            return root, parts[1:]
    raise ConfigError(f"{directory}: the first component must name a root "
                      f"({', '.join(name for name, _ in config.roots)})")


def _import_target(directory: str, config_file: Path | None, flags: dict[str, Any]
                   ) -> tuple[Config, list[str] | None, str]:
    """The configuration to import with and, when DIRECTORY is inside a running mount, its
    components below that mount's warm root (the same path as below the mount point) and the
    path to show. Inside a mount, its tiers and the way it reaches its bucket are used, so
    nothing given to ``tierfs mount`` needs repeating. Outside any mount: the configuration
    from the flags and file, and None."""
    from tierfs.control.client import ControlError, call
    from tierfs.control.registry import mount_for
    from tierfs.objects.base import parse_bucket_uri

    found = mount_for(directory)
    if found is None:
        return load_config(config_file, flags), None, directory
    record, rel = found
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TierfsError(f"{directory} must not contain '..'")
    given = {name: flags.get(name) for name in ("hot", "warm", "bucket")}
    warm = tuple(given["warm"] or ())  # (the flag may be given several times: named roots)
    given["warm"] = warm[0] if len(warm) == 1 else " ".join(warm) or None
    for name in ("hot", "warm"):
        value = given[name]
        if value is not None and Path(value).resolve() != Path(getattr(record, name)).resolve():
            raise TierfsError(f"{directory} is inside the mount on {record.mountpoint}, whose "
                              f"{name} tier is {getattr(record, name)}: leave out --{name}")
    if given["bucket"] is not None and str(parse_bucket_uri(given["bucket"])) != record.bucket:
        raise TierfsError(f"{directory} is inside the mount on {record.mountpoint}, whose "
                          f"bucket is {record.bucket}: leave out --bucket")
    mounted: dict[str, Any] = {"hot": record.hot, "warm": record.warm, "bucket": record.bucket}
    try:  # how the mount reaches its bucket (an endpoint, a region), unless given here
        reach = call(record, {"cmd": "tiers"}, timeout=30)
        mounted.update({name: reach[name] for name in ("endpoint_url", "region",
                                                        "addressing_style")
                        if flags.get(name) is None and reach.get(name) is not None})
    except ControlError:
        # the registry's tiers; the rest from the flags and the configuration file (a mount
        # of named roots records NAME=DIR for each: only the mount can say which is which)
        if "=" in record.warm and not os.path.isdir(record.warm):
            raise TierfsError(f"cannot reach the mount on {record.mountpoint} to find the "
                              f"root {directory} is in") from None
        reach = {}
    shown = os.path.join(record.mountpoint, *parts)
    if reach.get("roots"):  # named roots: the first component names the root
        root = reach["roots"].get(parts[0]) if parts else None
        if root is None:
            raise TierfsError(f"{directory}: give a directory inside one of the roots of "
                              f"{record.mountpoint} ({', '.join(reach['roots'])})")
        mounted.update(warm=root["warm"], bucket=root["bucket"])
        parts = parts[1:]
    config = load_config(config_file, {**flags, **mounted})
    return config, parts, shown
