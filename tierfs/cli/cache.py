"""Commands that move data between the tiers on demand: warm, pin, unpin, evict, flush."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tierfs.cli.common import by_mount, fail, size, with_progress
from tierfs.errors import TierfsError
from tierfs.paths import show


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--check", is_flag=True, help="Only report how much of each path is hot.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--ray", "on_ray", is_flag=True,
              help="Warm every node of the Ray cluster, each through its own mount "
              "(needs tierfs[ray]).")
@click.option("--address", default=None, metavar="ADDRESS",
              help="With --ray: the cluster's address (default: the cluster this machine "
              "belongs to, as ray.init(address='auto') finds it).")
def warm(paths: tuple[str, ...], check: bool, as_json: bool, on_ray: bool,
         address: str | None) -> None:
    """Fetch files or whole directories into the hot tier, ahead of their readers.

    With --check, fetch nothing: report how much of each PATH is already hot. With --ray,
    do either on every node of a Ray cluster: each node uses the mount holding PATH there or,
    where the node's environment has TIERFS_MOUNT, PATH's part below the mount point here
    below that one.
    """
    from tierfs.control.client import call

    if address is not None and not on_ray:
        fail("--address is for --ray")
    failed: list[str] = []
    try:
        if on_ray:
            nodes, failed = _warm_cluster(paths, address, check, as_json)
            results = [{**r, "node": n["node"], "host": n["host"]}
                       for n in nodes for r in n["results"]]
        else:
            results = []
            for record, rels in by_mount(paths).items():
                request = {"cmd": "warm", "paths": rels, "check": check}
                if check:
                    results += call(record, request)
                    continue
                with _bar(as_json) as progress:
                    task = progress.add_task(f"warming {record.mountpoint}", total=None)
                    results += call(record, request, lambda m: progress.update(
                        task, completed=m["progress"], total=m["total"] or None))
    except TierfsError as e:
        fail(str(e))
    for line in failed:
        click.echo(f"tierfs: error: {line}", err=True)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        _report(results, on_ray)
    if failed:
        sys.exit(1)


def _report(results: list[dict[str, Any]], on_ray: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    columns = (("node",) if on_ray else ()) + ("path", "files", "size", "hot", "hot %",
                                               "to fetch")
    table = Table(*columns, box=None)
    for r in results:
        share = 100.0 if r["size"] == 0 else 100.0 * r["hot"] / r["size"]
        # (A name is text, never markup: "img[abc].png" must not lose "[abc]".)
        table.add_row(*((f"{r['host']} {r['node'][:8]}",) if on_ray else ()),
                      Text(show(r["path"])),
                      str(r["files"]), size(r["size"]), size(r["hot"]), f"{share:.1f}",
                      size(r["to_fetch"]))
    Console().print(table)


def _bar(as_json: bool) -> Any:
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)

    console = Console(stderr=True)
    return Progress("[progress.description]{task.description}", BarColumn(),
                    DownloadColumn(binary_units=True), TransferSpeedColumn(),
                    TimeRemainingColumn(), transient=True, console=console,
                    disable=as_json or not console.is_terminal)


def _warm_cluster(paths: tuple[str, ...], address: str | None, check: bool,
                  as_json: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Every node's results and a line per failed node, with one progress bar over the
    whole cluster."""
    import os

    from tierfs.control.client import ControlError, locate

    try:
        from tierfs import cluster
    except ImportError as e:
        raise TierfsError(f"--ray needs Ray: pip install 'tierfs[ray]' ({e})") from None
    located: list[tuple[str, str | None]] = []
    for path in paths:
        path = os.path.abspath(path)
        try:
            located.append((path, locate(path)[0].mountpoint))
        except ControlError:  # (no mount here: each node finds the path in its own)
            located.append((path, None))
    if check:
        return cluster.warm_cluster(located, address, check=True)
    with _bar(as_json) as progress:
        task = progress.add_task("warming the cluster", total=None)
        return cluster.warm_cluster(located, address, check=False, on_progress=lambda done,
                                    total: progress.update(task, completed=done,
                                                           total=total or None))


@click.command()
@click.argument("paths", nargs=-1, required=True)
def pin(paths: tuple[str, ...]) -> None:
    """Fetch files or directories into the hot tier and keep them there (never evicted)."""
    try:
        for record, rels in by_mount(paths).items():
            for r in with_progress(record, {"cmd": "pin", "paths": rels, "pin": True},
                                    "pinning"):
                click.echo(f"pinned {show(r['path'])}: {size(r['pinned'])} in "
                           f"{r['files']} files")
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
                click.echo(f"unpinned {show(r['path'])}")
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
                click.echo(f"  could not publish {show(item['path'])}: {item['error']} (kept "
                           "staged; tried again in the background)", err=True)
                failed += 1
    except TierfsError as e:
        fail(str(e))
    if failed:
        sys.exit(1)
