"""A warm tier without extended attributes (sshfs, as Amazon EFS): the kernel asks for
security.capability before the first write to every file, and tierfs answers from what it has
learnt of the tier instead of asking it again each time (a worker call and, on a network file
system, a round trip per file written)."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest
from nfslike import missing_tools, nfslike

from .conftest import core_test, open_core

CAPABILITY = b"security.capability"


@pytest.mark.skipif(bool(missing_tools()), reason="sshfs or sshd missing: .ci/run installs them")
@core_test
async def test_the_tier_is_asked_about_xattrs_once(tmp_path: Path) -> None:
    with nfslike(tmp_path / "nfs", latency=0.0) as nfs:
        warm = tmp_path / "core" / "warm"
        warm.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(nfs.path), str(warm)], check=True)
        try:
            async with open_core(tmp_path / "core") as core:
                for i in range(3):
                    await core.close(await core.create(b"f%d" % i))
                inodes = [await core.lookup_path(b"f%d" % i) for i in range(3)]
                counts = core.count_warm_calls()
                for n, inode in enumerate(inodes):
                    for ask in (core.fs.getxattr(inode.ino, CAPABILITY),
                                core.fs.listxattr(inode.ino)):
                        with pytest.raises(OSError) as e:
                            await ask
                        assert e.value.errno == errno.EOPNOTSUPP
                    # (The first create found the tier lacks them: no file asks it again.)
                    assert counts["calls"] == 0, n
        finally:
            subprocess.run(["umount", "-l", str(warm)], check=False)
