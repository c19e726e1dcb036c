"""Two stubs naming one object (docs/stubs.md: anyone may point a stub of theirs at an object
that records no owner, such as an imported dataset's, and read it with the mode they choose):
what one stub claims must not change what the other reads. Through the kernel, a short block
served to the real stub's reader reads as a file cut short or zeros."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import make_mount, running
from tierfs.objects.base import parse_bucket_uri
from tierfs.objects.local import LocalStore
from tierfs.stubs import Stub

KIB = 1024


def test_a_planted_short_copy_of_a_stub_does_not_cut_the_real_files_reads(
        tmp_path: Path) -> None:
    cold = tmp_path / "cold"
    cold.mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{cold}", "--large-file-threshold", "16KiB",
                   "--part-size", "5MiB", "--block-size", "64KiB")
    bucket = parse_bucket_uri(f"file://{cold}")
    data = os.urandom(100 * KIB)
    info = LocalStore(bucket).put("dataset/part-0.bin", data, {})  # (imported: no owner)
    (m.warm / "dataset").mkdir()
    os.symlink(Stub("dataset/part-0.bin", len(data), info.etag, 0o644, 1).encode(bucket),
               m.warm / "dataset" / "part-0.bin")
    (m.warm / "mine").mkdir()
    os.symlink(Stub("dataset/part-0.bin", 70 * KIB, info.etag, 0o644, 1).encode(bucket),
               m.warm / "mine" / "copy")
    os.lchown(m.warm / "mine" / "copy", 65534, 65534)  # (a hostile user's link)
    with running(m):
        assert (m.path / "mine" / "copy").read_bytes() == data[:70 * KIB]
        got = (m.path / "dataset" / "part-0.bin").read_bytes()
        assert len(got) == len(data), len(got)
        assert got == data, "the real file read other bytes than its object's"


def test_a_file_another_node_demoted_since_its_lookup_opens_for_writing(tmp_path: Path) -> None:
    """Another node's demotion (or ``tierfs demote`` there) renames a stub over a warm file
    this node has just looked up: the next open of the name, within the entry timeout, went
    to the old inode and failed with ELOOP ("Too many levels of symbolic links") where ESTALE
    has the kernel look the name up again and open the stub's file (as for a FIFO there, and
    as an open answered from memory does)."""
    cold = tmp_path / "cold"
    cold.mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{cold}", "--large-file-threshold", "16KiB",
                   "--part-size", "5MiB", "--entry-timeout", "30", "--attr-timeout", "30")
    bucket = parse_bucket_uri(f"file://{cold}")
    with running(m):
        (m.path / "f").write_bytes(b"small")
        os.stat(m.path / "f")  # (looked up: the kernel keeps the entry)
        info = LocalStore(bucket).put("f~0123456789ab", b"small",
                                      {"uid": str(os.getuid()), "gid": str(os.getgid()),
                                       "mode": "0644"})
        tmp = m.warm / ".other-node"
        os.symlink(Stub("f~0123456789ab", 5, info.etag, 0o644, 1).encode(bucket), tmp)
        os.rename(tmp, m.warm / "f")
        with open(m.path / "f", "ab") as f:  # (was: OSError ELOOP)
            f.write(b"!")
        assert (m.path / "f").read_bytes() == b"small!"
