"""A stub serves its object only to the owner and mode the object records: a link made by
someone else (the creator owns a symlink) or a mode wider than recorded is refused at open,
a verified stub is remembered so that later opens ask the bucket nothing, and a chmod that
widens a cold file's mode widens the recorded one first."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from tierfs.core.ownership import Owners, recorded
from tierfs.objects.base import MetadataFixed
from tierfs.stubs import Stub

from .conftest import ROOT, Core, SetAttr, core_test, open_core

SMALL = "64KiB"
OTHER = 65534


def content(n: int = 256 * 1024, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(n)


def metadata(core: Core, path: bytes) -> dict[str, str]:
    return dict(core.store.inner.head(core.cold(path).key).metadata)


async def forge(core: Core, path: bytes, stub: Stub, uid: int) -> None:
    """A link naming ``stub``'s object, made on the warm tier by user ``uid``."""
    core.put_stub(path, stub)
    os.lchown(core.warm_path(path), uid, uid)


@core_test
async def test_objects_record_their_owner(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(), mode=0o640)
        found = metadata(core, b"f")
        assert (found["uid"], found["gid"], found["mode"]) == (
            str(os.getuid()), str(os.getgid()), "0640")
        rec = recorded(found)
        assert rec is not None and (rec.uid, rec.mode) == (os.getuid(), 0o640)


@core_test
async def test_verified_stub_is_remembered(tmp_path: Path) -> None:
    data = content()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data)
        heads = core.store.calls["head"]
        assert await core.read_file(b"f") == data
        assert core.store.calls["head"] - heads == 1  # checked once...
        assert await core.read_file(b"f") == data
        assert core.store.calls["head"] - heads == 1  # ...and remembered


@core_test
async def test_link_of_another_owner_is_refused(tmp_path: Path) -> None:
    data = content()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data, mode=0o600)
        assert await core.read_file(b"f") == data  # (remembered for its own link)
        await forge(core, b"copy", core.cold(b"f"), OTHER)
        with pytest.raises(PermissionError) as caught:
            await core.read_file(b"copy")
        assert caught.value.errno == errno.EACCES
        # Truncating it would stage the object's data under the forger's name.
        inode = await core.lookup_path(b"copy")
        with pytest.raises(PermissionError):
            await core.fs.setattr(inode.ino, SetAttr(size=10))
        assert core.stub(b"copy") is not None


@core_test
async def test_wider_mode_than_recorded_is_refused(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(), mode=0o600)
        wide = Stub(**{**core.cold(b"f").__dict__, "mode": 0o644})
        await forge(core, b"wide", wide, os.getuid())
        with pytest.raises(PermissionError):
            await core.read_file(b"wide")


@core_test
async def test_object_without_owner_is_accepted(tmp_path: Path) -> None:
    data = content()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        info = core.store.inner.put("imported.bin", data, {"mode": "0600"})
        stub = Stub(info.key, info.size, info.etag, 0o644, info.mtime_ns)
        await forge(core, b"imported.bin", stub, OTHER)
        assert await core.read_file(b"imported.bin") == data


@core_test
async def test_chmod_widens_the_recorded_mode(tmp_path: Path) -> None:
    data = content()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data, mode=0o600)
        inode = await core.lookup_path(b"f")
        calls = core.store.calls["replace_metadata"]
        await core.fs.setattr(inode.ino, SetAttr(mode=0o400))  # fewer bits: stub only
        assert core.store.calls["replace_metadata"] == calls
        assert metadata(core, b"f")["mode"] == "0600"
        await core.fs.setattr(inode.ino, SetAttr(mode=0o644))
        assert core.store.calls["replace_metadata"] == calls + 1
        assert metadata(core, b"f")["mode"] == "0644"
        assert core.cold(b"f").mode == 0o644
        assert await core.read_file(b"f") == data


@core_test
async def test_chmod_through_a_forged_link_is_refused(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(), mode=0o600)
        await forge(core, b"copy", core.cold(b"f"), OTHER)
        inode = await core.lookup_path(b"copy")
        with pytest.raises(PermissionError) as caught:
            await core.fs.setattr(inode.ino, SetAttr(mode=0o666))
        assert caught.value.errno == errno.EPERM
        assert metadata(core, b"f")["mode"] == "0600"
        with pytest.raises(PermissionError):  # nor may root hand it to anyone
            await core.fs.setattr(inode.ino, SetAttr(uid=1234, gid=1234))
        assert metadata(core, b"f")["uid"] == str(os.getuid())
        await core.fs.setattr(inode.ino, SetAttr(uid=OTHER))  # (its own owner: no change)
        assert metadata(core, b"f")["uid"] == str(os.getuid())


@core_test
async def test_chown_changes_the_recorded_owner(tmp_path: Path) -> None:
    data = content()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data, mode=0o600)
        inode = await core.lookup_path(b"f")
        await core.fs.setattr(inode.ino, SetAttr(uid=OTHER, gid=OTHER))
        found = metadata(core, b"f")
        assert (found["uid"], found["gid"]) == (str(OTHER), str(OTHER))
        assert os.lstat(core.warm_path(b"f")).st_uid == OTHER
        assert await core.read_file(b"f") == data


def test_verified_stubs_are_bounded() -> None:
    owners = Owners(None, size=2)  # type: ignore[arg-type]
    stubs = [Stub(f"k{i}", 1, "e", 0o600, 0) for i in range(3)]
    for stub in stubs:
        owners.remember(stub, 0)
    assert not owners.known(stubs[0], 0)
    assert owners.known(stubs[1], 0) and owners.known(stubs[2], 0)
    assert not owners.known(stubs[1], 1)  # another owner is another entry


