"""Commands that move data between the tiers on demand: warm, pin, unpin, evict, flush."""

from __future__ import annotations

import json
import sys

import click

from tierfs.cli.common import by_mount, fail, size, with_progress
from tierfs.errors import TierfsError


@click.command()
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
        for record, rels in by_mount(paths).items():
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
        fail(str(e))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    table = Table("path", "files", "size", "hot", "hot %", "to fetch", box=None)
    for r in results:
        share = 100.0 if r["size"] == 0 else 100.0 * r["hot"] / r["size"]
        table.add_row(r["path"], str(r["files"]), size(r["size"]), size(r["hot"]),
                      f"{share:.1f}", size(r["to_fetch"]))
    Console().print(table)


@click.command()
@click.argument("paths", nargs=-1, required=True)
def pin(paths: tuple[str, ...]) -> None:
    """Fetch files or directories into the hot tier and keep them there (never evicted)."""
    try:
        for record, rels in by_mount(paths).items():
            for r in with_progress(record, {"cmd": "pin", "paths": rels, "pin": True},
                                    "pinning"):
                click.echo(f"pinned {r['path']}: {size(r['pinned'])} in {r['files']} files")
    except TierfsError as e:
        fail(str(e))


@click.command()
@click.argument("paths", nargs=-1, required=True)
def unpin(paths: tuple[str, ...]) -> None:
    """Let pinned files be evicted again (their blocks stay cached until then)."""
    from tierfs.control.client import call

    try:
        for record, rels in by_mount(paths).items():
            for r in call(record, {"cmd": "pin", "paths": rels, "pin": False}):
                click.echo(f"unpinned {r['path']}")
    except TierfsError as e:
        fail(str(e))


@click.command()
@click.argument("paths", nargs=-1, required=True)
def evict(paths: tuple[str, ...]) -> None:
    """Drop the cached blocks of files or directories from the hot tier (a pin stays: pinned
    files are cached again when next read)."""
    from tierfs.control.client import call

    try:
        for record, rels in by_mount(paths).items():
            result = call(record, {"cmd": "evict", "paths": rels})
            click.echo(f"evicted {size(result['freed'])} from {record.mountpoint}")
    except TierfsError as e:
        fail(str(e))


@click.command()
@click.argument("mountpoint", required=False)
def flush(mountpoint: str | None) -> None:
    """Wait until every write-back file is on its home tier (all mounts by default)."""
    from tierfs.control.client import locate
    from tierfs.control.registry import mounts

    try:
        records = [locate(mountpoint)[0]] if mountpoint else mounts()
        failed = 0
        for record in records:
            result = with_progress(record, {"cmd": "flush"}, f"flushing {record.mountpoint}")
            click.echo(f"{record.mountpoint}: {result['flushed']} files flushed, "
                       f"{result['pending']} pending")
            for item in result.get("failed", []):
                click.echo(f"  could not publish {item['path']}: {item['error']} (kept "
                           "staged; tried again in the background)", err=True)
                failed += 1
    except TierfsError as e:
        fail(str(e))
    if failed:
        sys.exit(1)
