"""The ``tierfs`` command line. Every configuration key gets a flag of the same name,
generated from ``config.KEYS``; the commands live in modules by what they do."""

from __future__ import annotations

import click

from tierfs import __version__
from tierfs.cli import cache, importing, inspect, mounts, placement
from tierfs.cli.mounts import setup_logging

__all__ = ["main", "setup_logging"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tierfs")
def main() -> None:
    """tierfs: one POSIX namespace over local NVMe (hot), NFS (warm) and object storage."""


for command in (mounts.mount, mounts.unmount, cache.warm, importing.import_, inspect.stats,
                inspect.where, cache.pin, cache.unpin, cache.evict, cache.flush, inspect.status,
                inspect.doctor, placement.demote, placement.promote, placement.scan):
    main.add_command(command)