@core_test
async def test_owner_and_mode_set_while_uploading_reach_the_object(tmp_path: Path) -> None:
    """``cp -p``: the file is written (its upload under way with the first mode and owner),
    then given its mode and owner before it is closed."""
    data = content()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"f", 0o600)
        await core.write_all(fh, data)
        inode = await core.lookup_path(b"f")
        assert inode.data.upload is not None  # (streaming: its metadata is sent)
        await core.fs.setattr(inode.ino, SetAttr(mode=0o644, uid=OTHER, gid=OTHER))
        await core.close(fh)
        found = metadata(core, b"f")
        assert (found["uid"], found["mode"]) == (str(OTHER), "0644")
        assert os.lstat(core.warm_path(b"f")).st_uid == OTHER
        assert await core.read_file(b"f") == data


@core_test
async def test_removing_a_copied_link_keeps_the_object(tmp_path: Path) -> None:
    data = content()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data, mode=0o600)
        await forge(core, b"copy", core.cold(b"f"), OTHER)
        await forge(core, b"copy2", core.cold(b"f"), OTHER)
        await core.lookup_path(b"copy")
        await core.lookup_path(b"copy2")
        await core.fs.unlink(ROOT, b"copy")
        await core.write_file(b"small", b"x")
        await core.fs.rename(ROOT, b"small", ROOT, b"copy2", 0)
        assert core.store.calls["delete"] == 0
        assert await core.read_file(b"f") == data
        await core.fs.unlink(ROOT, b"f")  # (its owner's own link: the object goes)
        assert core.store.calls["delete"] == 1 and core.objects() == {}


@core_test
async def test_a_store_that_cannot_change_metadata_refuses_the_chmod(tmp_path: Path) -> None:
    """S3 copies an object onto itself (its only way to change metadata) up to 5 GiB."""
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(), mode=0o600)
        before = core.cold(b"f")
        core.store.fail_always("replace_metadata", MetadataFixed("too large to copy"))
        inode = await core.lookup_path(b"f")
        with pytest.raises(OSError) as caught:
            await core.fs.setattr(inode.ino, SetAttr(mode=0o644))
        assert caught.value.errno == errno.EOPNOTSUPP
        assert core.cold(b"f") == before and metadata(core, b"f")["mode"] == "0600"


async def published(core: Core, path: bytes) -> None:
    """Wait until write-back has nothing left to publish and ``path`` is a stub."""
    await core.until(lambda: core.writeback_pending() == 0 and core.stub(path) is not None)


@core_test
async def test_chmod_while_the_rewrite_is_completed_but_not_yet_published(tmp_path: Path
                                                                          ) -> None:
    """A cold file rewritten in write-back mode is uploaded to its own key: once that upload
    is completed the object behind the stub is the new one, and a chmod arriving before the
    new stub is in place must not go to the object by the old stub's ETag (it would find it
    changed and fail). The new object takes the widened mode when its stub is put in place."""
    first, extra = content(64 * 1024), content(100, seed=4)
    async with open_core(tmp_path, large_file_threshold="4KiB", durability="writeback"
                         ) as core:
        await core.write_file(b"f", first, mode=0o600)
        await published(core, b"f")
        before = core.cold(b"f")
        hold = core.store.hold_after("complete_multipart")
        try:
            fh = await core.open(b"f", os.O_WRONLY)
            await core.write_all(fh, extra, offset=len(first))
            await core.close(fh)
            await core.until(hold.reached.is_set)
            assert core.cold(b"f") == before  # (the old stub, the new object behind it)
            assert core.store.inner.head(before.key).etag != before.etag
            inode = await core.lookup_path(b"f")
            await core.fs.setattr(inode.ino, SetAttr(mode=0o640))
        finally:
            hold.release()
        await published(core, b"f")
        await core.until(lambda: core.cold(b"f") != before)
        assert core.cold(b"f").mode == 0o640
        assert metadata(core, b"f")["mode"] == "0640"
        assert (await core.fs.getattr(inode.ino)).mode & 0o777 == 0o640
        assert await core.read_file(b"f") == first + extra
    async with open_core(tmp_path, large_file_threshold="4KiB") as again:
        inode = await again.lookup_path(b"f")  # (a new mount checks the object's owner)
        assert (await again.fs.getattr(inode.ino)).mode & 0o777 == 0o640
        assert await again.read_file(b"f") == first + extra


@core_test
async def test_chmod_of_a_staged_rewrite_before_its_upload(tmp_path: Path) -> None:
    """The same chmod while the rewrite is still open for writing, nothing of it uploaded."""
    first, extra = content(64 * 1024), content(100, seed=4)
    async with open_core(tmp_path, large_file_threshold="4KiB", durability="writeback"
                         ) as core:
        await core.write_file(b"f", first, mode=0o600)
        await published(core, b"f")
        fh = await core.open(b"f", os.O_WRONLY)
        await core.write_all(fh, extra, offset=len(first))
        inode = await core.lookup_path(b"f")
        assert inode.data is not None and inode.data.staged and inode.data.upload is None
        await core.fs.setattr(inode.ino, SetAttr(mode=0o640))
        await core.close(fh)
        assert await core.publish_all() == []
        await published(core, b"f")
        assert core.cold(b"f").mode == 0o640
        assert metadata(core, b"f")["mode"] == "0640"
        assert await core.read_file(b"f") == first + extra
    async with open_core(tmp_path, large_file_threshold="4KiB") as again:
        inode = await again.lookup_path(b"f")
        assert (await again.fs.getattr(inode.ino)).mode & 0o777 == 0o640
        assert await again.read_file(b"f") == first + extra
