"""The head-start copy (sync mode, publishing by copy, ``publish_ahead``) of a file that moves
out of its directory while it is written, after which that directory is itself renamed: the
temp file went with the directory, where its old path no longer reaches it. It was left there,
a whole copy of the file on the shared tier until an rmdir of the directory, a rename over it
or the next mount, and the close copied the whole file again. The mirror holds its directory
by a descriptor, so it finds its temp file wherever the directory went."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from .conftest import ROOT, core_test, open_core

AHEAD: dict[str, Any] = {"by_rename": False, "publish_ahead": "64KiB", "durability": "sync"}
DATA = os.urandom(800_000)


def held_under(root: Path) -> list[str]:
    """What this process holds a descriptor of beneath ``root`` (the warm root's own
    descriptor is the root itself, not beneath it)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root) + "/"):
            held.append(target)
    return held


async def write_moved_away(core: Any) -> int:
    """``d/a`` written past the copy-ahead step, moved to ``e/a``, then ``d`` renamed
    ``d2``, and the rest written: its handle."""
    d = await core.mkdirs(b"d")
    e = await core.mkdirs(b"e")
    fh = await core.create(b"d/a")
    for offset in range(0, 400_000, 50_000):
        await core.fs.write(fh, offset, DATA[offset:offset + 50_000])
        await trio.sleep(0.01)  # let the copy ahead run
    assert core.warm_temps() != []  # the head start is there (else nothing is tested)
    await core.fs.rename(d, b"a", e, b"a", 0)  # mv d/a e/a
    await core.fs.rename(ROOT, b"d", ROOT, b"d2", 0)  # mv d d2
    await core.write_all(fh, DATA[400_000:], offset=400_000)
    return fh


@core_test
async def test_a_head_start_left_in_a_renamed_directory_is_published_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await write_moved_away(core)
        warm = core.fs.core.warm
        copies: list[bytes] = []
        real = warm.publish_copy

        def publish_copy(rel: bytes, *args: Any, **kwargs: Any) -> Any:
            copies.append(rel)
            return real(rel, *args, **kwargs)

        monkeypatch.setattr(warm, "publish_copy", publish_copy)
        await core.close(fh)
        assert core.warm_temps() == [], "the head-start copy was left in the renamed directory"
        assert core.warm_path(b"e/a").read_bytes() == DATA
        assert core.warm_names(b"d2") == []
        assert copies == [], "the close copied the whole file again"
        assert held_under(core.warm) == []  # no descriptor of the directory kept


@core_test
async def test_a_head_start_left_in_a_renamed_directory_goes_with_an_unlink(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await write_moved_away(core)
        e = await core.lookup_path(b"e")
        await core.fs.unlink(e.ino, b"a")
        await core.close(fh)
        assert core.warm_temps() == []
        assert core.warm_names(b"d2") == [] and core.warm_names(b"e") == []
        assert held_under(core.warm) == []


@core_test
async def test_a_head_start_left_in_a_renamed_directory_goes_when_its_rename_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, **AHEAD) as core:
        fh = await write_moved_away(core)
        warm_cls = type(core.fs.warm)
        real = warm_cls.replace

        def replace(self: Any, tmp: bytes, rel: bytes, *args: Any, **kwargs: Any) -> Any:
            if rel == b"e/a":
                raise OSError(errno.EIO, "the warm tier did not answer")
            return real(self, tmp, rel, *args, **kwargs)

        monkeypatch.setattr(warm_cls, "replace", replace)
        with pytest.raises(OSError):
            await core.close(fh)  # its publish fails, and the release's try too
        assert core.warm_temps() == [], "a whole copy left in the renamed directory"
        assert held_under(core.warm) == []
        monkeypatch.setattr(warm_cls, "replace", real)
