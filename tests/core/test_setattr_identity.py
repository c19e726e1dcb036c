"""An attribute change comes for an inode (``fchmod`` of a descriptor needs no lookup, and the
kernel checks the caller against the inode it holds), so it is made only on the file that
inode stands for: if another file holds its name on the warm tier by now (a shared, sticky or
group-writable directory: its owner removed the file there and another user's took the name),
the change fails with ESTALE and the other file is not touched. It used to be made on
whatever the path held: through a mount running as root, a user's chmod of their own removed
file opened another user's private file, and a ``touch`` of a removed stub renamed a new stub
over another user's file, its data gone; a truncate emptied it, and a truncate of a cold file
staged, cut and published the cold file that took the name (a first fix checked warm files
only)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from .conftest import SetAttr, Stub, core_test, open_core

HOSTILE = 1111
VICTIM = 2222
VICTIM_DATA = b"v" * 5000


@core_test
async def test_a_chmod_through_an_old_inode_does_not_reach_the_file_now_at_its_path(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        mine = core.warm_path(b"x")
        mine.write_bytes(b"the hostile's own file")
        os.chown(mine, HOSTILE, HOSTILE)
        inode = await core.lookup_path(b"x")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
        # On the warm tier: the hostile's file moves away (its inode number kept from the
        # new file), and the victim's private file takes the name.
        os.rename(mine, core.warm_path(b"moved"))
        mine.write_bytes(b"the victim's private data")
        os.chown(mine, VICTIM, VICTIM)
        os.chmod(mine, 0o600)
        try:
            with pytest.raises(OSError) as refused:
                await core.fs.setattr(inode.ino, SetAttr(mode=stat.S_IFREG | 0o644))
            assert refused.value.errno == errno.ESTALE
        finally:
            await core.fs.release(fh)
        st = os.lstat(mine)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (VICTIM, 0o600)


@core_test
async def test_a_truncate_through_an_old_inode_does_not_reach_the_file_now_at_its_path(
        tmp_path: Path) -> None:
    """A truncate of a file with no open state goes to the warm file by its path (``truncate
    -s 0`` within the kernel's entry timeout, its lookup cached): the same check."""
    async with open_core(tmp_path) as core:
        mine = core.warm_path(b"x")
        mine.write_bytes(b"the hostile's own file")
        inode = await core.lookup_path(b"x")
        os.rename(mine, core.warm_path(b"moved"))
        mine.write_bytes(b"the victim's data")
        with pytest.raises(OSError) as refused:
            await core.fs.setattr(inode.ino, SetAttr(size=0))
        assert refused.value.errno == errno.ESTALE
        assert mine.read_bytes() == b"the victim's data"


@core_test
async def test_a_stub_rewrite_does_not_replace_the_file_now_at_its_path(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        info = core.store.inner.put(
            "h.bin", b"hostile", {"uid": str(HOSTILE), "gid": str(HOSTILE), "mode": "0644"})
        core.put_stub(b"x", Stub("h.bin", 7, info.etag, 0o644, 1))
        os.lchown(core.warm_path(b"x"), HOSTILE, HOSTILE)
        inode = await core.lookup_path(b"x")
        victim = core.warm_path(b"x")
        os.rename(victim, core.warm_path(b"moved"))
        victim.write_bytes(b"the victim's data")
        os.chown(victim, VICTIM, VICTIM)
        # touch -m through the hostile's inode: a stub rewrite.
        with pytest.raises(OSError) as refused:
            await core.fs.setattr(inode.ino, SetAttr(mtime_ns=10**18))
        assert refused.value.errno == errno.ESTALE
        assert not victim.is_symlink() and victim.read_bytes() == b"the victim's data"


@core_test
async def test_attribute_changes_reach_the_file_through_its_own_descriptor(
        tmp_path: Path) -> None:
    """The usual case, for each kind of file: owner, mode and times all reach it. (An atime
    after the mtime: relatime would move an earlier one at tierfs's next readlink.)"""
    async with open_core(tmp_path) as core:
        core.warm_path(b"f").write_bytes(b"data")
        core.warm_path(b"d").mkdir()
        os.symlink("f", core.warm_path(b"l"))
        for name in (b"f", b"d", b"l"):
            inode = await core.lookup_path(name)
            link = name == b"l"
            await core.fs.setattr(inode.ino, SetAttr(
                uid=VICTIM, gid=VICTIM, mode=None if link else stat.S_IFREG | 0o640,
                atime_ns=3 * 10**18, mtime_ns=2 * 10**18))
            st = os.lstat(core.warm_path(name))
            assert (st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns) == (
                VICTIM, VICTIM, 3 * 10**18, 2 * 10**18), name
            if not link:
                assert stat.S_IMODE(st.st_mode) == 0o640, name


@core_test
async def test_a_cold_truncate_through_an_old_inode_does_not_cut_the_file_now_at_its_path(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        own = {"gid": str(HOSTILE), "mode": "0644"}
        info = core.store.inner.put("h.bin", b"hostile", {"uid": str(HOSTILE), **own})
        core.put_stub(b"x", Stub("h.bin", 7, info.etag, 0o644, 1))
        os.lchown(core.warm_path(b"x"), HOSTILE, HOSTILE)
        inode = await core.lookup_path(b"x")  # the hostile's, cached by the kernel
        # On the warm tier: the hostile's stub goes; the victim's cold file takes the name.
        os.rename(core.warm_path(b"x"), core.warm_path(b"moved"))
        vinfo = core.store.inner.put(
            "v.bin", VICTIM_DATA, {"uid": str(VICTIM), "gid": str(VICTIM), "mode": "0600"})
        core.put_stub(b"x", Stub("v.bin", len(VICTIM_DATA), vinfo.etag, 0o600, 1))
        os.lchown(core.warm_path(b"x"), VICTIM, VICTIM)
        # truncate -s 3 through the hostile's inode (no open state: by path)
        with pytest.raises(OSError) as refused:
            await core.fs.setattr(inode.ino, SetAttr(size=3))
        assert refused.value.errno == errno.ESTALE
        stub = core.stub(b"x")
        assert stub is not None and stub.key == "v.bin", "the victim's file was replaced"
        assert core.objects()["v.bin"] == VICTIM_DATA
