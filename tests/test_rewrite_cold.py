"""Files in the bucket changed in place through a real mount (moto's S3 server over HTTP,
through boto3; nothing is patched), each step checked against the same calls on a plain
directory: random writes, appends and ftruncate on a cold file opened without O_TRUNC, as
pjdfstest's ftruncate tests and fsx with close and reopen do them."""

from __future__ import annotations

import errno
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, S3Server, make_mount, running, tmpfs

PREFIX = "t"
KIB = 1024
MIB = 1024 * KIB
THRESHOLD = 64 * KIB


def rewrite_mount(base: Path, s3_server: S3Server, bucket: str, *extra: str) -> Mount:
    m = make_mount(base, "--bucket", f"s3://{bucket}/{PREFIX}", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path", "--large-file-threshold",
                   "64KiB", "--part-size", "5MiB", "--attr-timeout", "0", "--entry-timeout",
                   "0", *extra)
    m.bucket = bucket  # type: ignore[attr-defined]
    return m


@pytest.fixture
def cold_mount(tmp_path: Path, s3_server: S3Server, bucket: str) -> Iterator[Mount]:
    with running(rewrite_mount(tmp_path, s3_server, bucket)) as m:
        yield m


def objects(s3_server: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3_server.client()
    found = client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/").get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for o in found}


def is_stub(m: Mount, name: str) -> bool:
    return os.path.islink(m.warm / name)


def fsize(fd: int) -> int:
    return os.fstat(fd).st_size


class Both:
    """One file under the mount and its twin in a plain directory, changed by the same calls;
    every result is compared."""

    def __init__(self, mount_file: Path, plain_file: Path) -> None:
        self.paths = (mount_file, plain_file)
        self.fds: tuple[int, int] | None = None

    def open(self, flags: int) -> None:
        assert self.fds is None
        self.fds = tuple(os.open(p, flags, 0o644) for p in self.paths)  # type: ignore[assignment]

    def close(self) -> None:
        assert self.fds is not None
        for fd in self.fds:
            os.close(fd)
        self.fds = None

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        """``fn(fd, *args)`` on both: the same result, or the same errno."""
        assert self.fds is not None
        outcomes = []
        for fd in self.fds:
            try:
                outcomes.append(("ok", fn(fd, *args)))
            except OSError as e:
                outcomes.append(("error", errno.errorcode[e.errno]))
        assert outcomes[0] == outcomes[1], (fn.__name__, args)
        return outcomes[0][1]

    def check(self) -> None:
        got, want = (p.read_bytes() for p in self.paths)
        assert len(got) == len(want)
        assert got == want
        sizes = [os.stat(p).st_size for p in self.paths]
        assert sizes[0] == sizes[1]


def test_a_cold_file_is_written_in_place_like_a_local_file(cold_mount: Mount, tmp_path: Path,
                                                           s3_server: S3Server) -> None:
    m = cold_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    (tmp_path / "plain").mkdir()
    f = Both(m.path / "f", tmp_path / "plain" / "f")
    data = os.urandom(300 * KIB)
    for p in f.paths:
        p.write_bytes(data)
    assert is_stub(m, "f")
    before = os.readlink(m.warm / "f")

    f.open(os.O_RDWR)
    assert f.call(os.pwrite, b"patched", 1000) == 7
    assert f.call(os.pread, 20, 995) is not None  # read back through the same handle
    assert f.call(fsize) == len(data)
    f.call(os.lseek, 0, os.SEEK_END)
    f.call(os.write, b"appended")
    f.close()
    f.check()
    assert is_stub(m, "f") and os.readlink(m.warm / "f") != before
    assert objects(s3_server, bucket) == {f"{PREFIX}/f": f.paths[1].read_bytes()}

    f.open(os.O_WRONLY | os.O_APPEND)
    f.call(os.write, b"more")
    f.close()
    f.check()
    assert objects(s3_server, bucket) == {f"{PREFIX}/f": f.paths[1].read_bytes()}
    assert stat.S_IMODE(os.stat(f.paths[0]).st_mode) == 0o644


def test_ftruncate_of_a_file_a_truncate_sent_to_the_bucket(cold_mount: Mount, tmp_path: Path,
                                                          s3_server: S3Server) -> None:
    # pjdfstest ftruncate/00.t: the file truncated past the threshold went to the bucket;
    # reopened without O_TRUNC, it is cut and extended again.
    m = cold_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    (tmp_path / "plain").mkdir()
    f = Both(m.path / "t", tmp_path / "plain" / "t")
    f.open(os.O_CREAT | os.O_RDWR)
    f.call(os.ftruncate, 1234567)
    f.close()
    f.check()
    assert is_stub(m, "t")
    f.open(os.O_RDWR)
    f.call(os.ftruncate, 567)
    assert f.call(fsize) == 567
    f.close()
    f.check()
    assert not is_stub(m, "t") and objects(s3_server, bucket) == {}  # small again: warm
    f.open(os.O_WRONLY)
    f.call(os.ftruncate, 2 * THRESHOLD)
    f.close()
    assert is_stub(m, "t")
    f.open(os.O_WRONLY)
    f.call(os.ftruncate, THRESHOLD + 1)
    f.call(os.pwrite, b"end", THRESHOLD - 2)
    f.close()
    f.check()
    assert objects(s3_server, bucket) == {f"{PREFIX}/t": f.paths[1].read_bytes()}


def test_fsx_style_random_changes_with_close_and_reopen(cold_mount: Mount, tmp_path: Path,
                                                        s3_server: S3Server) -> None:
    m = cold_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    rng = random.Random(20261203)
    (tmp_path / "plain").mkdir()
    f = Both(m.path / "fsx", tmp_path / "plain" / "fsx")
    f.open(os.O_CREAT | os.O_RDWR)
    size_limit = 4 * THRESHOLD  # sizes cross the threshold both ways
    went_cold = 0
    for _ in range(120):
        op = rng.random()
        if op < 0.35:
            offset = rng.randrange(size_limit)
            f.call(os.pwrite, rng.randbytes(rng.randrange(1, 16 * KIB)), offset)
        elif op < 0.5:
            f.call(os.ftruncate, rng.randrange(size_limit))
        elif op < 0.7:
            offset = rng.randrange(size_limit)
            f.call(os.pread, rng.randrange(1, 32 * KIB), offset)
        elif op < 0.75:
            f.call(os.fsync)
        else:
            f.close()
            f.check()
            went_cold += is_stub(m, "fsx")
            f.open(rng.choice([os.O_RDWR, os.O_WRONLY, os.O_RDWR | os.O_APPEND]))
            if rng.random() < 0.3:
                f.call(os.write, b"appended?")
    f.close()
    f.check()
    assert went_cold >= 3  # (the seed reopens the file several times while it is cold)
    held = objects(s3_server, bucket)
    if is_stub(m, "fsx"):
        assert held == {f"{PREFIX}/fsx": f.paths[1].read_bytes()}
    else:
        assert held == {}


def test_a_cold_file_larger_than_the_hot_tier_is_refused_with_enospc(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    with tmpfs(tmp_path / "tinyhot", "24m") as hot:
        m = rewrite_mount(tmp_path, s3_server, bucket, "--upload-window", "2")
        m.hot = hot
        data = os.urandom(30 * MIB)  # streams in 5 MiB parts: the hot tier holds two
        with running(m):
            (m.path / "big").write_bytes(data)
            assert is_stub(m, "big")
            fd = os.open(m.path / "big", os.O_RDWR)  # opening is fine: reads go to the bucket
            try:
                assert os.pread(fd, 10, 0) == data[:10]
                with pytest.raises(OSError) as e:
                    os.pwrite(fd, b"x", 0)
                assert e.value.errno == errno.ENOSPC
            finally:
                os.close(fd)
            assert "big is not staged to be changed" in m.log()
            assert (m.path / "big").read_bytes() == data  # unchanged
            (m.path / "small").write_bytes(b"still fine")
            assert (m.path / "small").read_bytes() == b"still fine"
