"""An LMDB commit that fails with "Input/output error" is taken for a full hot disk (a write the
disk cut short) only where the disk is nearly full. A real I/O error of a hot disk with plenty
of room is EIO, and no commit evicts the block cache for room that is not lacking (each
commit, every second, drained the cache and named the error ENOSPC)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import lmdb
import pytest

from .conftest import core_test, open_core
from .test_streaming import SMALL, content


class FailingEnv:
    """The index's LMDB environment, its write transactions failing with EIO."""

    def __init__(self, env: Any) -> None:
        self._env = env

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("write"):
            raise lmdb.Error("mdb_txn_commit: Input/output error")
        return self._env.begin(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


@core_test
async def test_an_io_error_of_a_roomy_hot_disk_is_not_taken_for_a_full_one(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(2_000_000))
        await core.fs.save_index()
        blocks = core.cached_blocks()
        assert blocks > 0
        index = core.fs.core.index
        real = index.env
        index.env = FailingEnv(real)
        try:
            core.fs.core.batch.put("meta", b"review", b"x")
            with pytest.raises(OSError) as failed:
                await core.fs.save_index()
        finally:
            index.env = real
        problems = []
        if failed.value.errno != errno.EIO:
            problems.append(f"reported as {failed.value!r}")
        if core.cached_blocks() != blocks:
            problems.append(f"the cache was evicted for room not lacking: {blocks} blocks, "
                            f"{core.cached_blocks()} left")
        assert not problems, "; ".join(problems)
