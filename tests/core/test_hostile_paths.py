"""The shared warm tree is hostile: anyone may replace what the mount looked up. A directory
swapped for a symlink to elsewhere must not take tierfs's own calls out of the warm tree (the
kernel follows a symlink in every component of a path but the last), a file swapped for a
symlink must not have a chmod applied to the link's target, and a file swapped for a FIFO must
not hang the open (and the namespace lock it holds)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import trio

from .conftest import ROOT, SetAttr, core_test, open_core



@core_test
async def test_create_under_a_directory_swapped_for_a_symlink_stays_in_the_warm_tree(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"d")
        # Another user, on the warm tier directly: the directory becomes a link out.
        os.rmdir(core.warm / "d")
        os.symlink(outside, core.warm / "d")
        try:
            fh, _, _, _ = await core.fs.create(d, b"planted", 0o644, os.O_WRONLY,
                                               os.getuid(), os.getgid())
            await core.write_all(fh, b"owned")
            await core.close(fh)
        except OSError:
            pass  # refused: fine
        assert not (outside / "planted").exists(), (
            "tierfs created a file outside the warm root, through a symlink in the parent")


@core_test
async def test_lookup_and_read_under_a_directory_swapped_for_a_symlink_stay_in_the_warm_tree(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"private data")
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"d")
        os.rmdir(core.warm / "d")
        os.symlink(outside, core.warm / "d")
        try:
            inode, _ = await core.fs.lookup(d, b"secret")
            fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
            data = await core.read_all(fh)
            await core.close(fh)
        except OSError:
            return  # refused: fine
        assert data != b"private data", "tierfs served a file from outside the warm root"


@core_test
async def test_unlink_under_a_directory_swapped_for_a_symlink_stays_in_the_warm_tree(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"d")
        await core.write_file(b"d/victim", b"mine")
        os.unlink(core.warm / "d" / "victim")
        os.rmdir(core.warm / "d")
        os.symlink(outside, core.warm / "d")
        try:
            await core.fs.unlink(d, b"victim")
        except OSError:
            pass
        assert (outside / "victim").exists(), "tierfs removed a file outside the warm root"



@core_test
async def test_chmod_of_a_file_swapped_for_a_symlink_does_not_reach_its_target(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "id_rsa"
    secret.write_bytes(b"private")
    os.chmod(secret, 0o600)
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", b"data")
        inode = await core.lookup_path(b"f")
        os.unlink(core.warm / "f")
        os.symlink(secret, core.warm / "f")
        try:
            await core.fs.setattr(inode.ino, SetAttr(mode=0o100666))
        except OSError:
            pass  # refused: fine
        mode = stat.S_IMODE(os.stat(secret).st_mode)
        assert mode == 0o600, (f"a chmod through the mount changed a file outside the warm "
                               f"tree through a symlink: now {mode:o}")



def _release(fifo: Path) -> None:
    """Open the FIFO for writing once, which lets a blocked reader's open return."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:  # ENXIO: no reader (the open did not block)
        assert e.errno in (errno.ENXIO, errno.ENOENT)
        return
    os.close(fd)


@core_test
async def test_opening_a_file_replaced_by_a_fifo_does_not_hang(tmp_path: Path) -> None:
    async with open_core(tmp_path, attr_timeout=0.0) as core:
        await core.write_file(b"f", b"data")
        inode = await core.lookup_path(b"f")
        fifo = core.warm / "f"
        os.unlink(fifo)
        os.mkfifo(fifo)
        result: list[object] = []
        done = trio.Event()

        async def opener() -> None:
            try:
                result.append(await core.fs.open(inode.ino, os.O_RDONLY))
            except OSError as e:
                result.append(e)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener)
            with trio.move_on_after(3):
                await done.wait()
            hung = not done.is_set()
            # A rename through the mount meanwhile (it takes the namespace lock exclusively).
            renamed = False
            with trio.move_on_after(2):
                await core.write_file(b"g", b"x")
                await core.fs.rename(ROOT, b"g", ROOT, b"h", 0)
                renamed = True
            await trio.to_thread.run_sync(_release, fifo)
        assert renamed or not hung, "both: the open hung AND a rename hung behind it (namespace lock held)"
        assert not hung, ("open of a file replaced by a FIFO on the warm tier blocked "
                          "(a warm worker thread stuck in open(2) of the FIFO)")
        assert renamed, "a rename hung behind the blocked open (namespace lock held)"


def test_directories_are_reached_beneath_the_root_without_a_symlink(tmp_path: Path,
                                                                    monkeypatch: object) -> None:
    """Both ways of ``tiers.beneath`` (openat2, and the walk where it is missing) reach plain
    directories and refuse a symlink anywhere on the way, and a way out of the root."""
    import pytest

    from tierfs.tiers import beneath
    (tmp_path / "root" / "a" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "a" / "link")
    root = os.open(tmp_path / "root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for openat2 in (True, False):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(beneath, "_have_openat2", openat2 and beneath._have_openat2)
                fd = beneath.open_dir_beneath(root, b"a/b")
                assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "root" / "a" / "b"))
                os.close(fd)
                for bad in (b"a/link", b"a/link/x", b"a/../.."):
                    with pytest.raises(OSError) as e:
                        os.close(beneath.open_dir_beneath(root, bad))
                    assert e.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)
    finally:
        os.close(root)
