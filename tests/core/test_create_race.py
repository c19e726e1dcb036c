"""A create without O_EXCL whose name another node made after the kernel's lookup.

The kernel sends CREATE only for a name its LOOKUP just found absent; another node sharing the
warm tree can make that name in between. ``open(O_CREAT)`` without ``O_EXCL`` must then open
the file that is there (truncating it with ``O_TRUNC``), as on a local disk or NFS, rather
than fail with ``EEXIST``, which only ``O_EXCL`` asks for. The create answers ``ESTALE``: the
kernel's path walk (``do_filp_open``) then looks the name up again, with revalidation, and
opens the file it finds as any open, with its own permission checks. The race itself cannot
be timed through a mount, so the kernel's half is shown by opening the name as it would next.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .conftest import ROOT, core_test, open_core

CREATE = os.O_WRONLY | os.O_CREAT


async def _create(core, name: bytes, flags: int) -> int:  # noqa: ANN001
    fh, _, _, _ = await core.fs.create(ROOT, name, 0o644, flags, os.getuid(), os.getgid())
    return fh


@pytest.mark.parametrize("durability", ["sync", "writeback"])
@core_test
async def test_o_trunc_leaves_the_open_to_the_kernel_then_truncates_on_it(
        tmp_path: Path, durability: str) -> None:
    async with open_core(tmp_path, durability=durability) as core:
        core.warm_path(b"ckpt.pt").write_bytes(b"another node's save")
        with pytest.raises(OSError) as caught:
            await _create(core, b"ckpt.pt", CREATE | os.O_TRUNC)
        assert caught.value.errno == errno.ESTALE
        assert core.warm_path(b"ckpt.pt").read_bytes() == b"another node's save"
        # What the kernel does next: the lookup, then an open of the file found.
        inode, _ = await core.fs.lookup(ROOT, b"ckpt.pt")
        fh, _, _ = await core.fs.open(inode.ino, os.O_WRONLY | os.O_TRUNC)
        await core.write_all(fh, b"ours")
        await core.close(fh)
        await core.publish_all()
        assert await core.read_file(b"ckpt.pt") == b"ours"
        assert core.warm_path(b"ckpt.pt").read_bytes() == b"ours"


@pytest.mark.parametrize("what", ["file", "directory", "symlink"])
@core_test
async def test_whatever_took_the_name_is_left_to_the_kernel(tmp_path: Path,
                                                             what: str) -> None:
    async with open_core(tmp_path) as core:
        path = core.warm_path(b"x")
        if what == "file":
            path.write_bytes(b"0123456789")
        elif what == "directory":
            path.mkdir()
        else:
            path.symlink_to("elsewhere")
        with pytest.raises(OSError) as caught:
            await _create(core, b"x", CREATE)
        assert caught.value.errno == errno.ESTALE
        assert path.is_symlink() if what == "symlink" else path.exists()
        if what == "file":
            assert path.read_bytes() == b"0123456789"


@core_test
async def test_o_excl_still_fails_with_eexist(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.warm_path(b"lock").write_bytes(b"held")
        with pytest.raises(FileExistsError):
            await _create(core, b"lock", CREATE | os.O_EXCL)
        assert core.warm_path(b"lock").read_bytes() == b"held"


@core_test
async def test_a_name_still_free_is_created(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        fh = await _create(core, b"new", CREATE | os.O_TRUNC)
        await core.write_all(fh, b"made here")
        await core.close(fh)
        assert core.warm_path(b"new").read_bytes() == b"made here"
