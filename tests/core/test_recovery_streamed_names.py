"""A file streaming to the bucket that was fsynced and not closed is published by recovery up
to its fsynced size: a rename or unlink of it through the mount must reach the journal before
it returns, as for closed data, or recovery would put that data under a name it left (over
whatever is there now)."""

from __future__ import annotations

from pathlib import Path

from .conftest import PART, ROOT, Core, core_test, open_core

SMALL = "64KiB"


def content(n: int, seed: int = 3) -> bytes:
    block = bytes((i * 17 + seed) % 256 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


DATA = content(PART + 100_000)


async def fsynced_stream(core: Core, name: bytes) -> None:
    """A file past the threshold, streaming to the bucket, fsynced and left open."""
    fh = await core.create(name)
    await core.write_all(fh, DATA)
    await core.fs.fsync(fh)


@core_test
async def test_a_renamed_fsynced_stream_is_published_under_its_new_name(tmp_path: Path
                                                                      ) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await fsynced_stream(core, b"big")
        await core.fs.rename(ROOT, b"big", ROOT, b"moved", 0)
        core.crash()
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.uploaded + report.published == 1, report
        assert not again.warm_path(b"big").exists() and not again.warm_path(b"big").is_symlink()
        assert await again.read_file(b"moved") == DATA


@core_test
async def test_an_unlinked_fsynced_stream_never_replaces_a_new_file_of_its_name(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await fsynced_stream(core, b"big")
        await core.fs.unlink(ROOT, b"big")
        await core.write_file(b"big", b"new small file")  # sync mode: home at its close
        core.crash()
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.stub(b"big") is None
        assert again.warm_path(b"big").read_bytes() == b"new small file"


@core_test
async def test_a_file_renamed_over_an_fsynced_stream_keeps_its_content(tmp_path: Path
                                                                      ) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await fsynced_stream(core, b"big")
        await core.write_file(b"tmp", b"atomic save")
        await core.fs.rename(ROOT, b"tmp", ROOT, b"big", 0)  # the usual atomic save
        core.crash()
        store = core.store
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.stub(b"big") is None
        assert again.warm_path(b"big").read_bytes() == b"atomic save"
