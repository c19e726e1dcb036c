"""The ``tierfs`` command line: mount and unmount.

Every configuration key gets a flag of the same name, generated from ``config.KEYS``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tierfs import __version__
from tierfs.config import KEYS, Config, load_config
from tierfs.errors import TierfsError

log = logging.getLogger("tierfs")


def _config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for key in reversed(KEYS):
        if key.is_flag:
            decl = f"{key.flag}/--no-{key.flag[2:]}"
            fn = click.option(decl, key.name, default=None, help=key.help)(fn)
        elif key.multiple:
            fn = click.option(key.flag, key.name, multiple=True, metavar="VALUE",
                              help=key.help)(fn)
        else:
            fn = click.option(key.flag, key.name, default=None, metavar="VALUE",
                              help=key.help)(fn)
    return click.option("--config", "config_file", type=click.Path(path_type=Path),
                        default=None, help="TOML configuration file (default: "
                        "$TIERFS_CONFIG, else ~/.config/tierfs/config.toml if present).")(fn)


def _fail(message: str) -> None:
    click.echo(f"tierfs: error: {message}", err=True)
    sys.exit(1)


def setup_logging(config: Config, to_stderr: bool) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(config.hot / "tierfs.log")]
    if to_stderr:
        handlers.append(logging.StreamHandler())
    logging.basicConfig(level=config.log_level.upper(), handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tierfs")
def main() -> None:
    """tierfs: one POSIX namespace over local NVMe (hot), NFS (warm) and object storage."""


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=str))
@click.option("-f", "--foreground", is_flag=True, help="Serve in this process until unmounted.")
@click.option("--daemon-child", is_flag=True, hidden=True)
@_config_options
def mount(mountpoint: str, foreground: bool, daemon_child: bool, config_file: Path | None,
          **flags: Any) -> None:
    """Mount tierfs on MOUNTPOINT; returns once the mount is live."""
    from tierfs import mounting

    mountpoint = os.path.abspath(mountpoint)
    try:
        config = load_config(config_file, flags)
        mounting.preflight(config, mountpoint)
        if not foreground:
            pid = mounting.start_daemon(config, mountpoint)
            click.echo(f"tierfs mounted on {mountpoint} (pid {pid}; hot {config.hot}, "
                       f"warm {config.warm})")
            return
        from tierfs.fuse import session

        setup_logging(config, to_stderr=not daemon_child)

        def on_ready() -> None:
            if daemon_child:  # hand stderr over to the log: the parent sees EOF and returns
                fd = os.open(config.hot / "tierfs.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.dup2(fd, 2)
                os.close(fd)

        session.run(config, mountpoint, on_ready)
    except TierfsError as e:
        _fail(str(e))
    except RuntimeError as e:  # pyfuse3 reports a refused mount this way
        _fail(f"cannot mount {mountpoint}: {e}")


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=str))
def unmount(mountpoint: str) -> None:
    """Publish pending writes and unmount MOUNTPOINT."""
    from tierfs import mounting

    try:
        mounting.unmount(os.path.abspath(mountpoint))
    except TierfsError as e:
        _fail(str(e))
    click.echo(f"unmounted {os.path.abspath(mountpoint)}")


def _by_mount(paths: tuple[str, ...]) -> dict[Any, list[str]]:
    """Group paths by the running mount that holds them (each relative to its root)."""
    from tierfs.control.client import locate

    groups: dict[Any, list[str]] = {}
    for path in paths:
        record, rel = locate(path)
        groups.setdefault(record, []).append(rel)
    return groups


def _size(n: int) -> str:
    import humanfriendly

    return humanfriendly.format_size(n, binary=True)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--check", is_flag=True, help="Only report how much of each path is hot.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def warm(paths: tuple[str, ...], check: bool, as_json: bool) -> None:
    """Fetch files or whole directories into the hot tier, ahead of their readers.

    With --check, fetch nothing: report how much of each PATH is already hot.
    """
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)
    from rich.table import Table

    from tierfs.control.client import call

    try:
        results = []
        for record, rels in _by_mount(paths).items():
            request = {"cmd": "warm", "paths": rels, "check": check}
            if check:
                results += call(record, request)
                continue
            with Progress("[progress.description]{task.description}", BarColumn(),
                          DownloadColumn(binary_units=True), TransferSpeedColumn(),
                          TimeRemainingColumn(), transient=True,
                          disable=as_json) as progress:
                task = progress.add_task(f"warming {record.mountpoint}", total=None)
                results += call(record, request, lambda m: progress.update(
                    task, completed=m["progress"], total=m["total"] or None))
    except TierfsError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    table = Table("path", "files", "size", "hot", "hot %", "to fetch", box=None)
    for r in results:
        share = 100.0 if r["size"] == 0 else 100.0 * r["hot"] / r["size"]
        table.add_row(r["path"], str(r["files"]), _size(r["size"]), _size(r["hot"]),
                      f"{share:.1f}", _size(r["to_fetch"]))
    Console().print(table)


@main.command(name="import")
@click.argument("uri")
@click.argument("directory")
@_config_options
def import_(uri: str, directory: str, config_file: Path | None, **flags: Any) -> None:
    """Make objects under URI appear in the namespace under DIRECTORY, as stubs.

    DIRECTORY is a path in the namespace (datasets/imagenet), or an absolute path inside the
    warm tier. No data is copied; running it again is harmless and finishes an interrupted run.
    """
    from rich.progress import Progress

    from tierfs.importer import destination, import_objects, source_prefix
    from tierfs.objects.base import ObjectStoreError
    from tierfs.tiers.cold import open_checked_store

    try:
        config = load_config(config_file, flags)
        prefix = source_prefix(config, uri)
        dest = destination(config, directory)
        store = open_checked_store(config)
        with Progress(transient=True) as progress:
            task = progress.add_task("importing", total=None)
            result = import_objects(config, store, prefix, dest,
                                    lambda n: progress.advance(task, n))
    except TierfsError as e:
        _fail(str(e))
    except ObjectStoreError as e:
        _fail(f"listing {uri}: {e}")
    click.echo(f"imported {uri} into {dest}: {result.created} new, {result.updated} updated, "
               f"{result.unchanged} unchanged, {len(result.conflicts)} in the way")
    for path in result.conflicts[:20]:
        click.echo(f"  not replaced (a file or directory is there): {path}", err=True)
