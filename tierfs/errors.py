"""Errors that reach users. Nothing here imports pyfuse3: the store and cache layers use these
without the FUSE layer (tierfs/fuse/errors.py maps exceptions to errnos)."""

from __future__ import annotations


class TierfsError(Exception):
    """An error whose message is a complete one-line reason for the user."""


class ConfigError(TierfsError):
    """A bad configuration file, key or flag value; the message names the key."""


class MountError(TierfsError):
    """The mount cannot start: a missing mount point, tier, /dev/fuse and so on."""

