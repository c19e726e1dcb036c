"""Files past the large-file threshold go straight to the bucket as a multipart upload, through
a real mount and moto's S3 server; faults are injected by a loopback proxy in front of it."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from conftest import Mount, S3Server, make_mount, running, tmpfs
from s3proxy import FaultProxy

MIB = 1024 * 1024
PART = 5 * MIB
WINDOW = 3


@pytest.fixture
def big_mount(tmp_path: Path, proxy: FaultProxy, bucket: str) -> Iterator[Mount]:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   proxy.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "8MiB", "--part-size", "5MiB", "--upload-window", str(WINDOW))
    m.bucket = bucket  # type: ignore[attr-defined]
    with running(m):
        yield m


def short_of_room(m: Mount, size: str) -> AbstractContextManager[Path]:
    """Put a mount's hot tier on a tmpfs of ``size``, no more than the upload's reserve (its
    window of parts) plus one part: its free space is under the reserve at every part's
    upload, so uploaded parts leave staging at once (with room, they stay staged)."""
    return tmpfs(m.hot.parent / "hot-short", size)


def staging_bytes(hot: Path) -> int:
    total = 0
    for entry in os.scandir(hot / "staging"):
        try:
            total += entry.stat().st_blocks * 512
        except FileNotFoundError:
            continue
    return total


class PeakSampler:
    """Samples the hot tier's staging use from a thread while a write runs."""

    def __init__(self, hot: Path) -> None:
        self.hot, self.peak, self._stop = hot, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, staging_bytes(self.hot))
            time.sleep(0.002)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_random(path: Path, size: int, seed: int = 1) -> str:
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    with open(path, "wb") as f:
        for i in range(size // MIB):
            chunk = i.to_bytes(8, "little") + block[8:]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def object_digest(s3_server: S3Server, bucket: str, key: str) -> tuple[str, int]:
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest(), len(body)


def test_large_file_goes_straight_to_the_bucket_within_the_window(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    m = stream_mount(tmp_path, proxy, bucket)
    with short_of_room(m, "20m") as m.hot, running(m):  # 200 MiB through 20 MiB
        size = 200 * MIB
        with PeakSampler(m.hot) as sampler:
            digest = write_random(m.path / "ckpt.pt", size)
        assert (m.warm / "ckpt.pt").is_symlink(), "a large file must end as a stub"
        assert os.readlink(m.warm / "ckpt.pt").startswith("tierfs:v1?")
        assert object_digest(s3_server, bucket, "tierfs/ckpt.pt") == (digest, size)
        # The hot tier held at most the window (parts uploading plus the one filling), plus
        # the one write request in flight.
        assert sampler.peak <= WINDOW * PART + MIB, sampler.peak
        assert staging_bytes(m.hot) == 0
        st = os.stat(m.path / "ckpt.pt")
        assert st.st_size == size, os.readlink(m.warm / "ckpt.pt")
        with open(m.path / "ckpt.pt", "rb") as f:  # one ranged read (moto reads it whole)
            f.seek(7 * MIB)
            assert f.read(8)[:8] == (7).to_bytes(8, "little")
        uploads = s3_server.client().list_multipart_uploads(Bucket=bucket)
        assert uploads.get("Uploads", []) == []


def test_a_name_that_is_not_utf8_goes_to_the_bucket_under_an_escaped_key(
        big_mount: Mount, s3_server: S3Server) -> None:
    """Object keys are UTF-8; a file name need not be. The key keeps the odd byte as an
    escape, and the file reads back whole through the mount."""
    m = big_mount
    name = b"caf\xe9-latin1.bin"  # "café" written by a Latin-1 system
    path = os.fsencode(m.path) + b"/" + name
    digest = write_random(Path(os.fsdecode(path)), 10 * MIB)
    key = "tierfs/caf\\xe9-latin1.bin"
    bucket = m.bucket  # type: ignore[attr-defined]
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
    assert os.path.islink(os.fsencode(m.warm) + b"/" + name), "not a stub on the warm tier"
    with open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest


def test_a_path_too_long_for_a_key_goes_to_the_bucket_under_a_cut_key(
        big_mount: Mount, s3_server: S3Server) -> None:
    """S3 and GCS take keys of up to 1024 bytes; a path in the namespace may be four times
    that. The key is cut to fit and marked with a hash, and the stub names it."""
    m = big_mount
    deep = m.path
    for i in range(6):
        deep = deep / (str(i) * 200)
    deep.mkdir(parents=True)
    digest = write_random(deep / "model.pt", 10 * MIB)
    bucket = m.bucket  # type: ignore[attr-defined]
    [key] = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(key.encode()) <= 1024 and key.startswith("tierfs/000")
    assert re.fullmatch(r".*/model\.pt~[0-9a-f]{12}", key), key
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
    with open(deep / "model.pt", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest


def test_keys_a_local_folder_cannot_hold_get_keys_it_can(tmp_path: Path) -> None:
    """The zero-config bucket is a folder, where a key is a path: a file cannot also be a
    folder, and a name holds at most 255 bytes. A checkpoint file renamed away keeps its
    object at ``ckpt``; a directory ``ckpt`` written next must not fail, nor a second big
    file under a 255-byte name (whose key gets a suffix, since the first one's object has the
    name's key)."""
    cold = tmp_path / "cold"
    cold.mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{cold}", "--large-file-threshold", "8MiB",
                   "--part-size", "5MiB")
    long_name = "n" * 255
    with running(m):
        first = write_random(m.path / "ckpt", 10 * MIB, seed=1)
        os.rename(m.path / "ckpt", m.path / "ckpt.old")
        (m.path / "ckpt").mkdir()
        second = write_random(m.path / "ckpt" / "model.pt", 10 * MIB, seed=2)
        third = write_random(m.path / long_name, 10 * MIB, seed=3)
        os.rename(m.path / long_name, m.path / "long.old")
        fourth = write_random(m.path / long_name, 10 * MIB, seed=4)
        os.rename(m.path / long_name, m.path / "long2.old")
        (m.path / long_name).mkdir()  # the third file's object has this name: in the way
        fifth = write_random(m.path / long_name / "model.pt", 10 * MIB, seed=5)
        for rel, digest in (("ckpt.old", first), ("ckpt/model.pt", second),
                            ("long.old", third), ("long2.old", fourth),
                            (f"{long_name}/model.pt", fifth)):
            assert os.path.islink(m.warm / rel), f"{rel} is not a stub on the warm tier"
            with open(m.path / rel, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == digest, rel
        objects = sorted(str(p.relative_to(cold)) for p in cold.rglob("*")
                         if p.is_file() and ".tierfs-uploads" not in p.parts)
        assert len(objects) == 5 and "ckpt" in objects and long_name in objects, objects
        assert all(len(name.encode()) <= 255 for o in objects for name in o.split("/"))


def test_small_files_stay_plain_files_on_the_warm_tier(big_mount: Mount,
                                                        s3_server: S3Server) -> None:
    m = big_mount
    (m.path / "small.bin").write_bytes(b"s" * (4 * MIB))
    assert not (m.warm / "small.bin").is_symlink()
    assert (m.warm / "small.bin").read_bytes() == b"s" * (4 * MIB)
    listed = s3_server.client().list_objects_v2(Bucket=m.bucket)  # type: ignore[attr-defined]
    assert listed.get("KeyCount", 0) == 0


def test_ftruncate_past_the_threshold_routes_at_once(big_mount: Mount,
                                                      s3_server: S3Server) -> None:
    m = big_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    fd = os.open(m.path / "sparse.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    os.ftruncate(fd, 20 * MIB)
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["tierfs/sparse.bin"]
    os.write(fd, b"head")
    os.close(fd)
    body = s3_server.client().get_object(Bucket=bucket, Key="tierfs/sparse.bin")["Body"].read()
    assert len(body) == 20 * MIB and body[:4] == b"head" and body[4:] == bytes(20 * MIB - 4)
    assert os.stat(m.path / "sparse.bin").st_mode & 0o777 == 0o600
    head = s3_server.client().head_object(Bucket=bucket, Key="tierfs/sparse.bin")
    assert head["Metadata"]["mode"] == "0600"


@pytest.mark.parametrize("fault", ["503", "500", "reset"])
def test_transient_faults_are_retried(big_mount: Mount, proxy: FaultProxy, s3_server: S3Server,
                                      fault: str) -> None:
    proxy.fail("PUT", fault, count=3)
    digest = write_random(big_mount.path / "flaky.bin", 24 * MIB, seed=2)
    assert proxy.faults_served == 3
    bucket = big_mount.bucket  # type: ignore[attr-defined]
    assert object_digest(s3_server, bucket, "tierfs/flaky.bin") == (digest, 24 * MIB)


def test_a_persistent_fault_gives_eio_and_keeps_the_data_for_another_try(
        big_mount: Mount, proxy: FaultProxy, s3_server: S3Server) -> None:
    m = big_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    proxy.fail("PUT", "503")  # before the writes: every part upload fails from now on
    fd = os.open(m.path / "stuck.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    chunk = os.urandom(MIB)
    for _ in range(12):
        os.write(fd, chunk)
    with pytest.raises(OSError) as info:
        os.fsync(fd)
    assert info.value.errno == errno.EIO
    assert staging_bytes(m.hot) > 0  # the parts that failed are still staged
    proxy.heal()
    os.close(fd)  # the last writer's close tries again, and succeeds
    assert object_digest(s3_server, bucket, "tierfs/stuck.bin") == \
        (hashlib.sha256(chunk * 12).hexdigest(), 12 * MIB)
    assert (m.warm / "stuck.bin").is_symlink()


class WarmSampler(PeakSampler):
    """Samples the bytes a warm-tier entry holds while a write runs."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                st = os.lstat(self.hot)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):  # the stub that replaces it is a symlink: not data
                self.peak = max(self.peak, st.st_blocks * 512)
            time.sleep(0.01)


@pytest.mark.slow
def test_a_file_just_past_the_default_threshold_never_touches_the_warm_tier(
        tmp_path: Path) -> None:
    size = 10 * 1024**3 + MIB
    # The local-folder bucket joins the parts into the object: both are on disk at the end.
    needed, free = 2 * size + 1024**3, shutil.disk_usage(tmp_path).free
    if free < needed:
        pytest.fail(f"this test needs {needed / 1024**3:.1f} GiB free under {tmp_path}, "
                    f"{free / 1024**3:.1f} GiB are (earlier runs' folders under "
                    f"{tmp_path.parent.parent} may hold it)")
    (tmp_path / "cold").mkdir()
    try:
        _write_past_the_default_threshold(tmp_path, size)
    finally:  # (pytest keeps a failed test's folder: not 10 GiB of it)
        shutil.rmtree(tmp_path / "cold", ignore_errors=True)


def _write_past_the_default_threshold(tmp_path: Path, size: int) -> None:
    # The real default threshold; streaming starts early so the hot tier stays in its window.
    m = make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}", "--stream-after",
                   "64MiB")
    with short_of_room(m, "80m") as m.hot, running(m):
        with PeakSampler(m.hot) as hot, WarmSampler(m.warm / "model.ckpt") as warm:
            digest = write_random(m.path / "model.ckpt", size, seed=3)
        assert warm.peak == 0, "file data reached the warm tier"
        # Default window: 4 parts of 16 MiB, plus the write request in flight.
        assert hot.peak <= 4 * 16 * MIB + MIB, hot.peak
        assert (m.warm / "model.ckpt").is_symlink()
        obj = tmp_path / "cold" / "model.ckpt"
        assert obj.stat().st_size == size
        h = hashlib.sha256()
        with open(obj, "rb") as f:
            while block := f.read(16 * MIB):
                h.update(block)
        assert h.hexdigest() == digest
        assert os.stat(m.path / "model.ckpt").st_size == size


def test_stream_after_bounds_the_hot_tier_and_small_files_come_back_warm(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "64MiB", "--stream-after", "10MiB", "--part-size", "5MiB",
                   "--upload-window", str(WINDOW))
    with short_of_room(m, "20m") as m.hot, running(m):
        with PeakSampler(m.hot) as sampler:
            digest = write_random(m.path / "mid.bin", 30 * MIB, seed=4)
        assert sampler.peak <= WINDOW * PART + MIB, sampler.peak
        # Below the threshold in the end: a plain warm file, and no object left behind.
        assert not (m.warm / "mid.bin").is_symlink()
        assert hashlib.sha256((m.warm / "mid.bin").read_bytes()).hexdigest() == digest
        assert hashlib.sha256((m.path / "mid.bin").read_bytes()).hexdigest() == digest
        listed = s3_server.client().list_objects_v2(Bucket=bucket)
        assert listed.get("KeyCount", 0) == 0
        assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("cache_warm", ["true", "false"])
def test_a_reader_open_while_a_file_comes_back_warm_reads_its_bytes(
        tmp_path: Path, s3_server: S3Server, bucket: str, cache_warm: str) -> None:
    """A handle open across the publish that brings a streamed file back to the warm tier
    reads the new warm file after it (with warm blocks cached: under the new file's identity,
    not the replaced one's)."""
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "64MiB", "--stream-after", "10MiB", "--part-size", "5MiB",
                   "--cache-warm", cache_warm)
    body = os.urandom(30 * MIB)
    with running(m):
        path = m.path / "mid.bin"
        path.write_bytes(b"the version before")  # an existing warm file, rewritten
        writer = os.open(path, os.O_WRONLY | os.O_TRUNC)
        reader = os.open(path, os.O_RDONLY)
        try:
            for offset in range(0, len(body), MIB):
                os.write(writer, body[offset:offset + MIB])
            os.close(writer)
            assert not (m.warm / "mid.bin").is_symlink(), "the test needs it back on warm"
            os.posix_fadvise(reader, 0, 0, os.POSIX_FADV_DONTNEED)  # read it from tierfs
            got = b"".join(os.pread(reader, MIB, offset) for offset in range(0, len(body), MIB))
            assert len(got) == len(body) and got == body
        finally:
            os.close(reader)


def test_a_cold_file_rewritten_and_coming_back_warm_keeps_its_mode(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """A cold file rewritten, streamed early and small in the end is copied back to the warm
    tier over its stub: it takes the stub's mode, not its symlink's (0777, before)."""
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "20MiB", "--stream-after", "6MiB", "--part-size", "5MiB")
    with running(m):
        path = m.path / "f.bin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.write(fd, os.urandom(24 * MIB))
        finally:
            os.close(fd)
        assert (m.warm / "f.bin").is_symlink()
        body = os.urandom(12 * MIB)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            for offset in range(0, len(body), MIB):
                os.write(fd, body[offset:offset + MIB])
        finally:
            os.close(fd)
        assert not (m.warm / "f.bin").is_symlink()
        assert stat.S_IMODE(os.stat(m.warm / "f.bin").st_mode) == 0o640
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert path.read_bytes() == body


def test_a_file_streaming_to_the_bucket_cannot_get_a_second_name(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """It will be a stub, and a stub has one name (a link would keep the old content under
    the other one); the file keeps its one name and its bytes."""
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "6MiB", "--part-size", "5MiB")
    body = os.urandom(8 * MIB)
    with running(m):
        fd = os.open(m.path / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, body)  # past the threshold: streaming
            with pytest.raises(PermissionError):
                os.link(m.path / "big.bin", m.path / "other.bin")
        finally:
            os.close(fd)
        assert not (m.path / "other.bin").exists()
        assert (m.warm / "big.bin").is_symlink()
        assert (m.path / "big.bin").read_bytes() == body


def test_path_rules_pin_files_to_a_tier(tmp_path: Path, s3_server: S3Server,
                                        bucket: str) -> None:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "8MiB", "--part-size", "5MiB", "--rules", "ckpt/**=cold", "--rules",
                   "keep/*=warm")
    with running(m):
        (m.path / "ckpt" / "step1").mkdir(parents=True)
        (m.path / "keep").mkdir()
        (m.path / "ckpt" / "step1" / "small.pt").write_bytes(b"tiny checkpoint")
        big = os.urandom(12 * MIB)
        (m.path / "keep" / "big.bin").write_bytes(big)
        assert (m.warm / "ckpt" / "step1" / "small.pt").is_symlink()
        body = s3_server.client().get_object(Bucket=bucket, Key="tierfs/ckpt/step1/small.pt")
        assert body["Body"].read() == b"tiny checkpoint"
        assert (m.path / "ckpt" / "step1" / "small.pt").read_bytes() == b"tiny checkpoint"
        assert not (m.warm / "keep" / "big.bin").is_symlink()
        assert (m.warm / "keep" / "big.bin").read_bytes() == big
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == ["tierfs/ckpt/step1/small.pt"]
        # Emptied while it streams: still an object (the rule says so), an empty one.
        with open(m.path / "ckpt" / "step1" / "empty.pt", "wb") as f:
            f.write(b"x" * 1000)
            f.flush()
            os.ftruncate(f.fileno(), 0)
        assert (m.warm / "ckpt" / "step1" / "empty.pt").is_symlink()
        assert (m.path / "ckpt" / "step1" / "empty.pt").read_bytes() == b""


@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_a_streaming_file_truncated_small_comes_back_to_the_warm_tier(
        tmp_path: Path, s3_server: S3Server, bucket: str, durability: str) -> None:
    """A file past the threshold, cut back below it before any part left staging (to zero,
    say, which no multipart upload can hold): its upload is dropped and it is published on the
    warm tier, even while another handle keeps it open."""
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "4KiB", "--durability", durability)
    with running(m):
        for size in (0, 100):
            path = m.path / f"f{size}"
            path.write_bytes(b"")
            held = os.open(path, os.O_RDWR)
            body = os.urandom(4200)
            path.write_bytes(body)
            os.truncate(path, size)
            os.close(held)
            with open(path, "ab") as f:  # an open for writing waits for any write-back
                f.write(b"!")
            assert path.read_bytes() == body[:size] + b"!"
        m.stop()
        for size in (0, 100):
            assert (m.warm / f"f{size}").read_bytes().endswith(b"!")
        assert not s3_server.client().list_objects_v2(Bucket=bucket).get("Contents")
        assert not s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads")
        m.start()


def test_posix_fallocate_past_the_threshold_routes_the_file(big_mount: Mount,
                                                            s3_server: S3Server) -> None:
    # pyfuse3 has no fallocate operation: fallocate(2) is refused, and glibc's
    # posix_fallocate falls back to writing, which routes the file like any write.
    bucket = big_mount.bucket  # type: ignore[attr-defined]
    fd = os.open(big_mount.path / "prealloc.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, 0, 20 * MIB)
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["tierfs/prealloc.bin"]
    os.close(fd)
    head = s3_server.client().head_object(Bucket=bucket, Key="tierfs/prealloc.bin")
    assert head["ContentLength"] == 20 * MIB


def stream_mount(tmp_path: Path, proxy: FaultProxy, bucket: str, *extra: str) -> Mount:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/tierfs", "--endpoint-url",
                   proxy.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "8MiB", "--part-size", "5MiB", "--upload-window", str(WINDOW), *extra)
    m.bucket = bucket  # type: ignore[attr-defined]
    return m


def abort_uploads(proxy: FaultProxy, bucket: str) -> int:
    """Abort every unfinished upload, as a bucket lifecycle rule would, through the proxy (which
    then answers for them as S3 does); how many there were."""
    import boto3
    client = boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1")
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    for u in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    return len(uploads)


def test_a_completion_whose_answer_was_lost_is_found_done(
        big_mount: Mount, proxy: FaultProxy, s3_server: S3Server) -> None:
    """The bucket completed the object, but its answer never came: asked again, the server
    (like some S3-compatible ones; moto and S3 answer a repeated completion with success) no
    longer knows the upload. The object carries the upload's token: tierfs sees it is its own."""
    m = big_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    proxy.forget_completed = True
    data = os.urandom(12 * MIB)
    fd = os.open(m.path / "ckpt.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.fsync(fd)  # the parts so far are in: the next POST is the completion
    proxy.fail("POST", "lose", 1)
    os.close(fd)
    assert proxy.faults_served == 1
    assert object_digest(s3_server, bucket, "tierfs/ckpt.bin") == \
        (hashlib.sha256(data).hexdigest(), len(data))
    assert (m.warm / "ckpt.bin").is_symlink()
    assert (m.path / "ckpt.bin").read_bytes() == data
    assert abort_uploads(proxy, bucket) == 0


def test_an_upload_created_twice_for_a_lost_answer_publishes_and_leaves_only_an_empty_one(
        big_mount: Mount, proxy: FaultProxy, s3_server: S3Server) -> None:
    """The bucket created the upload, but its answer never came: the create is sent again
    (by botocore) and makes a second upload, the one used. The file is published whole; the
    first upload, whose id nobody knows, holds no part, so it stores nothing, and is left to
    a bucket lifecycle rule: aborting the key's uploads without parts could abort another
    node's upload of the same file before its first part (docs/architecture.md)."""
    m = big_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    data = os.urandom(12 * MIB)
    proxy.fail("POST", "lose", 1)  # the first POST is the upload's creation
    with open(m.path / "ckpt.bin", "wb") as f:
        f.write(data)
    assert proxy.faults_served == 1
    assert object_digest(s3_server, bucket, "tierfs/ckpt.bin") == \
        (hashlib.sha256(data).hexdigest(), len(data))
    assert (m.warm / "ckpt.bin").is_symlink()
    client = s3_server.client()
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert len(left) == 1
    assert not client.list_parts(Bucket=bucket, Key=left[0]["Key"],
                                 UploadId=left[0]["UploadId"]).get("Parts")


@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_an_upload_dropped_after_parts_left_staging_fails_once_and_keeps_the_rest(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server,
        durability: str) -> None:
    """Parts already punched out of staging exist nowhere once the bucket drops the upload:
    the writer gets EIO (sync) or the log says so (write-back), the file keeps its previous
    content, what is still staged goes to lost+found, and nothing retries for ever (the
    unmount at the end would hang)."""
    m = stream_mount(tmp_path, proxy, bucket, "--durability", durability)
    data = os.urandom(12 * MIB)
    with short_of_room(m, "20m") as m.hot:
        with running(m):
            (m.path / "ckpt.bin").write_bytes(b"previous")
            fd = os.open(m.path / "ckpt.bin", os.O_WRONLY | os.O_TRUNC)
            os.write(fd, data)
            os.fsync(fd)  # parts 1 and 2 (10 MiB) are in the bucket and out of staging
            assert abort_uploads(proxy, bucket) == 1
            if durability == "sync":
                with pytest.raises(OSError) as info:
                    os.close(fd)
                assert info.value.errno == errno.EIO
            else:
                os.close(fd)  # staged: the loss shows in the background
            lost = m.hot / "lost+found"
            deadline = time.monotonic() + 60
            while not (lost.is_dir() and len(list(lost.iterdir())) == 2):
                assert time.monotonic() < deadline, "the staged rest was never set aside"
                time.sleep(0.05)
            [kept] = [p for p in lost.iterdir() if p.suffix != ".txt"]
            assert kept.read_bytes()[10 * MIB:] == data[10 * MIB:]
            assert (m.path / "ckpt.bin").read_bytes() == b"previous"
            assert not (m.warm / "ckpt.bin").is_symlink()
            assert list((m.hot / "staging").iterdir()) == []
        assert "dropped the unfinished upload" in (m.hot / "tierfs.log").read_text()
        assert abort_uploads(proxy, bucket) == 0
        assert bucket_objects(s3_server, bucket) == []


def test_an_upload_dropped_before_any_part_left_staging_starts_again(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    m = stream_mount(tmp_path, proxy, bucket, "--durability", "writeback")
    data = os.urandom(12 * MIB)
    with running(m):
        proxy.fail("PUT", "503")  # no part gets in, so none leaves staging
        with open(m.path / "ckpt.bin", "wb") as f:
            f.write(data)
        assert abort_uploads(proxy, bucket) == 1
        proxy.heal()
        deadline = time.monotonic() + 90
        while not (m.warm / "ckpt.bin").is_symlink():
            assert time.monotonic() < deadline, "write-back never completed the file"
            time.sleep(0.1)
        assert object_digest(s3_server, bucket, "tierfs/ckpt.bin") == \
            (hashlib.sha256(data).hexdigest(), len(data))
        assert (m.path / "ckpt.bin").read_bytes() == data
        assert not (m.hot / "lost+found").exists()
    assert abort_uploads(proxy, bucket) == 0


def bucket_objects(s3_server: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=bucket).get("Contents", [])]


def test_a_file_whose_upload_could_not_start_still_goes_to_the_bucket(
        big_mount: Mount, proxy: FaultProxy, s3_server: S3Server) -> None:
    """Sync mode: the bucket refuses the HEAD that picks the object's key, so the write that
    passes the threshold fails (EIO) and the data stays staged. The close then starts the
    upload: a file past the threshold never lands on the warm tier."""
    m = big_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    data = os.urandom(10 * MIB)
    proxy.fail("HEAD", "403")
    fd = os.open(m.path / "late.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        failed = None
        for start in range(0, len(data), MIB):
            try:
                os.pwrite(fd, data[start:start + MIB], start)
            except OSError as e:
                assert e.errno == errno.EIO
                failed = start
                break
        assert failed is not None and proxy.faults_served >= 1
        proxy.heal()
    finally:
        os.close(fd)  # no write since: the close itself must start the upload
    # (The write that failed was done in staging before the upload could not start; the
    # content of a range whose write failed is unspecified on any file system.)
    data = data[:failed + MIB]
    assert (m.warm / "late.bin").is_symlink()
    assert object_digest(s3_server, bucket, "tierfs/late.bin") == \
        (hashlib.sha256(data).hexdigest(), len(data))
    assert (m.path / "late.bin").read_bytes() == data
