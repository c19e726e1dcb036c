"""A chmod that widens a cold file's mode, or a chown, gives its object the new mode or owner
by copying the object onto itself (S3 changes metadata no other way), which can give it a new
ETag. The stub must go on naming a version the bucket has, whichever answer is lost."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from pathlib import Path

from conftest import S3Server, read_uncached, running, tierfs
from s3proxy import FaultProxy
from test_durability import s3_mount

MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_chmod_whose_head_after_the_copy_fails_leaves_the_file_readable(
        tmp_path: Path, proxy: FaultProxy, bucket: str) -> None:
    """The copy made, the HEAD after it failing: the stub kept the version copied from,
    which no longer existed, and the file read as EIO for good, remounts included. The
    copy's own answer carries the new ETag."""
    m = s3_mount(tmp_path, proxy.endpoint, bucket)
    data = os.urandom(12 * MIB)  # (a multipart object: a copy gets a new ETag)
    with running(m):
        path = m.path / "cm.bin"
        path.write_bytes(data)
        assert os.readlink(m.warm / "cm.bin").startswith("tierfs:")
        proxy.fail("HEAD", "pass", 2)  # the owner check's HEAD and the copy's own
        proxy.fail("HEAD", "503")  # every HEAD after them
        try:
            os.chmod(path, 0o666)
        finally:
            proxy.heal()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        tierfs("evict", str(path))
        assert sha(read_uncached(path)) == sha(data)
        m.restart()
        assert sha(read_uncached(m.path / "cm.bin")) == sha(data)


def test_a_chmod_whose_copy_answer_is_lost_is_found_made(
        tmp_path: Path, proxy: FaultProxy, bucket: str) -> None:
    """The copy made, its answer lost: its retry names a source version gone, which S3
    answers 412 (the proxy does as S3; moto copies anyway), and the copy is found made."""
    m = s3_mount(tmp_path, proxy.endpoint, bucket)
    data = os.urandom(12 * MIB)
    proxy.copy_if_match = True
    with running(m):
        path = m.path / "lost.bin"
        path.write_bytes(data)
        proxy.fail("PUT", "lose", 1)
        os.chmod(path, 0o666)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        tierfs("evict", str(path))
        assert sha(read_uncached(path)) == sha(data)


def test_a_stub_left_naming_the_version_its_object_was_copied_from_is_mended(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """A copy whose answer was lost, then a HEAD failing too, leaves the stub naming the
    version the object was copied from. The copy names that version in its metadata, so
    reads find the object is the same bytes, and the next chmod or chown puts its ETag in
    the stub."""
    m = s3_mount(tmp_path, s3_server.endpoint, bucket)
    data = os.urandom(12 * MIB)
    client = s3_server.client()
    with running(m):
        path = m.path / "lost.bin"
        path.write_bytes(data)
        key = "t/lost.bin"
        head = client.head_object(Bucket=bucket, Key=key)
        old = head["ETag"].strip('"')
        # What the lost copy did at the bucket (the mode it gave, its version named).
        client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                           Metadata={**head["Metadata"], "mode": "0666",
                                     "tierfs-copied-from": old},
                           MetadataDirective="REPLACE")
        assert client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"') != old
        tierfs("evict", str(path))
        # Reads find the object is the stub's version copied: they read it (they got EIO
        # until the next chmod or chown).
        assert sha(read_uncached(path)) == sha(data)
        assert f"etag={old}" in os.readlink(m.warm / "lost.bin")
        tierfs("evict", str(path))
        os.chmod(path, 0o666)
        assert "etag=" + client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"') in \
            os.readlink(m.warm / "lost.bin")
        tierfs("evict", str(path))
        assert sha(read_uncached(path)) == sha(data)


def test_a_change_that_lost_a_race_from_the_same_version_is_not_taken_for_made(
        proxy: FaultProxy, s3_server: S3Server, bucket: str) -> None:
    """Two metadata changes from one version: the other's copy lands between this one's
    HEAD and its copy, whose source is then gone (412). The object records the other's
    owner, so this one failed, whatever the version the object names it was copied from."""
    from tierfs.objects.base import ObjectChanged, parse_bucket_uri
    from tierfs.objects.s3 import S3Store

    uri = parse_bucket_uri(f"s3://{bucket}/t")
    here = S3Store(uri, proxy.endpoint, addressing_style="path")
    there = S3Store(uri, s3_server.endpoint, addressing_style="path")
    key = "t/race.bin"
    upload = there.create_multipart(key, {"uid": "1000", "gid": "1000", "mode": "0640"})
    parts = [(1, there.upload_part(key, upload, 1, os.urandom(5 * MIB))),
             (2, there.upload_part(key, upload, 2, b"x" * 1000))]
    first = there.complete_multipart(key, upload, parts).etag
    proxy.copy_if_match = True
    proxy.delay = 2.0
    proxy.fail("HEAD", "pass", 1)
    proxy.fail("PUT", "delay", 1)  # this node's copy, sent after the other's lands
    outcome: list[object] = []
    racer = threading.Thread(target=lambda: outcome.append(_try(lambda: here.replace_metadata(
        key, first, {"uid": "2002", "gid": "1000", "mode": "0640"}))))
    racer.start()
    time.sleep(0.5)
    won = there.replace_metadata(key, first, {"uid": "1001", "gid": "1000", "mode": "0640"})
    racer.join(timeout=60)
    assert won.etag != first and there.head(key).metadata["uid"] == "1001"
    assert len(outcome) == 1 and isinstance(outcome[0], ObjectChanged), outcome


def _try(call):  # type: ignore[no-untyped-def]
    try:
        return call()
    except Exception as e:
        return e
