"""The filesystem core called directly, without the kernel: lookup counts, forget, the life of
an unlinked open file, and the index format check."""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pyfuse3
import pytest
import trio

from tierfs.config import build_config
from tierfs.errors import MountError
from tierfs.fuse.errors import to_fuse_errors
from tierfs.index import Index, pack_u64
from tierfs.mounting import open_checked_store
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier
from tierfs.tiers.warm import WarmTier
from tierfs.vfs.filesystem import FileSystem
from tierfs.core.inodes import ROOT_INODE


def run_fs(tmp_path: Path, body: Callable[[FileSystem], Awaitable[None]]) -> None:
    (tmp_path / "hot").mkdir(exist_ok=True)
    (tmp_path / "warm").mkdir(exist_ok=True)
    (tmp_path / "cold").mkdir(exist_ok=True)
    config = build_config({}, {"hot": str(tmp_path / "hot"), "warm": str(tmp_path / "warm"),
                               "bucket": f"file://{tmp_path / 'cold'}"})
    hot = HotTier(config.hot, 2)
    hot.prepare()
    warm = WarmTier(config.warm, 2, config.bucket)
    index = Index(hot.index_dir)
    try:
        fs = FileSystem(config, hot, warm, ColdTier(open_checked_store(config), 2), index)
        try:
            trio.run(body, fs)
        finally:
            fs.journal.close()
    finally:
        index.close()
        warm.close()


def test_lookup_counts_follow_the_kernel_exactly(tmp_path: Path) -> None:
    async def body(fs: FileSystem) -> None:
        d, _ = await fs.mkdir(ROOT_INODE, b"d", 0o755, 0, 0)
        assert d.lookups == 1
        again, _ = await fs.lookup(ROOT_INODE, b"d")
        assert again is d and d.lookups == 2
        fh, _, f, _ = await fs.create(d.ino, b"f", 0o644, os.O_WRONLY, 0, 0)
        assert f.lookups == 1 and f.opens == 1
        await fs.release(fh)
        assert f.opens == 0 and fs.inodes.get(f.ino) is f
        await fs.forget([(f.ino, 1)])
        assert fs.inodes.get(f.ino) is None  # forgotten and closed: gone from the table
        await fs.forget([(d.ino, 1)])
        assert fs.inodes.get(d.ino) is d  # one lookup left
        dh = await fs.opendir(d.ino)
        entries = [e for _, e in await fs.readdir(dh, 0)]
        assert [e.name for e in entries] == [b"f"]
        inode, _ = fs.dir_entry(dh, entries[0])
        fs.count_lookup(inode, sent=True)
        assert inode.lookups == 1
        await fs.releasedir(dh)
        await fs.forget([(inode.ino, 1), (d.ino, 1)])
        assert len(fs.inodes) == 1  # only the root

    run_fs(tmp_path, body)


def test_entry_the_kernel_did_not_take_is_not_counted(tmp_path: Path) -> None:
    async def body(fs: FileSystem) -> None:
        (fs.warm.root / "x").write_bytes(b"")
        dh = await fs.opendir(ROOT_INODE)
        entries = [e for _, e in await fs.readdir(dh, 0)]
        inode, _ = fs.dir_entry(dh, entries[0])
        fs.count_lookup(inode, sent=False)
        assert fs.inodes.get(inode.ino) is None
        await fs.releasedir(dh)

    run_fs(tmp_path, body)


def test_unlinked_file_lives_until_last_release_and_forget(tmp_path: Path) -> None:
    async def body(fs: FileSystem) -> None:
        fh, _, f, _ = await fs.create(ROOT_INODE, b"f", 0o644, os.O_RDWR, 0, 0)
        assert await fs.write(fh, 0, b"data") == 4
        await fs.unlink(ROOT_INODE, b"f")
        assert not (fs.warm.root / "f").exists()
        assert await fs.read(fh, 0, 10) == b"data"
        assert (await fs.getattr(f.ino)).nlink == 0
        await fs.flush(fh)  # nothing to publish: the file has no name
        assert not (fs.warm.root / "f").exists()
        await fs.release(fh)
        assert os.listdir(fs.hot.staging_dir) == []
        assert fs.inodes.get(f.ino) is f  # the kernel still knows it
        await fs.forget([(f.ino, 1)])
        assert fs.inodes.get(f.ino) is None

    run_fs(tmp_path, body)


def test_index_commits_in_batches_and_keeps_numbers(tmp_path: Path) -> None:
    numbers: dict[str, int] = {}

    async def first(fs: FileSystem) -> None:
        d, _ = await fs.mkdir(ROOT_INODE, b"d", 0o755, 0, 0)
        numbers["d"] = d.ino
        assert fs.index.get("inodes", d.key) is None  # queued, not yet committed
        await fs.shutdown()
        assert fs.index.get("inodes", d.key) == pack_u64(d.ino)

    run_fs(tmp_path, first)

    async def second(fs: FileSystem) -> None:
        d, _ = await fs.lookup(ROOT_INODE, b"d")
        assert d.ino == numbers["d"]

    run_fs(tmp_path, second)  # a new FileSystem over the same tiers and index


def test_unknown_index_format_is_refused(tmp_path: Path) -> None:
    index = Index(tmp_path / "index")
    index.commit({("meta", b"format"): pack_u64(999)})
    index.close()
    with pytest.raises(MountError, match="format 999"):
        Index(tmp_path / "index")


@pytest.mark.parametrize("older", [1, 2])
def test_an_older_format_index_is_read_and_upgraded(tmp_path: Path, older: int) -> None:
    # Format 2 journal entries carry a field format 1 readers do not know, and with format 3
    # write-back closes may be in the acknowledgement log beside the index only: an index a
    # mount of this tierfs has written says so, and an older one is taken as it is.
    index = Index(tmp_path / "index")
    index.commit({("meta", b"format"): pack_u64(older)})
    index.close()
    index = Index(tmp_path / "index")
    with index.env.begin(db=index.dbs["meta"]) as txn:
        assert txn.get(b"format") == pack_u64(3)
    index.close()


def test_dot_and_dotdot_lookups(tmp_path: Path) -> None:
    async def body(fs: FileSystem) -> None:
        d, _ = await fs.mkdir(ROOT_INODE, b"d", 0o755, 0, 0)
        e, _ = await fs.mkdir(d.ino, b"e", 0o755, 0, 0)
        up, _ = await fs.lookup(e.ino, b"..")
        assert up is d and d.lookups == 2
        same, _ = await fs.lookup(e.ino, b".")
        assert same is e and e.lookups == 2
        root, _ = await fs.lookup(ROOT_INODE, b"..")
        assert root.ino == ROOT_INODE

    run_fs(tmp_path, body)


def test_unexpected_exceptions_become_eio_and_are_logged(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    @to_fuse_errors
    async def broken() -> None:
        raise ValueError("a bug")

    @to_fuse_errors
    async def missing() -> None:
        raise FileNotFoundError(errno.ENOENT, "gone")

    with pytest.raises(pyfuse3.FUSEError) as info:
        trio.run(broken)
    assert info.value.errno == errno.EIO
    assert "a bug" in caplog.text and "Traceback" in caplog.text
    with pytest.raises(pyfuse3.FUSEError) as info:
        trio.run(missing)
    assert info.value.errno == errno.ENOENT
