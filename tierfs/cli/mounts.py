"""``tierfs mount`` and ``tierfs unmount``."""

from __future__ import annotations

import faulthandler
import logging
import os
from pathlib import Path
from typing import Any

import click

from tierfs.cli.common import config_options, fail, leaf_errors
from tierfs.config import Config, load_config
from tierfs.errors import MountError, TierfsError
from tierfs.paths import show

log = logging.getLogger("tierfs")


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
    formatter = OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=config.log_level.upper(), handlers=handlers, force=True)


class OneLine(logging.Formatter):
    """Each message on one line of text, whatever it names: object keys come from stubs
    anyone may write on the shared tree, and a newline in one would start a log line of its
    writer's choosing. Tracebacks, added after the message, keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = show(record.message)
        return super().formatMessage(record)


@click.command()
@click.argument("mountpoint", type=click.Path(path_type=str))
@click.option("-f", "--foreground", is_flag=True, help="Serve in this process until unmounted.")
@click.option("--nonempty", is_flag=True,
              help="Mount even if MOUNTPOINT holds files (they are hidden while mounted).")
@click.option("--daemon-child", is_flag=True, hidden=True)
@config_options
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
            warm = " ".join(f"{n}={p}" for n, p in config.roots) or config.warm
            click.echo(f"tierfs mounted on {mountpoint} (pid {pid}; hot {config.hot}, "
                       f"warm {warm})")
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
        fail(str(e))
    except RuntimeError as e:  # pyfuse3 reports a refused mount this way
        fail(f"cannot mount {mountpoint}: {e}")
    except Exception as e:  # noqa: BLE001 - one line for the user, the traceback to the log
        # The parent of a daemon shows the child's last line of output: a traceback's last
        # line (an exception group's is a rule of dashes) would say nothing.
        leaves = leaf_errors(e)
        if all(isinstance(leaf, TierfsError) for leaf in leaves):
            fail("; ".join(str(leaf) for leaf in leaves))
        log.error("the mount on %s stopped", mountpoint, exc_info=e)
        what = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
        fail(f"the mount on {mountpoint} stopped: {what} (traceback in tierfs.log on the hot "
              "tier)")


@click.command()
@click.argument("mountpoint", type=click.Path(path_type=str))
def unmount(mountpoint: str) -> None:
    """Publish pending writes and unmount MOUNTPOINT."""
    from tierfs import mounting

    try:
        unpublished = mounting.unmount(os.path.abspath(mountpoint))
    except TierfsError as e:
        fail(str(e))
    click.echo(f"unmounted {os.path.abspath(mountpoint)}")
    if unpublished:
        for path in unpublished:
            click.echo(f"  not published: {path}", err=True)
        fail(f"{len(unpublished)} files could not be published; their data stays staged on "
              "the hot tier, and the next mount publishes it (see tierfs.log there)")
