"""A recovery after a restart of the system that ends with an entry it could neither publish
nor set aside (kept "for another try") must leave that entry untrusted at the next mount of the
same boot: it cleared the mark, and the next mount published the closed data, never flushed to
disk, over the file's good content. Data acknowledged in the new boot stays trusted meanwhile:
the mark names the entries staged before the restart (``REBOOT_PENDING``)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import tierfs.index as index_module
from tierfs.index import Index
from tierfs.write.recovery import Recovery

from .conftest import core_test, open_core
from .test_streaming import SMALL, content


def _mount_says_rebooted(root: Path, boot: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(index_module, "boot_id", lambda: boot)
    index = Index(root / "hot" / "index")
    try:
        return index.begin_run().rebooted
    finally:
        index.close()


def _tiers(tmp_path: Path) -> None:
    for d in ("hot", "warm", "cold"):
        (tmp_path / d).mkdir()


@core_test
async def test_set_aside_failing_clears_the_mark_and_next_mount_publishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiers(tmp_path)
    assert not _mount_says_rebooted(tmp_path, b"boot-1", monkeypatch)
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"a", b"old a")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"a", b"new, never flushed to disk a")
        core.crash()  # then the system restarts

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    assert rebooted

    async def fails(self: Recovery, *args: object) -> None:
        raise OSError(errno.EIO, "lost+found: I/O error")

    with monkeypatch.context() as m:
        m.setattr(Recovery, "_set_aside", fails)
        async with open_core(tmp_path, durability="writeback") as again:
            report = await again.recover(rebooted=rebooted)
            assert report.failed == 1, report
    # that mount served, and was unmounted (or crashed): same boot

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    async with open_core(tmp_path, durability="writeback") as third:
        report = await third.recover(rebooted=rebooted)
        got = third.warm_path(b"a").read_bytes()
        assert got == b"old a", (rebooted, report, got)


@core_test
async def test_abort_failing_clears_the_mark_and_next_mount_publishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiers(tmp_path)
    opts = dict(durability="writeback", large_file_threshold=SMALL)
    assert not _mount_says_rebooted(tmp_path, b"boot-1", monkeypatch)
    new = content(300_000, seed=3)
    async with open_core(tmp_path, **opts) as core:
        await core.recover()
        await core.write_file(b"f", b"old")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        core.store.fail_always("complete_multipart")
        await core.write_file(b"f", new)
        core.crash()  # then the system restarts
        store = core.store
    store.heal()

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    assert rebooted
    store.fail_always("abort_multipart")  # the bucket not answering yet, after the restart
    async with open_core(tmp_path, store, **opts) as again:
        report = await again.recover(rebooted=rebooted)
        assert report.failed == 1, report
    store.heal()

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    async with open_core(tmp_path, store, **opts) as third:
        report = await third.recover(rebooted=rebooted)
        got = await third.read_file(b"f")
        assert got == b"old", (rebooted, report, len(got))


@core_test
async def test_data_of_the_new_boot_is_trusted_beside_a_kept_old_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiers(tmp_path)
    assert not _mount_says_rebooted(tmp_path, b"boot-1", monkeypatch)
    async with open_core(tmp_path, durability="writeback") as core:
        await core.recover()
        await core.write_file(b"a", b"old a")
        assert await core.publish_all() == []
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"a", b"new, never flushed to disk a")
        core.crash()  # then the system restarts

    async def fails(self: Recovery, *args: object) -> None:
        raise OSError(errno.EIO, "lost+found: I/O error")

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(Recovery, "_set_aside", fails)
        async with open_core(tmp_path, durability="writeback") as again:
            assert (await again.recover(rebooted=rebooted)).failed == 1
            again.fs.writeback.quiet = again.fs.writeback.max_wait = 60.0
            await again.write_file(b"b", b"written in the new boot")
            again.crash()  # tierfs, not the system: the page cache keeps b

    rebooted = _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)
    assert rebooted  # (a is still untrusted)
    async with open_core(tmp_path, durability="writeback") as third:
        report = await third.recover(rebooted=rebooted)
        assert third.warm_path(b"a").read_bytes() == b"old a", report
        assert third.warm_path(b"b").read_bytes() == b"written in the new boot", report
    assert not _mount_says_rebooted(tmp_path, b"boot-2", monkeypatch)  # dealt with: no mark
