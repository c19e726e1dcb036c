"""A stub's size is anyone's to write on the shared warm tree: what tierfs does with a stub on
the event loop costs what the cache holds of it, never what the stub claims."""

from __future__ import annotations

import time
from pathlib import Path

from tierfs.stubs import MAX_SIZE

from .conftest import Stub, core_test, open_core


@core_test
async def test_evicting_a_stub_that_claims_the_most_costs_what_is_cached(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        info = core.store.inner.put("small.bin", b"x" * 1000)
        # 5 TiB at 64 KiB blocks: 80 million block numbers, none cached (walking them took
        # 13 s of the event loop).
        core.put_stub(b"h", Stub("small.bin", MAX_SIZE, info.etag, 0o644, 1))
        started = time.monotonic()
        freed = await core.evict(b"h")
        took = time.monotonic() - started
        assert freed == 0
        assert took < 2.0, f"evict of an uncached stub held the event loop {took:.2f} s"


@core_test
async def test_a_plan_naming_a_stub_that_claims_the_most_is_bounded(tmp_path: Path) -> None:
    """``prefetch`` of such a stub: the plan holds at most ``MAX_PLAN_CACHES`` times the blocks
    the cache can hold (it built 80 million steps, minutes and gigabytes, on the event loop)."""
    from tierfs.cache.plan import MAX_PLAN_CACHES, MIN_PLAN_BLOCKS
    from tierfs.control.commands import make_handlers

    async with open_core(tmp_path) as core:
        info = core.store.inner.put("small.bin", b"x" * 1000)
        core.put_stub(b"h", Stub("small.bin", MAX_SIZE, info.etag, 0o644, 1))
        handlers = make_handlers(core.fs, "/mnt")

        async def send(message: object) -> None:
            pass

        started = time.monotonic()
        status = await handlers["prefetch"]({"paths": ["h"], "fetches": 1}, send)
        took = time.monotonic() - started
        await handlers["prefetch"]({"stop": True}, send)
        cache = core.fs.cache
        bound = max(MIN_PLAN_BLOCKS, MAX_PLAN_CACHES * (cache.capacity // cache.block_size))
        assert status["blocks"] == bound
        assert status["blocks"] + status["left_out"] == -(-MAX_SIZE // cache.block_size)
        assert took < 2.0, f"a plan of one stub held the event loop {took:.2f} s"
