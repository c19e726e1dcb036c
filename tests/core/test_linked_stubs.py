"""Stubs hard-linked on the warm tree (``ln``, ``cp -al`` there, by another node): a rewrite
through one name gives that name the new content and never deletes or overwrites the object
the other names still need, whenever the link was made (before the open, after it, while the
rewrite streams to the stub's own key, before a crash), however far the rewrite got (parts
punched out of staging: given up, EIO), and a close that moves the upload off the shared key
does not fail."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import PART, ROOT, Core, Stub, core_test, open_core

DATA = bytes(range(256)) * (3 * PART // 256 + 17)
NEW = b"N" * (2 * PART + 5)


def link_elsewhere(c: Core) -> None:
    """``ln big.bin other.bin`` on the warm tree, as another node would (the stub itself)."""
    os.link(c.warm_path(b"big.bin"), c.warm_path(b"other.bin"), follow_symlinks=False)


async def rewriting_own_key(c: Core) -> tuple[Stub, int]:
    """``big.bin`` written large (cold, at its path's key), then opened with ``O_TRUNC`` and
    rewritten large: it streams to its own key. Its old stub, and the open handle."""
    await c.write_file(b"big.bin", DATA)
    old = c.cold(b"big.bin")
    fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
    await c.write_all(fh, NEW)
    f = await c.lookup_path(b"big.bin")
    assert f.data.upload is not None and f.data.upload.key == old.key
    return old, fh


def on_the_warm_tier(tmp_path: Path) -> None:
    """``big.bin`` written to the warm tier directly, before the mount."""
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "warm" / "big.bin").write_bytes(DATA)


async def demoted(c: Core) -> None:
    assert (await c.fs.demoter.demote(b"big.bin")).done
    assert c.stub(b"big.bin") is not None


@core_test
async def test_rewriting_one_name_of_a_hard_linked_stub_keeps_the_others_data(
        tmp_path: Path) -> None:
    """A stub hard-linked on the warm tree (``ln``, ``cp -al``): a rewrite through one name
    gives that name the new content and leaves the object the other names still name."""
    on_the_warm_tier(tmp_path)
    async with open_core(tmp_path) as c:
        await demoted(c)
        link_elsewhere(c)
        fh = await c.open(b"big.bin", os.O_RDWR)
        await c.fs.write(fh, 0, b"changed")
        try:
            await c.close(fh)
        except OSError:
            pass  # (refusing the rewrite would be fine; losing the other name's data is not)
        await c.publish_all()
        assert await c.read_file(b"other.bin") == DATA, "the other name's data is gone"


@core_test
async def test_small_rewrite_of_a_stub_linked_after_open_keeps_the_object(
        tmp_path: Path) -> None:
    """A cold file rewritten small (it goes back to the warm tier) while another node
    hard-links its stub on the warm tree after the open: the warm publish renames the new file over
    this name and leaves the object to the other name."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        await c.write_file(b"big.bin", DATA)
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, b"small")
        # Another node: ``ln big.bin other.bin`` on the warm tree.
        link_elsewhere(c)
        await c.close(fh)
        assert await c.publish_all() == []
        assert await c.read_file(b"big.bin") == b"small"
        assert old.key in c.objects(), "the object other.bin names was deleted"
        assert await c.read_file(b"other.bin") == DATA


@core_test
async def test_large_rewrite_of_a_demoted_stub_linked_after_open_keeps_the_object(
        tmp_path: Path) -> None:
    """A demoted cold file (its object at a key of its own) rewritten large through the mount
    streams to a new key; another node hard-links its stub on the warm tree after the open.
    The publish leaves the replaced object to the other name: the link count is read fresh
    before the publish (``ColdPublisher.settle_replaced``), not taken from the attributes
    cached at open."""
    on_the_warm_tier(tmp_path)
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        await demoted(c)
        old = c.cold(b"big.bin")
        fh = await c.open(b"big.bin", os.O_WRONLY | os.O_TRUNC)
        await c.write_all(fh, NEW)
        # Another node: ``ln big.bin other.bin`` on the warm tree.
        link_elsewhere(c)
        await c.close(fh)
        assert await c.publish_all() == []
        assert await c.read_file(b"big.bin") == NEW
        assert old.key in c.objects(), "the object other.bin names was deleted"
        assert await c.read_file(b"other.bin") == DATA


