"""A file brought back by ``tierfs promote`` while the warm tier is over its quota: the
promotion is a use of the file, so it must not be the quota's least recently used at once
and go straight back to the bucket. (It was given the stub's mtime as its access time too,
older than every file the user had not asked for.)"""

from __future__ import annotations

import time
from pathlib import Path

from .conftest import core_test, open_core
from .test_demote import DATA, put_warm, space


@core_test
async def test_a_promoted_file_is_not_the_next_one_the_quota_demotes(tmp_path: Path) -> None:
    put_warm(tmp_path, "asked.bin", DATA, age=50_000)  # (old: written long ago)
    put_warm(tmp_path, "other.bin", DATA, age=10)
    async with open_core(tmp_path, large_file_threshold="1GiB", demote_min_size="1MiB",
                         demote_interval=86400,
                         warm_quota=space(tmp_path, "other.bin") + 5000) as c:
        assert (await c.fs.demoter.demote(b"asked.bin")).done
        before = time.time_ns()
        assert (await c.fs.demoter.promote(b"asked.bin")).done
        st = c.warm_path(b"asked.bin").stat()
        assert st.st_atime_ns >= before - 10**9  # (used now)
        assert st.st_mtime_ns < before - 40_000 * 10**9  # (its mtime kept)
        await c.fs.demoter.enforce_quota()
        assert c.stub(b"asked.bin") is None, "the file just promoted went back to the bucket"
        assert c.stub(b"other.bin") is not None
