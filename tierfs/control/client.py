"""The command-line side of the control channel (blocking; the CLI has no event loop)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierfs.control.registry import MountRecord, mount_for
from tierfs.control.unixpath import unix_address
from tierfs.errors import TierfsError


class ControlError(TierfsError):
    pass


class NotInMount(ControlError):
    """The path is not inside a running tierfs mount of this user."""


def locate(path: str, records: list[MountRecord] | None = None) -> tuple[MountRecord, str]:
    found = mount_for(path, records)
    if found is None:
        raise NotInMount(f"{path} is not inside a running tierfs mount")
    return found


def call(record: MountRecord, request: dict[str, Any],
         on_progress: Callable[[dict[str, Any]], None] | None = None,
         timeout: float | None = None) -> Any:
    """Send one request to a mount; progress lines go to ``on_progress``; returns the result
    or raises ControlError with the mount's message."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        with unix_address(Path(record.socket)) as address:
            sock.connect(address)
    except OSError as e:
        raise ControlError(f"cannot reach the mount on {record.mountpoint} "
                           f"({record.socket}): {e.strerror or e}") from None
    with sock, sock.makefile("rb") as replies:
        sock.sendall(json.dumps(request).encode() + b"\n")
        for line in replies:
            message = json.loads(line)
            if "ok" not in message:
                if on_progress is not None:
                    on_progress(message)
                continue
            if not message["ok"]:
                raise ControlError(message.get("error", "the mount refused the request"))
            return message.get("result")
    raise ControlError(f"the mount on {record.mountpoint} closed the connection")
