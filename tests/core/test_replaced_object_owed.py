"""A cold file rewritten small goes back to the warm tier, and the object it replaced is
deleted. The publish knows the version it replaced (the stub it was staged from), so a
delete the bucket fails is owed and tried again; it was given no version, so it was only
logged, and the object stayed in the bucket for ever."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_the_object_a_rewrite_replaced_is_not_leaked_when_its_delete_fails(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000))
        assert core.stub(b"f") is not None and len(core.objects()) == 1
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"small now")
        core.store.fail_nth("delete", 1)  # a 503 burst past the retries
        await core.close(fh)
        assert core.stub(b"f") is None and await core.read_file(b"f") == b"small now"
        await core.fs.core.garbage.retry()  # (what the upkeep job runs every 5 minutes)
    async with open_core(tmp_path, store=core.store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.objects() == {}, "the replaced object stays in the bucket for ever"