@core_test
async def test_rewrite_streamed_then_linked_elsewhere_and_renamed(tmp_path: Path) -> None:
    """A cold file rewritten (O_TRUNC) streams to its own key; meanwhile another node
    hard-links its stub on the warm tree, and the file is renamed through the mount. The
    upload must not complete over the object the other name needs: it goes to a key of its
    own."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        old, fh = await rewriting_own_key(c)
        # Another node: ``ln big.bin other.bin`` on the warm tree.
        link_elsewhere(c)
        await c.fs.rename(ROOT, b"big.bin", ROOT, b"moved.bin", 0)
        try:
            await c.close(fh)
        except OSError:
            pass
        assert await c.publish_all() == []
        assert c.objects().get(old.key) == DATA, "the object other.bin names was overwritten"
        assert await c.read_file(b"other.bin") == DATA
        assert await c.read_file(b"moved.bin") == NEW


@core_test
async def test_close_of_a_renamed_rewrite_linked_elsewhere_does_not_fail(
        tmp_path: Path) -> None:
    """A cold file rewritten under its own key (streaming), hard-linked by another node on the
    warm tree, then renamed through the mount: its close moves the upload off the shared key,
    finds the file now hard-linked (not to be streamed), and publishes it to the warm tier:
    the close does not fail."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        old, fh = await rewriting_own_key(c)
        link_elsewhere(c)
        await c.fs.rename(ROOT, b"big.bin", ROOT, b"moved.bin", 0)
        await c.close(fh)
        assert await c.read_file(b"moved.bin") == NEW
        assert await c.read_file(b"other.bin") == DATA


@core_test
async def test_punched_own_key_rewrite_never_overwrites_a_hard_linked_stubs_object(
        tmp_path: Path) -> None:
    """A cold file rewritten under its own key, some of whose uploaded parts left staging (the
    hot tier was short of room), is hard-linked on the warm tree by another node before its
    close: the completion must not overwrite the object the other name needs. The rewrite is
    given up instead (what is staged set aside, EIO): only unacknowledged data is lost."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        old, fh = await rewriting_own_key(c)
        upload = (await c.lookup_path(b"big.bin")).data.upload
        await c.until(lambda: not upload._running)
        assert await upload.give_back() > 0 and upload.punched  # hot tier short of room
        link_elsewhere(c)
        try:
            await c.close(fh)
        except OSError:
            pass  # (refusing is fine)
        await c.publish_all()
        assert c.objects().get(old.key) == DATA, "the object other.bin names was overwritten"
        assert await c.read_file(b"other.bin") == DATA


@core_test
async def test_recovery_of_an_own_key_rewrite_keeps_a_hard_linked_stubs_object(
        tmp_path: Path) -> None:
    """Recovery of a cold file rewritten under its own key (a fsynced stream, then a crash)
    after another node hard-linked its stub: the resumed upload never completes over the object
    the other name still names."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as c:
        old, fh = await rewriting_own_key(c)
        await c.fs.fsync(fh)
        (entry,) = c.stored_journal().values()
        assert entry.synced == len(NEW) and entry.upload.parts
        # Another node: ``ln big.bin other.bin`` on the warm tree; then this node crashes.
        link_elsewhere(c)
        c.crash()
        store = c.store
    async with open_core(tmp_path, store, large_file_threshold="64KiB") as again:
        await again.recover()
        assert again.objects().get(old.key) == DATA, \
            "recovery completed the rewrite over the object other.bin names"
        assert await again.read_file(b"other.bin") == DATA
