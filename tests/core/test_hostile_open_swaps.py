"""A warm file replaced on the shared tree between the kernel's lookup and its open: by a FIFO
the open is ESTALE (tests/core/test_hostile_paths.py), so the kernel looks the name up again;
by a symbolic link (a stub another node's demotion put there, or anyone's link) it should be
the same, as ``Core.open_warm`` already treats it, not ELOOP, which the kernel hands to the
program as "Too many levels of symbolic links" for a plain file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .conftest import Stub, core_test, open_core


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_WRONLY], ids=["read", "write"])
@core_test
async def test_a_file_swapped_for_a_stub_before_its_open_is_stale(tmp_path: Path,
                                                                  flags: int) -> None:
    async with open_core(tmp_path, attr_timeout=0.0) as core:
        await core.write_file(b"f", b"data")
        inode = await core.lookup_path(b"f")
        info = core.store.inner.put("f~000000000000", b"data",
                                    {"uid": str(os.getuid()), "gid": str(os.getgid()),
                                     "mode": "0644"})
        core.put_stub(b"f", Stub("f~000000000000", 4, info.etag, 0o644, 1))  # (demoted)
        with pytest.raises(OSError) as failed:
            await core.fs.open(inode.ino, flags)
        assert failed.value.errno == errno.ESTALE, os.strerror(failed.value.errno)


@core_test
async def test_a_file_swapped_for_a_link_to_shadow_before_its_open_is_stale(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, attr_timeout=0.0) as core:
        await core.write_file(b"f", b"data")
        inode = await core.lookup_path(b"f")
        os.unlink(core.warm_path(b"f"))
        os.symlink("/etc/shadow", core.warm_path(b"f"))
        with pytest.raises(OSError) as failed:
            await core.fs.open(inode.ino, os.O_RDONLY)
        assert failed.value.errno == errno.ESTALE, os.strerror(failed.value.errno)
