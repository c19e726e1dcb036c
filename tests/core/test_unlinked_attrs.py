"""The attributes of an open file whose name is gone are read through a descriptor of the
call's own: the file's own descriptor may be closed by the last release while the call waits
for a thread, and its number given to the next file opened, whose attributes would be
answered for this one (a wrong size, and reads cut short or run past the end)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.core import context

from .conftest import ROOT, core_test, open_core


class GatedFstat:
    """``os`` for ``tierfs.core.context``, whose ``fstat`` in a worker thread waits for
    ``gate`` (a slow NFS server answering the attributes' call)."""

    def __init__(self) -> None:
        self.gate, self.reached = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fstat(self, fd: int) -> os.stat_result:
        if threading.current_thread() is not threading.main_thread():
            self.reached.set()
            assert self.gate.wait(10)
        return os.fstat(fd)


@core_test
async def test_an_unlinked_open_files_attributes_are_never_another_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, other = b"o" * 4000, b"X" * 90_000
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", ours)
        inode = await core.lookup_path(b"f")
        fh = await core.open(b"f")
        assert bytes(await core.fs.read(fh, 0, 10)) == ours[:10]
        number = inode.data.warm_fd
        assert number is not None
        await core.fs.unlink(ROOT, b"f")  # (its attributes forgotten: read again below)
        gated = GatedFstat()
        monkeypatch.setattr(context, "os", gated)
        got: list[Any] = []

        async def getattr_() -> None:
            got.append(await core.fs.getattr(inode.ino))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(getattr_)
            while not gated.reached.is_set():
                await trio.sleep(0.005)
            await core.fs.release(fh)  # the last handle: its warm descriptor closed
            deadline = time.monotonic() + 5
            while True:  # (closed in a thread)
                try:
                    os.fstat(number)
                except OSError:
                    break
                assert time.monotonic() < deadline, "the descriptor was never closed"
                await trio.sleep(0.005)
            g = os.open(tmp_path / "g", os.O_CREAT | os.O_RDWR, 0o600)
            os.write(g, other)
            if g != number:  # the next file opened gets the number
                os.dup2(g, number)
                os.close(g)
            gated.gate.set()
        os.close(number)
        assert got and got[0].size == len(ours), got
