"""What the commands share: one flag per configuration key, the one way to fail, and how
paths are grouped by the mount that holds them and sizes and tables are shown."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tierfs.config import KEYS


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
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


def fail(message: str) -> None:
    click.echo(f"tierfs: error: {message}", err=True)
    sys.exit(1)


def leaf_errors(error: BaseException) -> list[BaseException]:
    """The exceptions inside an exception group (trio's nurseries raise those), or the one."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaf_errors(inner)]
    return [error]


def by_mount(paths: tuple[str, ...]) -> dict[Any, list[str]]:
    """Group paths by the running mount that holds them (each relative to its root)."""
    from tierfs.control.client import locate

    groups: dict[Any, list[str]] = {}
    for path in paths:
        record, rel = locate(path)
        groups.setdefault(record, []).append(rel)
    return groups


def size(n: int) -> str:
    import humanfriendly

    return humanfriendly.format_size(n, binary=True)


def table(title: str, rows: list[tuple[str, str]]) -> Any:
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


def with_progress(record: Any, request: dict[str, Any], label: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from tierfs.control.client import call

    # (On stderr: what a command prints on stdout is its answer, for scripts to read; and
    # only to a terminal, where it is drawn and wiped, never a line left in a log.)
    console = Console(stderr=True)
    with Progress("[progress.description]{task.description}", BarColumn(),
                  DownloadColumn(binary_units=True), TransferSpeedColumn(),
                  transient=True, console=console,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None)
        return call(record, request, lambda m: progress.update(
            task, completed=m["progress"], total=m["total"] or None))
