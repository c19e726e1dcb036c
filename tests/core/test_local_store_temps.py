"""The local-folder store writes each object to a temp file in its work folder and renames it
into place. A write that fails (the folder's disk full) removes its temp file (it was left
for ever, one whole copy per try), and the next mount's check removes those a crash left,
once they are old enough not to be another mount's write under way."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tierfs.objects.base import parse_bucket_uri
from tierfs.objects.local import PUT_PREFIX, STALE_PUT, WORK_DIR, LocalStore


@pytest.fixture
def small_bucket(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("a full bucket folder is a small tmpfs, and mounting one needs root")
    folder = tmp_path / "cold"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_failed_completion_leaves_no_temp_file(small_bucket: Path) -> None:
    store = LocalStore(parse_bucket_uri(f"file://{small_bucket}"))
    store.check()
    uid = store.create_multipart("big")
    part = store.upload_part("big", uid, 1, b"x" * (1024 * 1024 + 512 * 1024))
    with pytest.raises(OSError):  # the object needs room the folder does not have
        store.complete_multipart("big", uid, [(1, part)])
    store.abort_multipart("big", uid)  # the caller gives up
    LocalStore(parse_bucket_uri(f"file://{small_bucket}")).check()  # the next mount
    left = [n for n in os.listdir(small_bucket / WORK_DIR)]
    assert left == [], f"temp files left in the bucket folder for ever: {left}"


def test_the_check_at_mount_removes_old_temp_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "cold"
    folder.mkdir()
    store = LocalStore(parse_bucket_uri(f"file://{folder}"))
    store.check()
    old = folder / WORK_DIR / f"{PUT_PREFIX}left-by-a-crash"
    fresh = folder / WORK_DIR / f"{PUT_PREFIX}another-mounts-write"
    old.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y" * 1000)
    then = time.time() - STALE_PUT - 60
    os.utime(old, (then, then))
    LocalStore(parse_bucket_uri(f"file://{folder}")).check()  # the next mount
    assert not old.exists()
    assert fresh.read_bytes() == b"y" * 1000
