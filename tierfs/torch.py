"""PyTorch helper (the ``tierfs[torch]`` extra): a sampler that hands each epoch's reading
order to the mount as the epoch starts.

    from tierfs.torch import PlannedSampler
    dataset = torchvision.datasets.ImageFolder("/mnt/tierfs/train")
    sampler = PlannedSampler(RandomSampler(dataset), dataset.samples)
    loader = DataLoader(dataset, sampler=sampler, num_workers=8, batch_size=256)

A DataLoader iterates its sampler in the main process and sends indices to its workers, so the
plan is sent once per epoch, from the main process, before the first batch is asked for; the
workers read the files as they would anyway. The dataset's items must be files: ``paths_of``
gives an index's path (a callable, or a sequence of paths or of ``(path, ...)`` tuples such as
an ImageFolder's ``samples``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import Sampler

log = logging.getLogger(__name__)


def _path_getter(paths_of: Callable[[int], Any] | Sequence[Any]) -> Callable[[int], str]:
    if callable(paths_of):
        return lambda i: os.fspath(paths_of(i))  # type: ignore[operator]

    def get(i: int) -> str:
        item = paths_of[i]  # type: ignore[index]
        return os.fspath(item[0] if isinstance(item, tuple) else item)

    return get


class PlannedSampler(Sampler[int]):
    """Wraps a sampler of indices; each ``__iter__`` (each epoch) sends the order of the files
    behind its indices to ``tierfs.prefetch``, then yields the same indices.

    ``strict``: raise when the plan cannot be sent (a path outside any mount, a mount that
    refuses); by default the epoch goes on without a plan and a warning is logged once.
    """

    def __init__(self, sampler: Sampler[int] | Sequence[int],
                 paths_of: Callable[[int], Any] | Sequence[Any], strict: bool = False,
                 window: int | None = None, fetches: int | None = None) -> None:
        self.sampler = sampler
        self._path = _path_getter(paths_of)
        self.strict = strict
        self.window = window
        self.fetches = fetches
        #: The last plan's status per mount, as ``tierfs.prefetch`` returned it.
        self.last_status: list[dict[str, Any]] = []
        self._warned = False

    def __iter__(self) -> Iterator[int]:
        order = list(iter(self.sampler))
        self._send([self._path(i) for i in order])
        return iter(order)

    def _send(self, paths: list[str]) -> None:
        from tierfs.api import TierfsError, prefetch
        try:
            self.last_status = prefetch(paths, window=self.window, fetches=self.fetches)
        except TierfsError as e:
            if self.strict:
                raise
            if not self._warned:
                log.warning("the epoch's order was not sent to tierfs (reading goes on "
                            "without it): %s", e)
                self._warned = True

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Passed on to the wrapped sampler (DistributedSampler shuffles by epoch)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
