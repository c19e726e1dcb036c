"""The ``tierfs`` command line: mount and unmount.

Every configuration key gets a flag of the same name, generated from ``config.KEYS``.
"""

from __future__ import annotations

import faulthandler
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
from tierfs.errors import MountError, TierfsError

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
    """Log to ``tierfs.log`` on the hot tier: mode 0600 (it names users' files), the mount's
    user's, never opened through a symlink (the daemon may run as root). Raises MountError."""
    from tierfs.tiers.hot import open_own_file

    class OwnLogFile(logging.FileHandler):
        def _open(self):  # type: ignore[no-untyped-def]  # (logging's own signature)
            fd = open_own_file(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND)
            return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)

    try:
        handlers: list[logging.Handler] = [OwnLogFile(config.hot / "tierfs.log")]
    except OSError as e:
        raise MountError(f"cannot open the log: {e.strerror or e}") from None
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
@click.option("--nonempty", is_flag=True,
              help="Mount even if MOUNTPOINT holds files (they are hidden while mounted).")
@click.option("--daemon-child", is_flag=True, hidden=True)
@_config_options
def mount(mountpoint: str, foreground: bool, nonempty: bool, daemon_child: bool,
          config_file: Path | None, **flags: Any) -> None:
    """Mount tierfs on MOUNTPOINT; returns once the mount is live."""
    from tierfs import mounting

    mountpoint = os.path.abspath(mountpoint)
    try:
        config = load_config(config_file, flags)
        mounting.preflight(config, mountpoint, nonempty)
        if not foreground:
            pid = mounting.start_daemon(config, mountpoint, nonempty)
            click.echo(f"tierfs mounted on {mountpoint} (pid {pid}; hot {config.hot}, "
                       f"warm {config.warm})")
            return
        from tierfs.fuse import session

        setup_logging(config, to_stderr=not daemon_child)

        def on_ready() -> None:
            if daemon_child:  # hand stderr over to the log: the parent sees EOF and returns
                from tierfs.tiers.hot import open_own_file

                fd = open_own_file(config.hot / "tierfs.log", os.O_WRONLY | os.O_APPEND)
                os.dup2(fd, 2)
                os.close(fd)
            # A crash in native code (libfuse, LMDB) leaves its Python stack in the log.
            faulthandler.enable()

        session.run(config, mountpoint, on_ready)
    except TierfsError as e:
        _fail(str(e))
    except RuntimeError as e:  # pyfuse3 reports a refused mount this way
        _fail(f"cannot mount {mountpoint}: {e}")
    except Exception as e:  # noqa: BLE001 - one line for the user, the traceback to the log
        # The parent of a daemon shows the child's last line of output: a traceback's last
        # line (an exception group's is a rule of dashes) would say nothing.
        leaves = _leaf_errors(e)
        if all(isinstance(leaf, TierfsError) for leaf in leaves):
            _fail("; ".join(str(leaf) for leaf in leaves))
        log.error("the mount on %s stopped", mountpoint, exc_info=e)
        what = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
        _fail(f"the mount on {mountpoint} stopped: {what} (traceback in tierfs.log on the hot "
              "tier)")


def _leaf_errors(error: BaseException) -> list[BaseException]:
    """The exceptions inside an exception group (trio's nurseries raise those), or the one."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaf_errors(inner)]
    return [error]


@main.command()
@click.argument("mountpoint", type=click.Path(path_type=str))
def unmount(mountpoint: str) -> None:
    """Publish pending writes and unmount MOUNTPOINT."""
    from tierfs import mounting

    try:
        unpublished = mounting.unmount(os.path.abspath(mountpoint))
    except TierfsError as e:
        _fail(str(e))
    click.echo(f"unmounted {os.path.abspath(mountpoint)}")
    if unpublished:
        for path in unpublished:
            click.echo(f"  not published: {path}", err=True)
        _fail(f"{len(unpublished)} files could not be published; their data stays staged on "
              "the hot tier, and the next mount publishes it (see tierfs.log there)")


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

    DIRECTORY is a path inside a running mount (/mnt/data/datasets/imagenet: that mount's
    tiers and bucket are used), or a path in the namespace (datasets/imagenet) or an absolute
    path inside the warm tier, with the tiers given by --warm, --bucket or the configuration.
    No data is copied; running it again is harmless and finishes an interrupted run.
    """
    from rich.progress import Progress

    from tierfs.importer import destination, import_objects, source_prefix
    from tierfs.objects.base import ObjectStoreError
    from tierfs.mounting import open_checked_store

    try:
        config, dest, shown = _import_target(directory, config_file, flags)
        prefix = source_prefix(config, uri)
        if dest is None:
            dest = destination(config, directory)
            shown = str(Path(config.warm, *dest))
        store = open_checked_store(config)
        with Progress(transient=True) as progress:
            task = progress.add_task("importing", total=None)
            result = import_objects(config, store, prefix, dest,
                                    lambda n: progress.advance(task, n))
    except TierfsError as e:
        _fail(str(e))
    except ObjectStoreError as e:
        _fail(f"listing {uri}: {e}")
    except OSError as e:
        _fail(f"importing into {directory}: {e}")
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
        pass  # the registry's tiers; the rest from the flags and the configuration file
    config = load_config(config_file, {**flags, **mounted})
    return config, parts, os.path.join(record.mountpoint, *parts)


