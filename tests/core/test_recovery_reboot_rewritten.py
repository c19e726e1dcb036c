"""An entry staged before a restart that recovery holds (its publish failed, handed to
write-back) is named by the restart mark (``REBOOT_PENDING``). A publish by copy keeps its
staging id for the open file, so data written and acknowledged in the new boot went into an
entry the mark still named: after a crash of tierfs alone (same boot, page cache intact) the
next recovery took it for unflushed data of the old boot and set it aside. The first change to
its staged data in the new boot now takes it off the mark."""

from __future__ import annotations

from pathlib import Path

import pytest

import tierfs.index as index_module
from tierfs.index import REBOOT_PENDING, Index

from .conftest import core_test, open_core
from .test_recovery_linked_entries import failing_publishes


def _mount_says_rebooted(root: Path, boot: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(index_module, "boot_id", lambda: boot)
    index = Index(root / "hot" / "index")
    try:
        return index.begin_run().rebooted
    finally:
        index.close()


@core_test
async def test_new_boot_data_in_a_held_entry_is_trusted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in ("hot", "warm", "cold"):
        (tmp_path / d).mkdir()
    opts = dict(durability="writeback", by_rename=False)
    assert not _mount_says_rebooted(tmp_path, b"boot-1", monkeypatch)
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        await core.write_file(b"a", b"old a")
        assert await core.publish_all() == []
        with monkeypatch.context() as m:
            failing_publishes(m, None)  # the write-back publish fails: kept, flushed
            core.fs.writeback.quiet = 0.0
            await core.write_file(b"a", b"X flushed in boot 1")
            await core.until(lambda: any(e.synced for e in core.journal().values()))
        core.crash()  # then the system restarts

    assert _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    with monkeypatch.context() as m:
        failing_publishes(m, 1)  # recovery's publish of X fails: held, given to write-back
        async with open_core(tmp_path, **opts) as again:
            again.fs.writeback.quiet = again.fs.writeback.max_wait = 60.0
            again.fs.writeback.busy()
            report = await again.recover(rebooted=True)
            assert report.failed == 1, report
            mark = again.fs.index.get("meta", REBOOT_PENDING)
            # New writes in boot 2, acknowledged by a write-back close (the open publishes X
            # first, by copy: the staging id goes on).
            await again.write_file(b"a", b"Y written and acknowledged in boot 2")
            sids = set(again.journal())
            again.crash()  # tierfs alone: the page cache keeps Y
    print("mark after recovery:", mark, "entries:", sids)

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    async with open_core(tmp_path, **opts) as third:
        report = await third.recover(rebooted=rebooted)
        got = third.warm_path(b"a").read_bytes()
        assert got == b"Y written and acknowledged in boot 2", (
            rebooted, report, got, third.lost_found())
