"""The warm quota considers the least recently used files a page of ``warmscan.KEEP``
(1,000) at a time. Files every demotion refuses (a ``warm`` rule's, files with extended
attributes: a stub cannot keep them) must not hold the quota back: when the oldest KEEP files
are such files, the pass pages on to the files behind them, or the warm tier would stay over
its quota for good. (Another user's files are not offered at all:
tests/core/test_quota_usage.py.)

(KEEP is made 3 here, as in test_quota_usage, so the test makes a few files, not 1,000.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tierfs.write import warmscan

from .conftest import core_test, open_core
from .test_demote import DATA, put_warm

QUOTA = {"warm_quota": "8MiB", "demote_min_size": "1MiB", "demote_interval": 86400}


@core_test
async def test_files_a_warm_rule_keeps_take_no_place_in_the_quotas_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warmscan, "KEEP", 3)
    put_warm(tmp_path, "mine.bin", DATA, age=10)
    for i in range(3):
        put_warm(tmp_path, f"keep/k{i}.bin", b"k" * (2 * 1024 * 1024), age=100_000 + i)
    async with open_core(tmp_path, rules=["keep/*=warm"], **QUOTA) as c:
        for _ in range(3):  # (a few passes, as the quota would make)
            await c.fs.demoter.enforce_quota()
        assert c.stub(b"mine.bin") is not None, (
            "the quota never reached mine.bin: the three oldest files, which a warm rule "
            "keeps, took every place of its walk and were refused at every pass")
        assert all(c.stub(f"keep/k{i}.bin".encode()) is None for i in range(3))


@core_test
async def test_files_with_extended_attributes_take_no_place_in_the_quotas_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warmscan, "KEEP", 3)
    put_warm(tmp_path, "mine.bin", DATA, age=10)
    for i in range(3):
        p = put_warm(tmp_path, f"t{i}.bin", b"t" * (2 * 1024 * 1024), age=100_000 + i)
        try:
            os.setxattr(p, "user.tag", b"x")
        except OSError as e:
            pytest.skip(f"no user xattrs here: {e}")
        t = p.stat().st_mtime_ns
        os.utime(p, ns=(t, t))
    async with open_core(tmp_path, **QUOTA) as c:
        for _ in range(3):
            await c.fs.demoter.enforce_quota()
        assert c.stub(b"mine.bin") is not None, (
            "the quota never reached mine.bin: the three oldest files, with extended "
            "attributes, took every place of its walk and were refused at every pass")
