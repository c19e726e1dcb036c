"""Commands that move whole files between the warm tier and the bucket: demote, promote, and
scan (large files sitting on the warm tier as plain files)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from tierfs.cli.common import by_mount, config_options, fail, size, with_progress
from tierfs.errors import TierfsError


def _move(paths: tuple[str, ...], cmd: str, as_json: bool) -> None:
    results: list[dict[str, Any]] = []
    try:
        for record, rels in by_mount(paths).items():
            result = with_progress(record, {"cmd": cmd, "paths": rels},
                                   f"{cmd} {record.mountpoint}")
            results += [{**f, "path": os.path.join(record.mountpoint, f["path"])}
                        for f in result["files"]]
    except TierfsError as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps({"files": results}, indent=2))
    else:
        verb = {"demote": "demoted", "promote": "promoted"}[cmd]
        for f in results:
            if f["done"]:
                click.echo(f"{verb} {f['path']} ({size(f['size'])})")
            else:
                click.echo(f"left {f['path']}: {f['why']}")
        done = [f for f in results if f["done"]]
        click.echo(f"{len(done)} file(s), {size(sum(f['size'] for f in done))} {verb}")
    if results and not any(f["done"] for f in results):
        sys.exit(1)  # (nothing could be moved: say so in the status too)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demote(paths: tuple[str, ...], as_json: bool) -> None:
    """Move files (or every file under directories) from the warm tier to the bucket, leaving
    stubs. A file is moved only if nobody changes it while it uploads."""
    _move(paths, "demote", as_json)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def promote(paths: tuple[str, ...], as_json: bool) -> None:
    """Bring cold files (or every cold file under directories) smaller than the large-file
    threshold back to the warm tier."""
    _move(paths, "promote", as_json)


@click.command()
@click.argument("root", required=False)
@click.option("--demote", "demote_them", is_flag=True,
              help="Move the files found to the bucket, leaving stubs (needs a mount).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@config_options
def scan(root: str | None, demote_them: bool, as_json: bool, config_file: Path | None,
         **flags: Any) -> None:
    """List files over the large-file threshold that sit on the warm tier as plain files
    (written there before tierfs, or by tools that bypass the mount), with their total.

    ROOT is a path inside a running mount (default: the mount of the configured warm tier),
    or, with no mount running there, a directory of the warm tier itself: then the files are
    listed from the warm tree directly, with the configured (or given) threshold.
    """
    from tierfs.config import load_config
    from tierfs.control.client import call, locate
    from tierfs.control.registry import mounts

    try:
        config = load_config(config_file, flags)
        record, rel = None, ""
        if root is not None:
            try:
                record, rel = locate(root)
            except TierfsError:
                record = None
        else:
            warm = str(config.warm)
            record = next((r for r in mounts() if r.warm == warm), None)
        if record is not None:
            request = {"cmd": "scan", "path": rel, "demote": demote_them}
            result = (with_progress(record, request, f"demoting under {record.mountpoint}")
                      if demote_them else call(record, request))
            base = record.mountpoint
        elif demote_them:
            fail("--demote needs a running mount holding ROOT (tierfs mount), so that the "
                 "files are swapped for stubs with the mount's checks")
            return
        else:
            result = _scan_unmounted(Path(root) if root else config.warm,
                                     config.large_file_threshold)
            base = str(Path(root) if root else config.warm)
    except TierfsError as e:
        fail(str(e))
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for f in result["files"]:
        click.echo(f"{size(f['size']):>10}  {os.path.join(base, f['path'])}")
    click.echo(f"{result['count']} file(s) over {size(result['threshold'])} on the warm tier, "
               f"{size(result['bytes'])} in all")
    if result["listed"] < result["count"]:
        click.echo(f"({result['listed']} listed: the least recently used; hard-linked files "
                   "are counted, not listed)")
    for f in result.get("demoted", []):
        click.echo(f"demoted {f['path']}" if f["done"] else f"left {f['path']}: {f['why']}")


def _scan_unmounted(root: Path, threshold: int) -> dict[str, Any]:
    """The scan of a warm directory with no mount: read-only, straight from the tree."""
    from tierfs.control.moves import scan_report
    from tierfs.tiers.warm import WarmTier
    from tierfs.write.warmscan import walk

    if not root.is_dir():
        fail(f"{root} is neither inside a running mount nor a directory")
    warm = WarmTier(root, 1)
    try:
        return scan_report(walk(warm, threshold), threshold)
    finally:
        warm.close()
