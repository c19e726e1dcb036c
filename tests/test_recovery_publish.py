"""Recovery publishes through the live publisher: a file finished after a crash gets what a
live close gives it (object metadata, the file's own mode), whatever path the crash left it on.

Each test lays out what a crash leaves (a staging file and its closed journal entry in the
index) and mounts the core on it without FUSE."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from tierfs.config import build_config
from tierfs.index import Index
from tierfs.objects.local import LocalStore
from tierfs.stubs import Stub, parse_stub
from tierfs.mounting import open_checked_store
from tierfs.tiers.cold import ColdTier
from tierfs.tiers.hot import HotTier
from tierfs.tiers.warm import WarmTier
from tierfs.transfer.streaming import UPLOAD_TOKEN
from tierfs.vfs.filesystem import FileSystem
from tierfs.write.entries import Entry, Upload

MiB = 1024 * 1024
THRESHOLD = 4 * MiB


def tiers(tmp_path: Path) -> tuple[Path, Path, Path]:
    hot, warm, cold = tmp_path / "hot", tmp_path / "warm", tmp_path / "cold"
    for d in (hot, warm, cold):
        d.mkdir(exist_ok=True)
    return hot, warm, cold


def config_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    hot, warm, cold = tiers(tmp_path)
    return build_config({}, {"hot": str(hot), "warm": str(warm), "bucket": f"file://{cold}",
                             "large_file_threshold": str(THRESHOLD)})


def crashed_write(tmp_path: Path, path: bytes, data: bytes, upload: Upload | None,
                  replaces: str | None = None) -> str:
    """What a crash leaves of a closed file: its staging file and closed journal entry."""
    config = config_for(tmp_path)
    hot = HotTier(config.hot, 1)
    hot.prepare()
    sid, fd = hot.new_staging()
    try:
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
    now = time.time_ns()
    entry = Entry(path, closed=True, size=len(data), atime_ns=now, mtime_ns=now, upload=upload,
                  replaces=replaces)
    index = Index(hot.index_dir)
    try:
        index.commit({("journal", sid.encode()): entry.encode()})
    finally:
        index.close()
    return sid


def mount_core(tmp_path: Path, body: Callable[[FileSystem], Awaitable[None]]) -> None:
    """The core on the tiers, its background tasks running, recovery done first."""
    config = config_for(tmp_path)
    hot = HotTier(config.hot, 2)
    hot.prepare()
    warm = WarmTier(config.warm, 2)
    index = Index(hot.index_dir)

    async def main() -> None:
        fs = FileSystem(config, hot, warm, ColdTier(open_checked_store(config), 2), index)
        async with trio.open_nursery() as nursery:
            await nursery.start(fs.run_background)
            with trio.fail_after(60):
                await fs.recover()
                await body(fs)
                await fs.shutdown()
            nursery.cancel_scope.cancel()
        fs.journal.close()

    try:
        trio.run(main)
    finally:
        index.close()
        warm.close()


def test_an_upload_recovery_starts_carries_the_files_mode_and_mtime(tmp_path: Path) -> None:
    """A crash between journaling an upload's key and recording its id: recovery starts the
    upload again. The object it makes carries what a live writer's does (mode, mtime, the
    upload's token), not the token alone."""
    hot, warm, cold = tiers(tmp_path)
    (warm / "big.bin").write_bytes(b"")
    os.chmod(warm / "big.bin", 0o640)
    data = os.urandom(THRESHOLD + MiB)
    key = "big.bin"
    crashed_write(tmp_path, b"big.bin", data,
                  Upload(key, time.time(), 16 * MiB, upload_id=None, token="feedc0de"))

    async def body(fs: FileSystem) -> None:
        store = fs.cold.store
        assert isinstance(store, LocalStore)
        [info] = [i for i in store.list_objects("") if not i.key.startswith(".")]
        assert store.get_range(info.key, 0, info.size) == data
        head = store.head(info.key)
        assert head.metadata.get("mode") == "0640"
        assert head.metadata.get("mtime-ns", "").isdigit()
        assert head.metadata.get(UPLOAD_TOKEN)
        target = os.readlink(warm / "big.bin")
        stub = parse_stub(os.fsencode(target), fs.config.bucket)
        assert stub.mode == 0o640 and stub.size == len(data) and stub.key == info.key

    mount_core(tmp_path, body)


def test_a_stub_written_by_recovery_keeps_the_files_mode(tmp_path: Path) -> None:
    """A cold file (mode 0600, in its stub) rewritten past the threshold and closed, then a
    crash: the stub recovery writes keeps mode 0600, as a live close does (it was 0644)."""
    hot, warm, cold = tiers(tmp_path)
    config = config_for(tmp_path)
    old = os.urandom(MiB)
    store = LocalStore(config.bucket)
    info = store.put("old.bin", old, {"mode": "0600"})
    os.symlink(Stub("old.bin", len(old), info.etag, 0o600, time.time_ns())
               .encode(config.bucket), warm / "ckpt.pt")
    data = os.urandom(THRESHOLD + MiB)
    crashed_write(tmp_path, b"ckpt.pt", data,
                  Upload("ckpt.pt", time.time(), 16 * MiB, upload_id=None, token="0ddba11"),
                  replaces="old.bin")

    async def body(fs: FileSystem) -> None:
        stub = parse_stub(os.fsencode(os.readlink(warm / "ckpt.pt")), fs.config.bucket)
        assert stub.size == len(data)
        assert stub.mode == 0o600
        got = fs.cold.store.get_range(stub.key, 0, stub.size)
        assert got == data
        inode, attrs = await fs.lookup(1, b"ckpt.pt")
        assert stat.S_IMODE(attrs.mode) == 0o600
        assert not (cold / "old.bin").exists()  # the object it replaced is gone

    mount_core(tmp_path, body)
