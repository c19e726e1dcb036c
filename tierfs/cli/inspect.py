"""Commands that report without changing anything: stats, where, status, doctor."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from tierfs.cli.common import by_mount, config_options, fail, size, table
from tierfs.config import Config, load_config
from tierfs.errors import TierfsError
from tierfs.paths import show


def _capacity_row(hot: dict[str, Any]) -> tuple[str, str]:
    """Used against the capacity the cache can reach, and why when the disk limits it (a
    document saved before ``usable_capacity`` existed shows the configured capacity)."""
    usable = hot.get("usable_capacity", hot["capacity"])
    if usable < hot["capacity"]:
        return ("used / usable capacity",
                f"{size(hot['used'])} / {size(usable)} (disk free limits it; "
                f"{size(hot['capacity'])} configured)")
    return ("used / capacity", f"{size(hot['used'])} / {size(hot['capacity'])}")


def _moves(warm: dict[str, Any]) -> list[tuple[str, str]]:
    """Demotions to the bucket and promotions back, as stats rows."""
    return [("demoted", f"{warm.get('demotions', 0)} ({size(warm.get('bytes_demoted', 0))})"
             + (f", {warm['demotions_discarded']} discarded (changed while uploading)"
                if warm.get("demotions_discarded") else "")),
            ("promoted", f"{warm.get('promotions', 0)} ({size(warm.get('bytes_promoted', 0))})")]


def _stats_view(doc: dict[str, Any]) -> Any:
    """The stats document as one table per tier."""
    from rich.console import Group

    hot, warm, cold = (doc["tiers"][t] for t in ("hot", "warm", "cold"))
    rates = doc.get("rates") or {}
    ratio = "-" if hot["hit_ratio"] is None else f"{hot['hit_ratio']:.1%}"

    def rate(tier: str) -> str:
        return f"{size(int(rates[tier]))}/s" if tier in rates else "-"

    where = doc["mountpoint"] or "(not mounted: last saved figures)"
    warm_tables = [table(f"warm  {warm['path']}", [
        ("used / size", f"{size(warm['disk_used'])} / {size(warm['disk_size'])}"),
        *([("plain files", size(warm["usage"]))] if warm.get("usage") is not None else []),
        ("served", size(warm["bytes_served"])), ("throughput", rate("warm")),
        *_moves(warm)])]
    if doc.get("roots"):  # a row per named root, in place of the one warm tier
        warm_tables = [table(f"warm {name}  {r['warm']['path']}", [
            ("used / size", f"{size(r['warm']['disk_used'])} / {size(r['warm']['disk_size'])}"),
            ("served", size(r["warm"]["bytes_served"])),
            ("cached hot", f"{size(r['hot']['used'])} / {size(r['hot']['capacity'])}"),
            ("bucket", r["cold"]["bucket"]), *_moves(r["warm"])])
            for name, r in doc["roots"].items()]
    return Group(
        f"[bold]{where}[/bold]",
        table(f"hot  {hot['path']}", [
            _capacity_row(hot),
            ("blocks", str(hot["blocks"])), ("pinned", size(hot["pinned"])),
            ("staged", f"{hot['staged_files']} files, {size(hot['staged_bytes'])}"),
            ("hit ratio", f"{ratio} ({hot['hits']} hits, {hot['misses']} misses)"),
            ("served", size(hot["bytes_served"])), ("throughput", rate("hot")),
            ("evictions", f"{hot['evictions']} ({size(hot['bytes_evicted'])})"),
            ("kept after writes", size(hot.get("kept_written", 0))),
            ("disk free", size(hot["disk_free"]))]),
        *warm_tables,
        table(f"cold  {cold['bucket']}", [
            ("served", size(cold["bytes_served"])), ("GETs", str(cold["fetches"])),
            ("throughput", rate("cold")),
            ("pending uploads", f"{cold['pending_uploads']} ({size(cold['pending_bytes'])})"),
            ("upload errors", str(cold["upload_errors"])),
            ("uploads lost", str(cold.get("uploads_lost", 0)))]))


def _saved_stats(config: Config) -> dict[str, Any]:
    from tierfs.cache.counters import load_saved
    from tierfs.stats import build

    if config.roots:
        return _saved_roots_stats(config)
    snapshot = load_saved(config.hot)
    if snapshot is None:
        raise TierfsError(f"no tierfs mount is running, and {config.hot} holds no saved "
                          "figures")
    return build(snapshot, live=False, mountpoint=None, hot=str(config.hot),
                 warm=str(config.warm), bucket=str(config.bucket))


def _saved_roots_stats(config: Config) -> dict[str, Any]:
    """The figures the last mount of named roots saved, each root's in its folder of the
    hot tier."""
    from tierfs.cache.counters import load_saved
    from tierfs.stats import build, sum_snapshots, with_roots
    from tierfs.vfs.roots import root_config

    docs, snapshots = {}, []
    for name, path in config.roots:
        sub = root_config(config, name, path)
        snapshot = load_saved(sub.hot)
        if snapshot is None:
            continue
        snapshots.append(snapshot)
        docs[name] = build(snapshot, live=False, mountpoint=None, hot=str(sub.hot),
                           warm=str(sub.warm), bucket=str(sub.bucket))
    if not docs:
        raise TierfsError(f"no tierfs mount is running, and {config.hot} holds no saved "
                          "figures")
    warm = " ".join(f"{name}={path}" for name, path in config.roots)
    return with_roots(build(sum_snapshots(snapshots), live=False, mountpoint=None,
                            hot=str(config.hot), warm=warm, bucket=str(config.bucket)), docs)


@click.command()
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON document.")
@click.option("--watch", is_flag=True, help="Refresh every second until interrupted.")
@config_options
def stats(path: str | None, as_json: bool, watch: bool, config_file: Path | None,
          **flags: Any) -> None:
    """What is where and how the cache is doing.

    With no PATH: every running mount (or, when none runs, the figures the last mount saved on
    the configured hot tier); with --hot or --config, only the mount on that hot tier (or the
    figures saved there). With a mount point: that mount. With a path inside a mount: how
    much of it is hot, warm and cold, and how much would need fetching to make it all hot.
    """
    import time

    from rich.console import Console
    from rich.live import Live

    from tierfs.control.client import ControlError, call, locate
    from tierfs.control.registry import mounts

    console = Console()
    unreachable: dict[str, str] = {}
    try:
        if path is not None:
            record, rel = locate(path)
            if rel:  # a path inside the mount
                result = call(record, {"cmd": "where", "paths": [rel]})[0]
                result.pop("entries")
                if as_json:
                    click.echo(json.dumps(result, indent=2))
                    return
                console.print(table(f"{record.mountpoint}/{rel}", [
                    ("files", str(result["files"])), ("size", size(result["size"])),
                    ("hot", size(result["hot"])), ("warm", size(result["warm"])),
                    ("cold", size(result["cold"])), ("pinned", size(result["pinned"])),
                    ("to fetch to make it all hot", size(result["to_fetch"]))]),
                              soft_wrap=True)
                return
            records = [record]
        else:
            records = mounts()
            if config_file is not None or flags.get("hot") is not None:
                # A hot tier named: that tier's mount only, or its saved figures.
                hot = load_config(config_file, flags).hot.resolve()
                records = [r for r in records if Path(r.hot).resolve() == hot]

        def documents() -> list[dict[str, Any]]:
            """Each mount's figures; with no path, a mount that does not answer (starting,
            stopping, hung) is named on stderr and the others are shown."""
            if not records:
                return [_saved_stats(load_config(config_file, flags))]
            docs = []
            for r in records:
                try:
                    docs.append(call(r, {"cmd": "stats"}))
                    unreachable.pop(r.mountpoint, None)
                except ControlError as e:
                    if path is not None:
                        raise
                    unreachable[r.mountpoint] = str(e)
            return docs

        if as_json:
            docs = documents()
            click.echo(json.dumps(docs[0] if path is not None else docs, indent=2))
        elif not watch:
            for doc in documents():
                console.print(_stats_view(doc), soft_wrap=True)  # long paths whole
        if as_json or not watch:
            for why in unreachable.values():
                click.echo(why, err=True)
            if unreachable:
                sys.exit(1)
            return
        from rich.console import Group

        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(Group(*(_stats_view(d) for d in documents())), refresh=True)
                time.sleep(1.0)
    except TierfsError as e:
        fail(str(e))
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def where(paths: tuple[str, ...], as_json: bool) -> None:
    """The tier holding each file, its object URI, and how much of it is cached hot."""
    from tierfs.control.client import call

    try:
        files = []
        for record, rels in by_mount(paths).items():
            for result in call(record, {"cmd": "where", "paths": rels}):
                for f in result["entries"]:
                    files.append({**f, "path": os.path.join(record.mountpoint, f["path"])})
    except TierfsError as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps(files, indent=2))
        return
    for f in files:
        share = 100.0 if f["size"] == 0 else 100.0 * f["hot"] / f["size"]
        pinned = ", pinned" if f["pinned"] else ""
        # (Names as anyone on the shared tree made them: one line each, nothing raw.)
        click.echo(f"{show(f['path'])}: {f['tier']}, {size(f['size'])}, {share:.0f}% hot{pinned}"
                   + (f", {show(f['uri'])}" if f["uri"] else ""))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def status(as_json: bool) -> None:
    """The mounts running, their tiers and each tier's health."""
    from tierfs.control.client import call
    from tierfs.control.registry import mounts

    out = []
    for record in mounts():
        try:
            health = call(record, {"cmd": "health"}, timeout=60)
        except TierfsError as e:
            health = {"daemon": {"ok": False, "detail": str(e)}}
        out.append({"mountpoint": record.mountpoint, "pid": record.pid, "hot": record.hot,
                    "warm": record.warm, "bucket": record.bucket, "health": health})
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not out:
        click.echo("no tierfs mount is running")
        return
    for m in out:
        click.echo(f"{m['mountpoint']} (pid {m['pid']})")
        where = {"hot": m["hot"], "warm": m["warm"], "cold": m["bucket"]}
        for tier, h in m["health"].items():
            free = f", {size(h['free'])} free" if h.get("free") is not None else ""
            mark = "ok" if h["ok"] else "PROBLEM"
            # (a mount with named roots names each root's tiers, with the path checked)
            click.echo(f"  {tier:<5} {mark:<8} {h.get('path', where.get(tier, ''))}{free}"
                       + ("" if h["ok"] else f": {h['detail']}"))
    if not all(h["ok"] for m in out for h in m["health"].values()):
        sys.exit(1)


@click.command()
@config_options
def doctor(config_file: Path | None, **flags: Any) -> None:
    """Check this machine and the configured tiers; print a fix for each problem found."""
    from tierfs.doctor import run_checks

    try:
        config = load_config(config_file, flags)
    except TierfsError as e:
        fail(str(e))
    problems = 0
    for check in run_checks(config):
        mark = "ok" if check.ok else "FAIL"
        click.echo(f"[{mark:>4}] {check.what}: {check.detail}")
        if not check.ok:
            problems += 1
            click.echo(f"       fix: {check.fix}")
    if problems:
        click.echo(f"{problems} problem{'s' if problems > 1 else ''} found", err=True)
        sys.exit(1)
