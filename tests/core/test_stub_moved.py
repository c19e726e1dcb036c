"""Another node moves a file's stub while this node's cold publish puts it in place. The
stub, wherever it went, names the object this publish completed: that object is never
deleted for want of a name here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tierfs.tiers.warm as warm_module
from tierfs.write.cold import ColdPublisher

from .conftest import PART, core_test, open_core

DATA = os.urandom(300_000)


@core_test
async def test_a_stub_moved_on_at_once_is_published_and_keeps_its_object(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mv big elsewhere`` on another node between the publish's rename of the stub over
    ``big`` and its look at the name: the flush failed with ENOENT, and its retry found no
    name and deleted the object the moved stub names."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        real, moved = warm_module.placed, []

        def racing(dfd: int, name: bytes, made: os.stat_result) -> os.stat_result:
            if not moved:  # another node: mv big elsewhere, just after the rename
                moved.append(name)
                os.rename(core.warm_path(b"big"), core.warm_path(b"elsewhere"))
            return real(dfd, name, made)

        monkeypatch.setattr(warm_module, "placed", racing)
        fh = await core.create(b"big")
        await core.write_all(fh, DATA)
        await core.fs.flush(fh)
        await core.fs.release(fh)
        assert moved
        stub = core.stub(b"elsewhere")
        assert stub is not None and core.objects() == {stub.key: DATA}
        assert core.uploads() == [] and core.staged() == []


@core_test
async def test_a_rewrite_completed_over_its_own_key_keeps_it_when_the_name_moved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cold file rewritten: the upload goes to the key its stub names, once the stub was
    seen at the name, alone. ``mv f f.bak`` on another node after that look: the completion
    replaces the old content (a known limit: semantics.md), and the publish, finding no name
    at ``f``, deleted the new object too, which ``f.bak`` names: both contents gone."""
    old = bytes(range(256)) * ((PART + 1000) // 256 + 1)
    new = bytes(reversed(old))
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        await core.write_file(b"f", old)
        real = ColdPublisher.settle_replaced

        async def racing(self: ColdPublisher, inode: object, data: object) -> None:
            await real(self, inode, data)  # type: ignore[arg-type]
            os.rename(core.warm_path(b"f"), core.warm_path(b"f.bak"))  # another node

        monkeypatch.setattr(ColdPublisher, "settle_replaced", racing)
        fh = await core.open(b"f", os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, new)
        await core.close(fh)
        monkeypatch.undo()
        assert core.objects().get(core.cold(b"f.bak").key) == new