def _table(title: str, rows: list[tuple[str, str]]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # The title above the table, not as its title: a table's title wraps at the table's
    # width, which cut long paths and bucket URIs in two (printed with soft_wrap, it is
    # neither wrapped nor cropped).
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    return Group(Text(title, style="italic", no_wrap=True, overflow="ignore"), table)


def _capacity_row(hot: dict[str, Any]) -> tuple[str, str]:
    """Used against the capacity the cache can reach, and why when the disk limits it (a
    document saved before ``usable_capacity`` existed shows the configured capacity)."""
    usable = hot.get("usable_capacity", hot["capacity"])
    if usable < hot["capacity"]:
        return ("used / usable capacity",
                f"{_size(hot['used'])} / {_size(usable)} (disk free limits it; "
                f"{_size(hot['capacity'])} configured)")
    return ("used / capacity", f"{_size(hot['used'])} / {_size(hot['capacity'])}")


def _stats_view(doc: dict[str, Any]) -> Any:
    """The stats document as one table per tier."""
    from rich.console import Group

    hot, warm, cold = (doc["tiers"][t] for t in ("hot", "warm", "cold"))
    rates = doc.get("rates") or {}
    ratio = "-" if hot["hit_ratio"] is None else f"{hot['hit_ratio']:.1%}"

    def rate(tier: str) -> str:
        return f"{_size(int(rates[tier]))}/s" if tier in rates else "-"

    where = doc["mountpoint"] or "(not mounted: last saved figures)"
    return Group(
        f"[bold]{where}[/bold]",
        _table(f"hot  {hot['path']}", [
            _capacity_row(hot),
            ("blocks", str(hot["blocks"])), ("pinned", _size(hot["pinned"])),
            ("staged", f"{hot['staged_files']} files, {_size(hot['staged_bytes'])}"),
            ("hit ratio", f"{ratio} ({hot['hits']} hits, {hot['misses']} misses)"),
            ("served", _size(hot["bytes_served"])), ("throughput", rate("hot")),
            ("evictions", f"{hot['evictions']} ({_size(hot['bytes_evicted'])})"),
            ("disk free", _size(hot["disk_free"]))]),
        _table(f"warm  {warm['path']}", [
            ("used / size", f"{_size(warm['disk_used'])} / {_size(warm['disk_size'])}"),
            ("served", _size(warm["bytes_served"])), ("throughput", rate("warm"))]),
        _table(f"cold  {cold['bucket']}", [
            ("served", _size(cold["bytes_served"])), ("GETs", str(cold["fetches"])),
            ("throughput", rate("cold")),
            ("pending uploads", f"{cold['pending_uploads']} ({_size(cold['pending_bytes'])})"),
            ("upload errors", str(cold["upload_errors"])),
            ("uploads lost", str(cold.get("uploads_lost", 0)))]))


def _saved_stats(config: Config) -> dict[str, Any]:
    from tierfs.cache.counters import load_saved
    from tierfs.stats import build

    snapshot = load_saved(config.hot)
    if snapshot is None:
        raise TierfsError(f"no tierfs mount is running, and {config.hot} holds no saved "
                          "figures")
    return build(snapshot, live=False, mountpoint=None, hot=str(config.hot),
                 warm=str(config.warm), bucket=str(config.bucket))


@main.command()
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON document.")
@click.option("--watch", is_flag=True, help="Refresh every second until interrupted.")
@_config_options
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

    from tierfs.control.client import call, locate
    from tierfs.control.registry import mounts

    console = Console()
    try:
        if path is not None:
            record, rel = locate(path)
            if rel:  # a path inside the mount
                result = call(record, {"cmd": "where", "paths": [rel]})[0]
                result.pop("entries")
                if as_json:
                    click.echo(json.dumps(result, indent=2))
                    return
                console.print(_table(f"{record.mountpoint}/{rel}", [
                    ("files", str(result["files"])), ("size", _size(result["size"])),
                    ("hot", _size(result["hot"])), ("warm", _size(result["warm"])),
                    ("cold", _size(result["cold"])), ("pinned", _size(result["pinned"])),
                    ("to fetch to make it all hot", _size(result["to_fetch"]))]),
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
            if not records:
                return [_saved_stats(load_config(config_file, flags))]
            return [call(r, {"cmd": "stats"}) for r in records]

        if as_json:
            docs = documents()
            click.echo(json.dumps(docs[0] if path is not None else docs, indent=2))
            return
        if not watch:
            for doc in documents():
                console.print(_stats_view(doc), soft_wrap=True)  # long paths whole
            return
        from rich.console import Group

        with Live(console=console, auto_refresh=False) as live:
            while True:
                live.update(Group(*(_stats_view(d) for d in documents())), refresh=True)
                time.sleep(1.0)
    except TierfsError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def where(paths: tuple[str, ...], as_json: bool) -> None:
    """The tier holding each file, its object URI, and how much of it is cached hot."""
    from tierfs.control.client import call

    try:
        files = []
        for record, rels in _by_mount(paths).items():
            for result in call(record, {"cmd": "where", "paths": rels}):
                for f in result["entries"]:
                    files.append({**f, "path": os.path.join(record.mountpoint, f["path"])})
    except TierfsError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(files, indent=2))
        return
    for f in files:
        share = 100.0 if f["size"] == 0 else 100.0 * f["hot"] / f["size"]
        pinned = ", pinned" if f["pinned"] else ""
        click.echo(f"{f['path']}: {f['tier']}, {_size(f['size'])}, {share:.0f}% hot{pinned}"
                   + (f", {f['uri']}" if f["uri"] else ""))


def _with_progress(record: Any, request: dict[str, Any], label: str) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from tierfs.control.client import call

    with Progress("[progress.description]{task.description}", BarColumn(),
                  DownloadColumn(binary_units=True), TransferSpeedColumn(),
                  transient=True) as progress:
        task = progress.add_task(label, total=None)
        return call(record, request, lambda m: progress.update(
            task, completed=m["progress"], total=m["total"] or None))


@main.command()
@click.argument("paths", nargs=-1, required=True)
def pin(paths: tuple[str, ...]) -> None:
    """Fetch files or directories into the hot tier and keep them there (never evicted)."""
    try:
        for record, rels in _by_mount(paths).items():
            for r in _with_progress(record, {"cmd": "pin", "paths": rels, "pin": True},
                                    "pinning"):
                click.echo(f"pinned {r['path']}: {_size(r['pinned'])} in {r['files']} files")
    except TierfsError as e:
        _fail(str(e))


@main.command()
@click.argument("paths", nargs=-1, required=True)
def unpin(paths: tuple[str, ...]) -> None:
    """Let pinned files be evicted again (their blocks stay cached until then)."""
    from tierfs.control.client import call

    try:
        for record, rels in _by_mount(paths).items():
            for r in call(record, {"cmd": "pin", "paths": rels, "pin": False}):
                click.echo(f"unpinned {r['path']}")
    except TierfsError as e:
        _fail(str(e))


@main.command()
@click.argument("paths", nargs=-1, required=True)
def evict(paths: tuple[str, ...]) -> None:
    """Drop the cached blocks of files or directories from the hot tier (a pin stays: pinned
    files are cached again when next read)."""
    from tierfs.control.client import call

    try:
        for record, rels in _by_mount(paths).items():
            result = call(record, {"cmd": "evict", "paths": rels})
            click.echo(f"evicted {_size(result['freed'])} from {record.mountpoint}")
    except TierfsError as e:
        _fail(str(e))


@main.command()
@click.argument("mountpoint", required=False)
def flush(mountpoint: str | None) -> None:
    """Wait until every write-back file is on its home tier (all mounts by default)."""
    from tierfs.control.client import locate
    from tierfs.control.registry import mounts

    try:
        records = [locate(mountpoint)[0]] if mountpoint else mounts()
        failed = 0
        for record in records:
            result = _with_progress(record, {"cmd": "flush"}, f"flushing {record.mountpoint}")
            click.echo(f"{record.mountpoint}: {result['flushed']} files flushed, "
                       f"{result['pending']} pending")
            for item in result.get("failed", []):
                click.echo(f"  could not publish {item['path']}: {item['error']} (kept "
                           "staged; tried again in the background)", err=True)
                failed += 1
    except TierfsError as e:
        _fail(str(e))
    if failed:
        sys.exit(1)


@main.command()
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
            free = f", {_size(h['free'])} free" if h.get("free") is not None else ""
            mark = "ok" if h["ok"] else "PROBLEM"
            click.echo(f"  {tier:<5} {mark:<8} {where.get(tier, '')}{free}"
                       + ("" if h["ok"] else f": {h['detail']}"))
    if not all(h["ok"] for m in out for h in m["health"].values()):
        sys.exit(1)


@main.command()
@_config_options
def doctor(config_file: Path | None, **flags: Any) -> None:
    """Check this machine and the configured tiers; print a fix for each problem found."""
    from tierfs.doctor import run_checks

    try:
        config = load_config(config_file, flags)
    except TierfsError as e:
        _fail(str(e))
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
