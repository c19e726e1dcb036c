"""Unix socket addresses for socket files at paths of any length.

A Unix socket address holds at most 107 bytes of path, and a hot tier deep in a file system
makes ``<hot>/run/control.sock`` longer than that: binding or connecting to it fails with
"AF_UNIX path too long". Such a path is reached through a descriptor of its directory instead:
``/proc/self/fd/<fd>/<name>`` resolves to the same file, in a few dozen bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Bytes of path a Unix socket address holds (``sun_path`` less its terminating NUL).
MAX_ADDRESS = 107


@contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for the socket file at ``path``, valid inside the ``with`` block (a long
    path holds a descriptor of its directory open until then). Blocking: opens a directory."""
    if len(os.fsencode(path)) <= MAX_ADDRESS:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
