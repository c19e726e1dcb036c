"""``tierfs import`` as a new user runs it: into a path inside a running mount (that mount's
tiers, bucket and endpoint, no flag repeated), and never through a symbolic link on the warm
tier."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, S3Server, make_mount, make_roots_mount, running, tierfs

PREFIX = "tierfs"


@pytest.fixture
def s3_mount(tmp_path: Path, s3_server: S3Server, bucket: str) -> Iterator[Mount]:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/{PREFIX}", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path")
    m.bucket = bucket  # type: ignore[attr-defined]
    with running(m):
        yield m


def _put(s3_server: S3Server, bucket: str, files: dict[str, bytes], base: str) -> None:
    for rel, data in files.items():
        s3_server.client().put_object(Bucket=bucket, Key=f"{base}/{rel}", Body=data)


def test_import_into_a_path_inside_a_mount_uses_that_mounts_tiers(
        s3_mount: Mount, s3_server: S3Server) -> None:
    m = s3_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    files = {"train/a.bin": os.urandom(70000), "b.bin": b"bee"}
    _put(s3_server, bucket, files, f"{PREFIX}/src/ds")
    (m.path / "datasets").mkdir()
    # A lookup now leaves a negative entry in the kernel for entry_timeout (1 s by default).
    assert not (m.path / "datasets" / "ds").exists()
    looked = time.monotonic()
    out = tierfs("import", f"s3://{bucket}/{PREFIX}/src/ds",
                 str(m.path / "datasets" / "ds")).stdout
    assert "2 new" in out and str(m.path / "datasets" / "ds") in out
    # The same relative path under the mount's warm root.
    assert os.readlink(m.warm / "datasets" / "ds" / "b.bin").startswith("tierfs:")
    # What a user sees once the kernel's negative entry has expired.
    time.sleep(max(0.0, looked + 1.1 - time.monotonic()))
    assert (m.path / "datasets" / "ds" / "train" / "a.bin").read_bytes() == files["train/a.bin"]
    assert (m.path / "datasets" / "ds" / "b.bin").read_bytes() == b"bee"
    assert sorted(os.listdir(m.path / "datasets" / "ds")) == ["b.bin", "train"]
    # Running it again changes nothing; a relative path from inside the mount works too.
    again = subprocess.run([sys.executable, "-m", "tierfs", "import",
                            f"s3://{bucket}/{PREFIX}/src/ds", "datasets/ds"],
                           cwd=m.path, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    assert "0 new" in again.stdout and "2 unchanged" in again.stdout


def test_import_into_a_root_of_a_mount_shows_the_path_in_the_mount(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """With named roots, the path shown is the one given, root and all (the root's name was
    left out: ``.../mnt/datasets/ds`` for ``.../mnt/cluster/datasets/ds``)."""
    m = make_roots_mount(tmp_path, ("cluster", "user"), "--endpoint-url", s3_server.endpoint,
                         "--addressing-style", "path", bucket=f"s3://{bucket}/pre")
    s3_server.client().put_object(Bucket=bucket, Key="pre/cluster/src/ds/b.bin", Body=b"bee")
    with running(m):
        (m.path / "cluster" / "datasets").mkdir()
        into = m.path / "cluster" / "datasets" / "ds"
        out = tierfs("import", f"s3://{bucket}/pre/cluster/src/ds", str(into)).stdout
        assert "1 new" in out and f"into {into}:" in out, out
        assert os.readlink(m.roots["cluster"] / "datasets" / "ds" / "b.bin").startswith(
            "tierfs:")


def test_import_from_a_local_folder_bucket_into_a_root(tmp_path: Path) -> None:
    """A root's objects in a local-folder bucket sit in the folder NAME of the bucket's; the
    source is named by that folder's path, which was refused as outside the bucket."""
    from tierfs.objects import open_store
    from tierfs.objects.base import parse_bucket_uri

    m = make_roots_mount(tmp_path, ("cluster", "user"))
    cold = tmp_path / "cold"
    open_store(parse_bucket_uri(f"file://{cold}")).put("cluster/src/ds/b.bin", b"bee")
    with running(m):
        (m.path / "cluster" / "datasets").mkdir()
        into = m.path / "cluster" / "datasets" / "ds"
        out = tierfs("import", f"file://{cold}/cluster/src/ds", str(into)).stdout
        assert "1 new" in out, out
        assert os.readlink(m.roots["cluster"] / "datasets" / "ds" / "b.bin").startswith(
            "tierfs:")
        time.sleep(1.1)  # (the kernel's negative entry for the new name)
        assert (into / "b.bin").read_bytes() == b"bee"
        # Another root's objects are not this root's to name.
        other = tierfs("import", f"file://{cold}/user/x", str(into), check=False)
        assert other.returncode == 1 and "not inside the configured bucket" in other.stderr


def test_import_into_a_mount_refuses_tiers_that_are_not_the_mounts(
        s3_mount: Mount, s3_server: S3Server, tmp_path: Path) -> None:
    m = s3_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    other = tmp_path / "otherwarm"
    other.mkdir()
    result = tierfs("import", f"s3://{bucket}/{PREFIX}/src/ds", str(m.path / "ds"),
                    "--warm", str(other), check=False)
    assert result.returncode == 1
    assert f"whose warm tier is {m.warm}" in result.stderr and "--warm" in result.stderr
    assert list(other.iterdir()) == [] and not (m.warm / "ds").exists()


def test_import_never_writes_through_a_symlinked_warm_directory(
        s3_mount: Mount, s3_server: S3Server, tmp_path: Path) -> None:
    m = s3_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    _put(s3_server, bucket, {"a.bin": b"a", "sub/b.bin": b"b"}, f"{PREFIX}/src/ds")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, m.warm / "datasets")
    # The old form (a namespace path and the tiers as flags) and the mount form alike.
    for dest, flags in (("datasets/x", ["--warm", str(m.warm), "--hot", str(m.hot), *m.extra]),
                        (str(m.path / "datasets" / "x"), [])):
        result = tierfs("import", f"s3://{bucket}/{PREFIX}/src/ds", dest, *flags, check=False)
        assert result.returncode == 1, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{m.warm / 'datasets'} is a symbolic link" in lines[0]
        assert list(outside.iterdir()) == []
    # A link inside the destination is in the way of the files under it, never followed.
    os.unlink(m.warm / "datasets")
    (m.warm / "datasets" / "x").mkdir(parents=True)
    os.symlink(outside, m.warm / "datasets" / "x" / "sub")
    result = tierfs("import", f"s3://{bucket}/{PREFIX}/src/ds", str(m.path / "datasets" / "x"))
    assert "1 new" in result.stdout and "1 in the way" in result.stdout
    assert str(m.warm / "datasets" / "x" / "sub" / "b.bin") in result.stderr
    assert list(outside.iterdir()) == []
    assert (m.path / "datasets" / "x" / "a.bin").read_bytes() == b"a"
