"""tierfs: one POSIX namespace over node-local NVMe (hot), NFS (warm) and object storage (cold).

Training code talks to running mounts through ``tierfs.warm``, ``tierfs.where``,
``tierfs.stats`` and ``tierfs.prefetch`` (see ``tierfs.api``). They are imported on first use,
so ``import tierfs`` costs nothing more than this file.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# ``tierfs.stats`` is also a module (the stats document; cheap to import): imported here first,
# so that the function below keeps the name (a submodule imported later would take it over).
import tierfs.stats as _stats_document  # noqa: F401

_API = ("warm", "where", "prefetch", "stop_prefetch", "TierfsError", "NotInMount")


def stats(mount: Any) -> dict[str, Any]:
    """The mount's counters, gauges and rates (``tierfs.api.stats``)."""
    from tierfs import api
    return api.stats(mount)


def __getattr__(name: str) -> Any:
    if name in _API:
        from tierfs import api
        return getattr(api, name)
    raise AttributeError(f"module 'tierfs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
