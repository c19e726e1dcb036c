"""Stubs on the shared warm tree are anyone's to write: what tierfs serves or stages from one
is the object of the stub it checked against its object's recorded owner (docs/stubs.md,
"Owners"), never another.

- A truncate of a cold file stages the object of the stub it read again and checked, which
  becomes the inode's, and only if that link is still the inode's (another link at the name
  is ESTALE); it used to stage the one the inode remembered from its lookup, so a link
  swapped in between (its owner's own) had another user's object copied into it.
- A stub whose version the bucket no longer has (the object deleted, or another version at
  its key) cannot be checked: its cached blocks, named by key and ETag, are dropped, so a link
  copied from a deleted file's old stub is not served that file's data from the cache (the
  check used to let it pass, and the cache served it)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from .conftest import ROOT, SetAttr, Stub, core_test, open_core

VICTIM = 65534
SECRET = b"the victim's private data " * 40
BIG_SECRET = b"the victim's private data " * 4000  # (about 100 KiB: two blocks of 64 KiB)


@core_test
async def test_a_truncate_stages_the_object_of_the_stub_it_checked(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        inner = core.store.inner
        # The victim's object: it records its owner (another user) and a private mode.
        theirs = inner.put("secret.bin", SECRET,
                           {"uid": str(VICTIM), "gid": str(VICTIM), "mode": "0600"})
        # The hostile's own object: records the hostile (this process's uid).
        mine = inner.put("mine.bin", b"x" * 10,
                         {"uid": str(os.getuid()), "gid": str(os.getgid()), "mode": "0644"})
        # 1. A link of the hostile's naming the victim's object: refused when opened.
        core.put_stub(b"f", Stub("secret.bin", len(SECRET), theirs.etag, 0o644, 1))
        inode = await core.lookup_path(b"f")
        with pytest.raises(PermissionError) as caught:
            await core.fs.open(inode.ino, os.O_RDONLY)
        assert caught.value.errno == errno.EACCES
        # 2. The link swapped, on the warm tier, for a stub naming the hostile's own object
        #    (the kernel still holds the inode from the lookup), then a truncate through it.
        core.put_stub(b"f", Stub("mine.bin", 10, mine.etag, 0o644, 1))
        with pytest.raises(OSError) as refused:  # (another link than the inode's now)
            await core.fs.setattr(inode.ino, SetAttr(size=len(SECRET) + 1))
        assert refused.value.errno == errno.ESTALE
        await core.fs.save_index()
        # (Was: the victim's object, whose check had refused it, staged and published.)
        assert core.warm_path(b"f").is_symlink() and core.staged() == []
        # Looked up again, the link is the hostile's own object's: cut as asked.
        inode = await core.lookup_path(b"f")
        await core.fs.setattr(inode.ino, SetAttr(size=len(SECRET) + 1))
        await core.fs.save_index()
        assert core.warm_path(b"f").read_bytes() == b"x" * 10 + bytes(len(SECRET) - 9)


@core_test
async def test_a_deleted_objects_cached_blocks_are_not_served_to_a_copied_stub(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        inner = core.store.inner
        info = inner.put("secret.bin", BIG_SECRET,
                         {"uid": str(VICTIM), "gid": str(VICTIM), "mode": "0600"})
        stub = Stub("secret.bin", len(BIG_SECRET), info.etag, 0o600, 1)
        # The victim's own file (link and object both the victim's), read through the mount.
        core.put_stub(b"v", stub)
        os.lchown(core.warm_path(b"v"), VICTIM, VICTIM)
        assert await core.read_file(b"v") == BIG_SECRET
        # The victim removes it through the mount: its object is deleted.
        await core.fs.unlink(ROOT, b"v")
        assert "secret.bin" not in core.objects()
        # A hostile user's link (this process's uid, not the victim's) naming the old object.
        core.put_stub(b"h", stub)
        with pytest.raises(OSError) as failed:  # (was: the secret, from the cache)
            await core.read_file(b"h")
        assert failed.value.errno == errno.EIO
        assert core.cached_blocks() == 0


@pytest.mark.parametrize("claimed", [3 * 1024 * 1024, 100], ids=["more", "less"])
@core_test
async def test_a_stub_whose_size_is_not_its_objects_is_not_promoted(
        tmp_path: Path, claimed: int) -> None:
    """A promotion takes the stub's size only if the object has it: it used to download that
    many bytes (zeros past the object's end, or the object cut short) and delete the object,
    the only whole copy, after."""
    real = b"real content " * 100
    async with open_core(tmp_path) as core:
        info = core.store.inner.put(
            "obj.bin", real, {"uid": str(os.getuid()), "gid": str(os.getgid()),
                              "mode": "0644"})
        stub = Stub("obj.bin", claimed, info.etag, 0o644, 1)
        core.put_stub(b"f", stub)
        outcome = await core.fs.demoter.promote(b"f")
        assert not outcome.done and "does not match its object" in outcome.why
        assert core.objects() == {"obj.bin": real}
        assert core.warm_path(b"f").is_symlink()


@core_test
async def test_an_object_shorter_than_its_stub_is_an_error_not_zeros(tmp_path: Path) -> None:
    """A cold file's bytes come from its object only as its stub says: a read past the
    object's end, or a write-open that copies it into staging, fails with EIO. The read
    used to give a short block (zeros once cached) and the copy a file padded with zeros."""
    real = b"real content " * 10_000  # (130,000 bytes: two blocks of 64 KiB and a bit)
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        info = core.store.inner.put(
            "obj.bin", real, {"uid": str(os.getuid()), "gid": str(os.getgid()),
                              "mode": "0644"})
        core.put_stub(b"f", Stub("obj.bin", len(real) + 100_000, info.etag, 0o644, 1))
        with pytest.raises(OSError) as failed:
            await core.read_file(b"f")
        assert failed.value.errno == errno.EIO
        fh = await core.open(b"f", os.O_RDWR)
        with pytest.raises(OSError) as failed:
            await core.fs.write(fh, 0, b"x")  # (the object copied into staging first)
        assert failed.value.errno == errno.EIO
        await core.fs.release(fh)
        assert core.objects() == {"obj.bin": real} and core.staged() == []
