"""Failures at the end of a publish by copy must neither leave the temp file, a whole copy of
the file, on the shared tier nor publish again what was published. ``finish_temp`` removes a
temp file whose close fails, also where a rename of its directory moved it while the file was
copied (``publish_copy`` runs without the namespace lock, and another node may rename too):
it removed it by its path only, which then finds nothing. And a file removed just after its
rename into place (by another node) was copied back when the ``lstat``s after the rename
failed: the publish took them for a failed rename."""

from __future__ import annotations

import errno
import os
import types
from pathlib import Path
from typing import Any

import pytest

from tierfs.tiers import warmcopy

from .conftest import core_test, open_core

DATA = os.urandom(300_000)


def _fail_close_of(monkeypatch: pytest.MonkeyPatch, failing: set[int]) -> None:
    """``os.close`` in warmcopy closes the descriptor and then says EIO for those in
    ``failing`` (as close(2) on NFS reports a write error: the descriptor is gone all the
    same)."""
    real_close = os.close

    def close(fd: int) -> None:
        real_close(fd)
        if fd in failing:
            failing.discard(fd)
            raise OSError(errno.EIO, "close said EIO")

    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake.close = close
    monkeypatch.setattr(warmcopy, "os", fake)


async def _publish_with_dir_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    fail_at: str) -> list[str]:
    async with open_core(tmp_path, by_rename=False, durability="sync") as core:
        await core.mkdirs(b"d")
        fh = await core.create(b"d/a")
        await core.write_all(fh, DATA)
        warm_cls = type(core.fs.warm)
        real_settle = warm_cls._settle
        failing: set[int] = set()
        _fail_close_of(monkeypatch, failing)

        def settle(self: Any, fd: int, *args: Any, **kwargs: Any) -> None:
            real_settle(self, fd, *args, **kwargs)
            if not failing and not os.path.exists(core.warm_path(b"d2")):
                os.rename(core.warm_path(b"d"), core.warm_path(b"d2"))  # another node: mv d d2
                if fail_at == "fsync":
                    raise OSError(errno.EIO, "fsync said EIO")
                failing.add(fd)

        monkeypatch.setattr(warm_cls, "_settle", settle)
        with pytest.raises(OSError) as caught:
            await core.close(fh)
        assert caught.value.errno == errno.EIO
        monkeypatch.undo()
        left = core.warm_temps()
        core.crash()  # (what is still dirty is not the point)
    return left


@core_test
async def test_control_a_failed_fsync_removes_the_moved_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _publish_with_dir_renamed(tmp_path, monkeypatch, "fsync") == []


@core_test
async def test_a_failed_close_removes_the_moved_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    left = await _publish_with_dir_renamed(tmp_path, monkeypatch, "close")
    assert left == [], f"a whole copy of the file left on the shared tier: {left}"


# -- Mirror.replace: an error after the rename is taken for "the temp file is gone" ----------

AHEAD: dict[str, Any] = {"by_rename": False, "publish_ahead": "64KiB", "durability": "sync"}


@pytest.mark.parametrize("answer", [errno.ENOENT, errno.ESTALE])
@core_test
async def test_a_file_removed_right_after_its_rename_is_not_copied_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: int) -> None:
    """``WarmTier.replace`` renames the head start over the name, then lstats the name and its
    directory by path. Another node's ``rm`` of the name just after the rename makes that
    lstat fail (ENOENT; ESTALE on NFS where the kernel's one retry also found it stale), and
    ``Mirror.replace`` turns it into FileNotFoundError (533de91 adds ESTALE to that), which
    ``WarmPublisher.publish`` takes for "the temp file went with its directory": it copies the
    whole file again and renames it into place, bringing back the file the other node
    removed after this publish had put it there. (ENOENT: before 533de91 too.)"""
    import trio
    async with open_core(tmp_path, **AHEAD) as core:
        data = os.urandom(400_000)
        fh = await core.create(b"f")
        for offset in range(0, 300_000, 50_000):
            await core.fs.write(fh, offset, data[offset:offset + 50_000])
            await trio.sleep(0.01)  # let the copy ahead run
        assert core.warm_temps() != []
        await core.write_all(fh, data[300_000:], offset=300_000)
        warm_cls = type(core.fs.warm)
        real_replace, real_lstat = warm_cls.replace, warm_cls.lstat
        armed: list[bool] = []
        copies: list[bytes] = []

        def replace(self: Any, tmp: bytes, rel: bytes, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("tmp_dir") is not None:
                armed.append(True)
            else:
                copies.append(rel)
            return real_replace(self, tmp, rel, *args, **kwargs)

        def lstat(self: Any, rel: bytes) -> Any:
            if armed and rel == b"f":
                armed.clear()
                assert core.warm_path(b"f").read_bytes() == data  # published: renamed in
                os.unlink(core.warm_path(b"f"))  # another node's rm, right after
                if answer == errno.ESTALE:
                    raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
            return real_lstat(self, rel)

        monkeypatch.setattr(warm_cls, "replace", replace)
        monkeypatch.setattr(warm_cls, "lstat", lstat)
        await core.close(fh)
        monkeypatch.undo()
        assert copies == [], "the published file was copied again"
        assert not core.warm_path(b"f").exists(), "the file another node removed came back"
