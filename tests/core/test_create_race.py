"""A create without O_EXCL whose name another node made after the kernel's lookup.

The kernel sends CREATE only for a name its LOOKUP just found absent; another node sharing the
warm tree can make that name in between. ``open(O_CREAT)`` without ``O_EXCL`` then opens the
file that is there (and truncates it with ``O_TRUNC``), as it does on a local disk or NFS,
rather than failing with ``EEXIST``, which only ``O_EXCL`` asks for.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .conftest import ROOT, core_test, open_core

CREATE = os.O_WRONLY | os.O_CREAT


async def _create(core, name: bytes, flags: int, uid: int | None = None) -> int:  # noqa: ANN001
    fh, _, _, _ = await core.fs.create(ROOT, name, 0o644, flags,
                                       os.getuid() if uid is None else uid, os.getgid())
    return fh


@pytest.mark.parametrize("durability", ["sync", "writeback"])
@core_test
async def test_o_trunc_opens_and_truncates_the_file_another_node_made(
        tmp_path: Path, durability: str) -> None:
    async with open_core(tmp_path, durability=durability) as core:
        core.warm_path(b"ckpt.pt").write_bytes(b"another node's save")
        fh = await _create(core, b"ckpt.pt", CREATE | os.O_TRUNC)
        await core.write_all(fh, b"ours")
        await core.close(fh)
        await core.publish_all()
        assert await core.read_file(b"ckpt.pt") == b"ours"
        assert core.warm_path(b"ckpt.pt").read_bytes() == b"ours"


@core_test
async def test_without_o_trunc_writes_into_the_file_another_node_made(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"log").write_bytes(b"0123456789")
        fh = await _create(core, b"log", CREATE)
        await core.write_all(fh, b"ab")
        await core.close(fh)
        assert await core.read_file(b"log") == b"ab23456789"


@core_test
async def test_o_excl_still_fails(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"lock").write_bytes(b"held")
        with pytest.raises(FileExistsError):
            await _create(core, b"lock", CREATE | os.O_EXCL)
        assert core.warm_path(b"lock").read_bytes() == b"held"


@core_test
async def test_a_directory_made_meanwhile_is_not_opened(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"d").mkdir()
        with pytest.raises(OSError) as caught:
            await _create(core, b"d", CREATE | os.O_TRUNC)
        assert caught.value.errno == errno.EISDIR


@core_test
async def test_a_file_the_caller_may_not_write_is_left_alone(tmp_path: Path) -> None:
    """The kernel checked only that the caller may create in the directory: whether it may
    write the file that is there is checked here, as the kernel would at an open."""
    async with open_core(tmp_path) as core:
        path = core.warm_path(b"theirs")
        path.write_bytes(b"keep me")
        os.chmod(path, 0o644)  # owned by this test's user (root), others may only read
        with pytest.raises(OSError) as caught:
            await _create(core, b"theirs", CREATE | os.O_TRUNC, uid=os.getuid() + 4242)
        assert caught.value.errno == errno.EEXIST
        assert path.read_bytes() == b"keep me"
