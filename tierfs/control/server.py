"""The control socket of a running mount: JSON lines over a Unix socket on the hot tier.

The socket is ``<hot>/run/control.sock``, mode 0600 inside a 0700 directory, and every
connection's peer credentials (SO_PEERCRED) are checked: only the mount's owner and root are
served. A request is one JSON object on one line (``{"cmd": "warm", ...}``); the answer is any
number of progress lines (``{"progress": bytes}``) and then one final line, ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error": "..."}``. Commands run on the mount's event loop
and delegate to the filesystem core; see tierfs/control/commands.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from tierfs.control.unixpath import unix_address
from tierfs.tiers.hot import own_folder

log = logging.getLogger(__name__)

#: A request line may not be longer than this.
MAX_REQUEST = 1 << 20

Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], Send], Awaitable[Any]]


class CommandError(Exception):
    """A request that cannot be served: the message goes back to the caller."""


def socket_path(hot: Path) -> Path:
    return hot / "run" / "control.sock"


def peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _prepare(path: Path) -> None:
    """A 0700 directory for the socket (never reached through a symlink), and no stale
    socket from an earlier run."""
    own_folder(path.parent)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


async def serve(path: Path, handlers: dict[str, Handler],
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    await trio.to_thread.run_sync(_prepare, path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.ExitStack() as stack:  # (a long path opens a directory: in a thread)
        address = await trio.to_thread.run_sync(stack.enter_context, unix_address(path))
        await sock.bind(address)
        await trio.to_thread.run_sync(stack.close)
    await trio.to_thread.run_sync(os.chmod, path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:
        await trio.serve_listeners(lambda stream: _connection(stream, handlers), [listener])
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def _connection(stream: trio.SocketStream, handlers: dict[str, Handler]) -> None:
    async def send(message: dict[str, Any]) -> None:
        await stream.send_all(json.dumps(message).encode() + b"\n")

    async def reply(message: dict[str, Any]) -> None:
        """The answer, encoded in a thread: it may list every file of a directory."""
        await stream.send_all(await trio.to_thread.run_sync(
            lambda: json.dumps(message).encode() + b"\n"))

    try:
        uid = peer_uid(stream.socket)
        if uid not in (0, os.geteuid()):
            log.warning("control connection from uid %d refused", uid)
            await send({"ok": False, "error": "permission denied: only the mount's owner and "
                        "root may control it"})
            return
        buf = b""
        while b"\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            if len(buf) > MAX_REQUEST:
                await send({"ok": False, "error": "request too long"})
                return
        try:
            request = json.loads(buf.split(b"\n", 1)[0])
            handler = handlers[request["cmd"]]
        except (ValueError, KeyError, TypeError):
            await send({"ok": False, "error": "unknown or malformed request"})
            return
        try:
            result = await handler(request, send)
        except CommandError as e:
            await send({"ok": False, "error": str(e)})
            return
        except OSError as e:
            await send({"ok": False, "error": f"{e.strerror or e}"})
            return
        await reply({"ok": True, "result": result})
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away
    except Exception:
        log.exception("control request failed")
        try:
            await send({"ok": False, "error": "internal error (see the mount's log)"})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    finally:
        await stream.aclose()
