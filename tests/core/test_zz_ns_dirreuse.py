"""Review reproducer (another node: mv D/f kept; rmdir D; mkdir E): a directory found on the warm tier with the (device, inode number) of a
directory this mount knows is taken for that directory renamed by another node, even when it
is a new directory that got the freed number (ext4, xfs and tmpfs reuse numbers at once).
The known directory's names move under the new one: a file this node still has open below
the removed directory is then published into the unrelated new directory."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import ROOT, core_test, open_core


@core_test
async def test_a_new_directory_with_a_reused_number_is_not_a_known_one(tmp_path: Path) -> None:
    async with open_core(tmp_path) as c:
        await c.mkdirs(b"D")
        fh = await c.create(b"D/f")
        await c.write_all(fh, b"written on this node under D")
        d_ino = (tmp_path / "warm" / "D").stat().st_ino
        # another node: mv D/f kept; rmdir D; mkdir E (a new, unrelated directory: it gets
        # D's number)
        os.rename(tmp_path / "warm" / "D" / "f", tmp_path / "warm" / "kept")
        os.rmdir(tmp_path / "warm" / "D")
        for i in range(200):  # (the other node makes directories; one gets D's number)
            os.mkdir(tmp_path / "warm" / "E")
            if (tmp_path / "warm" / "E").stat().st_ino == d_ino:
                break
            os.rename(tmp_path / "warm" / "E", tmp_path / "warm" / f"other{i}")
        else:
            import pytest
            pytest.skip("the file system did not reuse the inode number")
        e, _ = await c.fs.lookup(ROOT, b"E")  # ls on this node
        try:
            await c.close(fh)
        except OSError:
            pass  # (failing is fine: its directory is gone)
        assert sorted(os.listdir(tmp_path / "warm" / "E")) == [], \
            "a file of the removed directory D was published into the new directory E"
