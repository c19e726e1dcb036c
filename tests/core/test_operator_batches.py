"""Operator commands on a large directory (``where``, ``warm``, ``evict``, ``pin``) read each
file's state on the event loop a batch at a time, and make their answers in a thread: the
shared warm tree holds as many files there as anyone put, and the whole mount (every FUSE
request) would wait for the command."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from tierfs.control.commands import make_handlers

from .conftest import core_test, open_core

#: Files in the directory named (a dataset directory of a few hundred thousand files is
#: ordinary; ImageNet's train split holds 1.28 million).
FILES = 60_000
#: The longest the event loop may go without running another task.
MAX_STALL = 0.1


async def _longest_stall(run) -> float:  # type: ignore[no-untyped-def]
    longest, done = 0.0, False

    async def tick() -> None:
        nonlocal longest
        last = time.monotonic()
        while not done:
            await trio.sleep(0.002)
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await trio.sleep(0.01)
        await run()
        done = True
    return longest


@core_test
async def test_where_of_a_large_directory_does_not_stall_the_event_loop(tmp_path: Path
                                                                         ) -> None:
    async with open_core(tmp_path) as core:
        big = core.warm / "big"
        big.mkdir()
        for i in range(FILES):  # (made straight on the warm tier, as any cluster user can)
            os.close(os.open(big / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
        handlers = make_handlers(core.fs, "/mnt")

        async def send(message: object) -> None:
            pass

        stalls = {}
        for cmd in ("where", "evict"):
            async def run() -> None:
                await handlers[cmd]({"paths": ["big"], "check": True}, send)
            stalls[cmd] = await _longest_stall(run)
        assert max(stalls.values()) < MAX_STALL, (
            f"the event loop was held {stalls} s by one command on a directory of {FILES} "
            "files: every FUSE request of the mount waited that long")
