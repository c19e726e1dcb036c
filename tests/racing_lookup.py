"""tierfs in the foreground, whose first lookup of one name answers ENOENT although the warm
tier holds it: the moment just before another node makes the name, frozen, so that the
kernel's LOOKUP and CREATE of that name see it absent and present (a race a test cannot time).

    python tests/racing_lookup.py NAME MOUNTPOINT [tierfs mount options]
"""

from __future__ import annotations

import errno
import os
import sys

from tierfs.cli import main
from tierfs.vfs import namespace

_real_lookup = namespace.Namespace.lookup
_raced: set[bytes] = set()


async def _lookup(self: namespace.Namespace, parent: int, name: bytes):  # type: ignore[no-untyped-def]  # noqa: ANN202,E501
    if name == RACED and name not in _raced:
        _raced.add(name)
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
    return await _real_lookup(self, parent, name)


if __name__ == "__main__":
    RACED = os.fsencode(sys.argv[1])
    namespace.Namespace.lookup = _lookup  # type: ignore[method-assign]
    sys.argv = ["tierfs", "mount", "--foreground", *sys.argv[2:]]
    main()
