"""A cold file opened for reading through the mount while it is promoted: the open's owner
check (a HEAD of the object, made outside the namespace lock) can come back while the
promotion's swap (``warmswap.unstub``, under the lock) is under way. The open looks at the stub
again under the lock, so it waits for the swap and is refused as stale (the kernel looks the
name up again), or comes first and makes the promotion leave the file alone. Before, it made
its open state on the stub midway, and the promotion deleted the object the handle read: EIO."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from tierfs.write import warmswap

from .conftest import core_test, open_core
from .test_demote import DATA, put_warm


@core_test
async def test_a_reader_opened_during_a_promotion_reads_the_whole_file(
        tmp_path: Path) -> None:
    put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path, large_file_threshold="1GiB") as c:
        assert (await c.fs.demoter.demote(b"big.bin")).done
        inode = await c.lookup_path(b"big.bin")

        # The reader's owner check (its first HEAD of the object) is slow to come back.
        hold = c.store.hold_after("head", 1)
        real_unstub = warmswap.unstub

        def slow_unstub(s: warmswap.StubAt) -> object:
            # The promotion is under the namespace lock, past its "open here?" check: the
            # reader's HEAD comes back now, while the swap is on its way to the warm tier.
            hold.release()
            time.sleep(0.5)
            return real_unstub(s)

        handles: list[int] = []
        errors: list[BaseException] = []

        async def reader() -> None:
            try:
                fh, _, _ = await c.fs.open(inode.ino, os.O_RDONLY)
                handles.append(fh)
            except OSError as e:  # ESTALE: the kernel looks the name up again, fine
                errors.append(e)

        warmswap.unstub = slow_unstub  # type: ignore[assignment]
        try:
            async with trio.open_nursery() as n:
                n.start_soon(reader)
                await trio.to_thread.run_sync(hold.reached.wait, 10)
                outcome = await c.fs.demoter.promote(b"big.bin")
        finally:
            warmswap.unstub = real_unstub  # type: ignore[assignment]

        if errors or not handles:
            return  # the open was refused (stale): nothing for it to read wrongly
        fh = handles[0]
        try:
            # Either the promotion left the file alone (it was open) or the reader reads the
            # whole file all the same.
            got = await c.read_all(fh)
        finally:
            await c.fs.release(fh)
        assert got == DATA, (outcome, len(got))
