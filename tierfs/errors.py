"""Errors that reach users. Nothing here imports pyfuse3: the store and cache layers use these
without the FUSE layer (tierfs/fuse/errors.py maps exceptions to errnos)."""

from __future__ import annotations

from typing import Any


class TierfsError(Exception):
    """An error whose message is a complete one-line reason for the user."""


class ConfigError(TierfsError):
    """A bad configuration file, key or flag value; the message names the key."""


class MountError(TierfsError):
    """The mount cannot start: a missing mount point, tier, /dev/fuse and so on."""


def __getattr__(name: str) -> Any:
    """``to_fuse_errors`` moved to tierfs.fuse.errors; the old name is found there on first use
    only, so importing this module never imports pyfuse3. To be removed once no module asks
    for it here."""
    if name == "to_fuse_errors":
        from tierfs.fuse.errors import to_fuse_errors
        return to_fuse_errors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
