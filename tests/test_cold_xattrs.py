"""Extended attributes and the bucket. A stub (a symbolic link on the warm tier) cannot keep a
file's extended attributes, nor can its object: a file with them stays on the warm tier
whatever its size, as ``tierfs demote`` leaves it, and setting one on a file in the bucket, or
streaming there, is refused (EOPNOTSUPP) rather than taken and lost."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, make_mount, running, tierfs

BIG = 20_000


@pytest.fixture(params=["sync", "writeback"])
def xmount(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mount]:
    (tmp_path / "cold").mkdir()
    with running(make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                            "--large-file-threshold", "4KiB", "--durability",
                            request.param)) as m:
        yield m


def test_a_file_with_xattrs_that_grows_past_the_threshold_keeps_them(xmount: Mount) -> None:
    """It was streamed to the bucket and its stub put in place of the warm file: the
    attribute was gone, with no error to anyone."""
    p = xmount.path / "f"
    p.write_bytes(b"small")
    os.setxattr(p, "user.tag", b"v1")
    with open(p, "ab") as f:
        f.write(b"x" * BIG)
    tierfs("flush", str(xmount.path))
    assert os.getxattr(p, "user.tag") == b"v1"
    assert p.read_bytes() == b"small" + b"x" * BIG
    assert not os.path.islink(xmount.warm / "f")  # on the warm tier, whatever its size
    assert os.getxattr(xmount.warm / "f", "user.tag") == b"v1"
    xmount.restart()
    assert os.getxattr(p, "user.tag") == b"v1"
    with open(p, "wb") as f:  # rewritten whole: the attribute is still the file's
        f.write(b"y" * BIG)
    tierfs("flush", str(xmount.path))
    assert os.getxattr(p, "user.tag") == b"v1" and p.read_bytes() == b"y" * BIG


def test_setxattr_on_a_file_streaming_to_the_bucket_is_refused(xmount: Mount) -> None:
    """What ``rsync -X`` and ``cp --preserve=xattr`` do: write the file, then set its
    attributes. The set succeeded and the attribute was gone after the close."""
    p = xmount.path / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"y" * BIG)
        with pytest.raises(OSError) as refused:
            os.setxattr(fd, "user.tag", b"v2")
        assert refused.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    tierfs("flush", str(xmount.path))
    assert os.listxattr(p) == [] and p.read_bytes() == b"y" * BIG
    assert os.readlink(xmount.warm / "f").startswith("tierfs:")


def test_setxattr_on_a_file_in_the_bucket_is_refused_as_unsupported(xmount: Mount) -> None:
    """It got EPERM (the kernel's answer for a symbolic link), as if the caller lacked a
    permission."""
    p = xmount.path / "g"
    p.write_bytes(b"z" * BIG)
    tierfs("flush", str(xmount.path))
    assert os.readlink(xmount.warm / "g").startswith("tierfs:")
    with pytest.raises(OSError) as refused:
        os.setxattr(p, "user.tag", b"v3")
    assert refused.value.errno == errno.EOPNOTSUPP
    assert os.listxattr(p) == [] and p.read_bytes() == b"z" * BIG
