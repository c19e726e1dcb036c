"""Cold files through a real mount: stubs, imports and reads against moto's S3 server (over
HTTP on 127.0.0.1, through boto3; nothing is patched)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import Mount, S3Server, make_mount, running, tierfs

PREFIX = "tierfs"


@pytest.fixture
def cold_mount(tmp_path: Path, s3_server: S3Server, bucket: str) -> Iterator[Mount]:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/{PREFIX}", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path")
    m.bucket = bucket  # type: ignore[attr-defined]
    with running(m):
        yield m


def put(s3_server: S3Server, bucket: str, key: str, data: bytes, **meta: str) -> str:
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta)
    return s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def import_(m: Mount, uri: str, dest: str) -> str:
    return tierfs("import", uri, dest, "--warm", str(m.warm), "--hot", str(m.hot),
                  *m.extra).stdout


def exists(s3_server: S3Server, bucket: str, key: str) -> bool:
    found = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=key)
    return any(o["Key"] == key for o in found.get("Contents", []))


@pytest.fixture
def dataset(cold_mount: Mount, s3_server: S3Server) -> dict[str, bytes]:
    bucket = cold_mount.bucket  # type: ignore[attr-defined]
    files = {"train/a.bin": os.urandom(3 * 1024 * 1024 + 17), "train/b.bin": os.urandom(1000),
             "val/c.bin": b"", "meta.json": b'{"n": 3}'}
    for rel, data in files.items():
        put(s3_server, bucket, f"{PREFIX}/datasets/set1/{rel}", data, mode="0640",
            **{"mtime-ns": "1700000000000000000"})
    out = import_(cold_mount, f"s3://{bucket}/{PREFIX}/datasets/set1", "set1")
    assert "4 new" in out
    return files


def test_imported_objects_read_through_the_mount(cold_mount: Mount,
                                                 dataset: dict[str, bytes]) -> None:
    m = cold_mount
    for rel, data in dataset.items():
        on_warm = m.warm / "set1" / rel
        assert on_warm.is_symlink() and os.readlink(on_warm).startswith("tierfs:v1?")
        st = os.stat(m.path / "set1" / rel)
        assert stat.S_ISREG(st.st_mode) and st.st_size == len(data)
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_mtime_ns == 1700000000000000000
        assert (m.path / "set1" / rel).read_bytes() == data
    assert sorted(os.listdir(m.path / "set1")) == ["meta.json", "train", "val"]
    big = dataset["train/a.bin"]
    with open(m.path / "set1/train/a.bin", "rb") as f:
        f.seek(1024 * 1024 + 5)
        assert f.read(4096) == big[1024 * 1024 + 5:1024 * 1024 + 5 + 4096]


def test_import_is_idempotent_and_never_replaces_user_files(cold_mount: Mount,
                                                            dataset: dict[str, bytes],
                                                            s3_server: S3Server) -> None:
    m = cold_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    (m.warm / "set1" / "train" / "b.bin").unlink()
    (m.warm / "set1" / "train" / "b.bin").write_bytes(b"my own file")
    put(s3_server, bucket, f"{PREFIX}/datasets/set1/extra.bin", b"new object")
    out = import_(m, f"s3://{bucket}/{PREFIX}/datasets/set1", "set1")
    assert "1 new" in out and "0 updated" in out and "3 unchanged" in out and "1 in the way" in out
    assert (m.warm / "set1" / "train" / "b.bin").read_bytes() == b"my own file"
    assert (m.path / "set1" / "extra.bin").read_bytes() == b"new object"
    outside = tierfs("import", f"s3://{bucket}/elsewhere", "x", "--warm", str(m.warm),
                     "--hot", str(m.hot), *m.extra, check=False)
    assert outside.returncode == 1 and "not inside the configured bucket" in outside.stderr


def test_import_goes_past_keys_whose_names_the_warm_tier_cannot_hold(
        cold_mount: Mount, s3_server: S3Server) -> None:
    """S3 takes a name of 300 bytes between two slashes; a file system takes 255. Those
    objects are named in the report, and every other object is imported."""
    m = cold_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    base = f"{PREFIX}/datasets/long"
    put(s3_server, bucket, f"{base}/a.bin", b"a")
    put(s3_server, bucket, f"{base}/{'d' * 300}/b.bin", b"b")
    put(s3_server, bucket, f"{base}/{'f' * 300}", b"c")
    put(s3_server, bucket, f"{base}/z.bin", b"z")
    result = tierfs("import", f"s3://{bucket}/{base}", "long", "--warm", str(m.warm),
                    "--hot", str(m.hot), *m.extra, check=False)
    assert result.returncode == 0, result.stderr
    assert "2 new" in result.stdout and "2 with names too long" in result.stdout
    assert f"{base}/{'d' * 300}/b.bin" in result.stderr and f"{base}/{'f' * 300}" in result.stderr
    assert (m.path / "long" / "a.bin").read_bytes() == b"a"
    assert (m.path / "long" / "z.bin").read_bytes() == b"z"


def test_a_changed_object_is_never_read_as_the_old_file(cold_mount: Mount,
                                                        dataset: dict[str, bytes],
                                                        s3_server: S3Server) -> None:
    bucket = cold_mount.bucket  # type: ignore[attr-defined]
    put(s3_server, bucket, f"{PREFIX}/datasets/set1/train/b.bin", b"X" * 1000)
    with pytest.raises(OSError) as info:
        (cold_mount.path / "set1/train/b.bin").read_bytes()
    assert info.value.errno == errno.EIO
    assert "ETag" in cold_mount.log() or "changed" in cold_mount.log()


def _stub(uri: str, size: int = 3) -> str:
    return f"tierfs:v1?uri={quote(uri, safe='')}&size={size}&etag=abc&mode=0644&mtime_ns=1"


def test_crafted_stubs_are_refused(cold_mount: Mount, s3_server: S3Server) -> None:
    m = cold_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    put(s3_server, bucket, "secret/key", b"not yours")
    put(s3_server, bucket, f"{PREFIX}/ok", b"yes")
    crafted = {
        "other-bucket": _stub("s3://someone-else/tierfs/x"),
        "outside-prefix": _stub(f"s3://{bucket}/secret/key", 9),
        "dotdot": _stub(f"s3://{bucket}/{PREFIX}/../secret/key", 9),
        "local-path": _stub("file:///etc/passwd"),
        "garbage": "tierfs:v1?uri=",
        "future": "tierfs:v9?whatever",
    }
    for name, target in crafted.items():
        os.symlink(target, m.warm / name)
    names = os.listdir(m.path)
    for name in crafted:
        assert name not in names
        with pytest.raises(OSError) as info:
            os.stat(m.path / name)
        assert info.value.errno == errno.EIO, name
    assert "refusing stub" in m.log()
    with pytest.raises(OSError) as info:
        os.symlink(_stub(f"s3://{bucket}/{PREFIX}/ok"), m.path / "sneaky")
    assert info.value.errno == errno.EPERM


def test_namespace_operations_on_cold_files(cold_mount: Mount, dataset: dict[str, bytes],
                                            s3_server: S3Server) -> None:
    m = cold_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    key = f"{PREFIX}/datasets/set1/train/a.bin"
    # rename moves only the stub: the object keeps its key
    os.rename(m.path / "set1/train/a.bin", m.path / "set1/a-moved.bin")
    assert exists(s3_server, bucket, key)
    assert (m.path / "set1/a-moved.bin").read_bytes() == dataset["train/a.bin"]
    # chmod and utime rewrite the stub
    os.chmod(m.path / "set1/a-moved.bin", 0o600)
    os.utime(m.path / "set1/a-moved.bin", ns=(5, 1234567890))
    st = os.stat(m.path / "set1/a-moved.bin")
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == 1234567890
    assert "mode=0600" in os.readlink(m.warm / "set1/a-moved.bin")
    # writing in place stages the file and uploads it anew (tests/test_rewrite_cold.py);
    # rewriting with O_TRUNC makes a new file
    (m.path / "set1/meta.json").write_bytes(b"rewritten")
    assert not (m.warm / "set1/meta.json").is_symlink()
    assert (m.warm / "set1/meta.json").read_bytes() == b"rewritten"
    assert not exists(s3_server, bucket, f"{PREFIX}/datasets/set1/meta.json")
    # truncate below the threshold brings the file back to the warm tier
    os.truncate(m.path / "set1/a-moved.bin", 100)
    assert (m.warm / "set1/a-moved.bin").read_bytes() == dataset["train/a.bin"][:100]
    assert stat.S_IMODE(os.stat(m.warm / "set1/a-moved.bin").st_mode) == 0o600
    assert not exists(s3_server, bucket, key)
    # unlink deletes the object, after the last handle closes
    victim = m.path / "set1/train/b.bin"
    fd = os.open(victim, os.O_RDONLY)
    os.unlink(victim)
    assert exists(s3_server, bucket, f"{PREFIX}/datasets/set1/train/b.bin")
    assert os.pread(fd, 1000, 0) == dataset["train/b.bin"]
    os.close(fd)
    for _ in range(100):
        if not exists(s3_server, bucket, f"{PREFIX}/datasets/set1/train/b.bin"):
            break
        import time
        time.sleep(0.05)
    assert not exists(s3_server, bucket, f"{PREFIX}/datasets/set1/train/b.bin")
