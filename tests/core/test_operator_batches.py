"""Operator commands on a large directory (``where``, ``warm``, ``evict``, ``pin``) read each
file's state on the event loop a batch at a time, and make their answers in a thread: the
shared warm tree holds as many files there as anyone put, and the whole mount (every FUSE
request) would wait for the command. Checked by counting how many files' states are read
(and blocks evicted) between two turns of another task, not by timing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.control.commands import make_handlers
from tierfs.vfs import residency

from .conftest import core_test, open_core

#: Files in the directory named (a dataset directory of a few hundred thousand files is
#: ordinary; ImageNet's train split holds 1.28 million).
FILES = 20_000


class Turns:
    """Counts another task's turns, and the longest run of calls made without one."""

    def __init__(self) -> None:
        self.turn = 0
        self.run = 0
        self.longest = 0
        self._at = -1

    def counted(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.run = self.run + 1 if self._at == self.turn else 1
            self._at = self.turn
            self.longest = max(self.longest, self.run)
            return fn(*args, **kwargs)
        return call

    async def tick(self, done: trio.Event) -> None:
        while not done.is_set():
            self.turn += 1
            # Runnable at every checkpoint of the others, but letting go of the GIL a moment
            # each turn: spinning, it starved the warm thread listing the directory (each of
            # its calls waited for the interpreter's switch interval), which took minutes.
            time.sleep(0.00005)
            await trio.lowlevel.checkpoint()


@core_test
async def test_where_and_evict_of_a_large_directory_let_the_mount_serve(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path) as core:
        big = core.warm / "big"
        big.mkdir()
        for i in range(FILES):  # (made straight on the warm tier, as any cluster user can)
            os.close(os.open(big / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
        turns = Turns()
        monkeypatch.setattr(residency.Residency, "_state",
                            turns.counted(residency.Residency._state))
        cache = core.fs.core.cache
        monkeypatch.setattr(cache, "cached_count", turns.counted(cache.cached_count))
        handlers = make_handlers(core.fs, "/mnt")

        async def send(message: object) -> None:
            pass

        for cmd in ("where", "evict", "pin"):
            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(turns.tick, done)
                answer = await handlers[cmd]({"paths": ["big"], "check": True}, send)
                done.set()
            assert answer
        assert 0 < turns.longest <= 2 * residency.BATCH, (  # (one batch of each kind)
            f"{turns.longest} files read in one go on the event loop (of {FILES})")
