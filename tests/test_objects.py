"""The object-store contract, run against the local-folder store and against S3 (moto's server
over HTTP, through boto3), plus URI parsing, retries and mount-time checks."""

from __future__ import annotations

import base64
import functools
import os
import re
import stat
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import botocore.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import S3Server
from s3proxy import FaultProxy
from tierfs.config import build_config
from tierfs.errors import ConfigError
from tierfs.objects import open_store
from tierfs.objects.base import (MAX_KEY_BYTES, MAX_PARTS, MIN_PART_SIZE, KeyInTheWay,
                                 NoSuchObject, ObjectChanged, ObjectStore, ObjectStoreError,
                                 TransientError, UploadGone, parse_bucket_uri, part_size_for)
from tierfs.objects.retry import retry_transient
from tierfs.objects.s3 import classify
from tierfs.mounting import open_checked_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        (tmp_path / "bucket").mkdir()
        s = open_store(parse_bucket_uri(f"file://{tmp_path}/bucket"))
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        name = request.getfixturevalue("bucket")
        s = open_store(parse_bucket_uri(f"s3://{name}/data"), endpoint_url=server.endpoint,
                       region="us-east-1", addressing_style="path")
    s.check()
    return s


def test_put_head_get_list_delete(store: ObjectStore) -> None:
    key = store.uri.key("dir/a.bin")
    data = os.urandom(100_000)
    info = store.put(key, data, {"mode": "0644", "mtime-ns": "123"})
    assert info.size == len(data) and info.etag
    head = store.head(key)
    assert head.etag == info.etag and head.size == len(data)
    assert head.metadata == {"mode": "0644", "mtime-ns": "123"}
    assert store.get_range(key, 0, len(data)) == data
    assert store.get_range(key, 1000, 5000, etag=info.etag) == data[1000:6000]
    assert store.get_range(key, len(data) - 10, 100) == data[-10:]
    store.put(store.uri.key("dir/b.bin"), b"b")
    assert [o.key for o in store.list_objects(store.uri.key("dir/"))] == \
        [store.uri.key("dir/a.bin"), store.uri.key("dir/b.bin")]
    store.delete(key)
    store.delete(key)  # deleting twice is fine
    with pytest.raises(NoSuchObject):
        store.head(key)
    with pytest.raises(NoSuchObject):
        store.get_range(key, 0, 1)


def test_a_changed_object_is_never_read_with_the_old_etag(store: ObjectStore) -> None:
    key = store.uri.key("f")
    old = store.put(key, b"old contents")
    new = store.put(key, b"new contents!")
    assert new.etag != old.etag
    with pytest.raises(ObjectChanged):
        store.get_range(key, 0, 4, etag=old.etag)
    assert store.get_range(key, 0, 4, etag=new.etag) == b"new "


def test_multipart_upload(store: ObjectStore) -> None:
    key = store.uri.key("big/model.pt")
    parts_data = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), os.urandom(12345)]
    upload = store.create_multipart(key, {"mode": "0600"})
    assert (key, upload) in store.list_multipart(store.uri.key(""))
    parts = [(n, store.upload_part(key, upload, n, d)) for n, d in enumerate(parts_data, 1)]
    info = store.complete_multipart(key, upload, parts)
    whole = b"".join(parts_data)
    assert info.size == len(whole)
    assert store.get_range(key, 0, len(whole)) == whole
    assert store.head(key).metadata == {"mode": "0600"}
    assert store.list_multipart(store.uri.key("")) == []
    other = store.create_multipart(store.uri.key("abandoned"))
    store.upload_part(store.uri.key("abandoned"), other, 1, b"x")
    store.abort_multipart(store.uri.key("abandoned"), other)
    assert store.list_multipart(store.uri.key("")) == []
    with pytest.raises(NoSuchObject):
        store.head(store.uri.key("abandoned"))


def test_s3_multipart_parts_carry_their_checksums_to_the_bucket(s3_server: S3Server,
                                                               bucket: str) -> None:
    """Each part goes with its CRC32, which the bucket keeps: the object's checksum is the
    composite of the parts' (as boto3's upload_file makes it)."""
    store = open_store(parse_bucket_uri(f"s3://{bucket}/data"), endpoint_url=s3_server.endpoint,
                       region="us-east-1", addressing_style="path")
    assert store.part_checksum == "CRC32"
    key = store.uri.key("checked.bin")
    parts_data = [os.urandom(MIN_PART_SIZE), os.urandom(1000)]
    upload = store.create_multipart(key, checksum=store.part_checksum)
    parts = [(n, store.upload_part(key, upload, n, d, store.part_checksum))
             for n, d in enumerate(parts_data, 1)]
    crcs = [base64.b64encode(zlib.crc32(d).to_bytes(4, "big")).decode() for d in parts_data]
    assert [receipt.split(" ")[1] for _, receipt in parts] == [f"CRC32:{c}" for c in crcs]
    store.complete_multipart(key, upload, parts)
    head = s3_server.client().head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    composite = b"".join(base64.b64decode(c) for c in crcs)
    expected = base64.b64encode(zlib.crc32(composite).to_bytes(4, "big")).decode()
    assert head["ChecksumCRC32"].split("-")[0] == expected
    assert store.get_range(key, 0, MIN_PART_SIZE + 1000) == b"".join(parts_data)


def test_s3_uploads_keep_no_checksums_when_boto3_sends_them_only_when_required(
        s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    store = open_store(parse_bucket_uri(f"s3://{bucket}/data"), endpoint_url=s3_server.endpoint,
                       region="us-east-1", addressing_style="path")
    assert store.part_checksum is None
    key = store.uri.key("plain.bin")
    upload = store.create_multipart(key)
    receipt = store.upload_part(key, upload, 1, b"abc")
    assert " " not in receipt
    assert store.complete_multipart(key, upload, [(1, receipt)]).size == 3


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_checksums_go_to_s3_and_not_to_gcs(scheme: str, proxy: FaultProxy,
                                           bucket: str) -> None:
    """GCS's S3 interface refuses the checksums boto3 adds by default: a gs:// store sends
    none (a multipart upload and a put, through a proxy that records the headers), while an
    s3:// store sends each part's CRC32."""
    store = open_store(parse_bucket_uri(f"{scheme}://{bucket}/data"),
                       endpoint_url=proxy.endpoint, region="us-east-1",
                       addressing_style="path")
    key = store.uri.key("big.bin")
    upload = store.create_multipart(key, checksum=store.part_checksum)
    parts = [(1, store.upload_part(key, upload, 1, os.urandom(MIN_PART_SIZE),
                                   store.part_checksum)),
             (2, store.upload_part(key, upload, 2, b"tail", store.part_checksum))]
    store.complete_multipart(key, upload, parts)
    store.put(store.uri.key("small.bin"), b"small")
    assert store.get_range(key, MIN_PART_SIZE, 4) == b"tail"
    sent = {(method, header) for method, header, _ in proxy.checksum_headers}
    if scheme == "gs":
        assert store.part_checksum is None
        assert not sent, f"checksum headers sent to GCS: {sorted(sent)}"
    else:
        assert store.part_checksum == "CRC32"
        assert ("PUT", "x-amz-checksum-crc32") in sent


def _unknown_uploads_are_gone(store: ObjectStore, forget: Callable[[str], None]) -> None:
    """Parts and completions of an upload the store does not know raise UploadGone (an
    aborted one, and one it never had); aborting such an upload is not an error."""
    key = store.uri.key("big.bin")
    upload = store.create_multipart(key)
    receipt = store.upload_part(key, upload, 1, b"abc")
    store.abort_multipart(key, upload)
    forget(upload)
    never = store.create_multipart(key)
    store.abort_multipart(key, never)
    forget(never)
    for uid in (upload, never):
        with pytest.raises(UploadGone):
            store.upload_part(key, uid, 2, b"more")
        with pytest.raises(UploadGone):
            store.complete_multipart(key, uid, [(1, receipt)])
        store.abort_multipart(key, uid)
    with pytest.raises(NoSuchObject):
        store.head(key)


def test_a_local_folder_knows_no_upload_after_its_abort(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    store = open_store(parse_bucket_uri(f"file://{tmp_path}/bucket"))
    store.check()
    _unknown_uploads_are_gone(store, lambda upload_id: None)
    key = store.uri.key("other.bin")
    upload = store.create_multipart(key)
    receipt = store.upload_part(key, upload, 1, b"abc")
    with pytest.raises(ObjectStoreError, match="part 2"):  # (not the OS's own error)
        store.complete_multipart(key, upload, [(1, receipt), (2, receipt)])


def test_s3_no_such_upload_is_upload_gone(proxy: FaultProxy, bucket: str) -> None:
    """S3 answers 404 NoSuchUpload for an upload it does not know (the proxy answers as S3
    does; moto's own answer is a 500)."""
    store = open_store(parse_bucket_uri(f"s3://{bucket}/data"), endpoint_url=proxy.endpoint,
                       region="us-east-1", addressing_style="path")
    _unknown_uploads_are_gone(store, proxy.gone_uploads.add)


def test_missing_bucket_fails_the_check(s3_server: S3Server, tmp_path: Path) -> None:
    s = open_store(parse_bucket_uri("s3://no-such-bucket-here"), endpoint_url=s3_server.endpoint,
                   region="us-east-1", addressing_style="path")
    with pytest.raises(ObjectStoreError, match="bucket no-such-bucket-here does not exist"):
        s.check()
    with pytest.raises(ObjectStoreError, match="does not exist"):
        open_store(parse_bucket_uri(f"file://{tmp_path}/nowhere")).check()


def test_unreachable_endpoint_fails_the_check_after_retries(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import tierfs.objects.retry as retry
    monkeypatch.setattr(retry, "MAX_DELAY", 0.01)
    port = _closed_port()
    s = open_store(parse_bucket_uri("s3://b"), endpoint_url=f"http://127.0.0.1:{port}",
                   region="us-east-1")
    with pytest.raises(TransientError, match="connection"):
        s.check()


def _closed_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_what_counts_as_transient() -> None:
    def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")

    for code, status in (("SlowDown", 503), ("InternalError", 500), ("RequestTimeout", 400)):
        assert isinstance(classify(client_error(code, status)), TransientError)
    assert isinstance(classify(ConnectionResetError()), TransientError)
    assert isinstance(classify(botocore.exceptions.EndpointConnectionError(
        endpoint_url="http://x")), TransientError)
    assert isinstance(classify(client_error("NoSuchKey", 404)), NoSuchObject)
    assert isinstance(classify(client_error("PreconditionFailed", 412)), ObjectChanged)
    denied = classify(client_error("AccessDenied", 403))
    assert isinstance(denied, ObjectStoreError) and not isinstance(denied, TransientError)
    assert classify(ValueError("a bug")) is None


def test_retry_gives_up_after_its_attempts_and_passes_bugs_through() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    @retry_transient(classify, attempts=4, sleep=sleeps.append)
    def flaky(n_failures: int) -> str:
        calls.append(1)
        if len(calls) <= n_failures:
            raise ConnectionResetError()
        return "ok"

    assert flaky(3) == "ok" and len(calls) == 4 and len(sleeps) == 3
    calls.clear()
    with pytest.raises(TransientError):
        flaky(10)
    assert len(calls) == 4

    @retry_transient(classify, sleep=sleeps.append)
    def buggy() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        buggy()


def test_bucket_uris() -> None:
    uri = parse_bucket_uri("s3://bucket/some/prefix/")
    assert (uri.scheme, uri.bucket, uri.prefix) == ("s3", "bucket", "some/prefix")
    assert uri.key("a/b") == "some/prefix/a/b"
    assert uri.contains("some/prefix/a/b")
    assert not uri.contains("some/prefix/../other/x")
    assert not uri.contains("other/x")
    assert not uri.contains("some/prefixed/x")
    assert parse_bucket_uri("gs://b").prefix == ""
    assert parse_bucket_uri("file:///srv/objects").bucket == "/srv/objects"
    for bad in ("http://b/x", "s3:///nobucket", "file://relative/x", "b/x"):
        with pytest.raises(ConfigError):
            parse_bucket_uri(bad)


def test_part_sizes_keep_any_file_within_the_part_limit() -> None:
    assert part_size_for(0) == MIN_PART_SIZE
    for size in (10 * 1024**3, 5 * 1024**4):
        part = part_size_for(size)
        assert part >= MIN_PART_SIZE and -(-size // part) <= MAX_PARTS


_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                 min_size=1, max_size=300).filter(lambda n: n not in (".", ".."))


@functools.cache
def _store_for(prefix: str, local_root: str | None) -> ObjectStore:
    if local_root is not None:
        return open_store(parse_bucket_uri(f"file://{local_root}"))
    return open_store(parse_bucket_uri(f"s3://b/{prefix}"), endpoint_url="http://127.0.0.1:9",
                      region="us-east-1", addressing_style="path")  # (no request is made)


@settings(max_examples=300, deadline=None)
@given(names=st.lists(_names, min_size=1, max_size=25), prefix=st.sampled_from(["", "data",
       "deep/" + "p" * 200]), local=st.booleans())
def test_a_fitted_key_is_one_the_store_takes_and_stays_under_the_prefix(
        names: list[str], prefix: str, local: bool, tmp_path_factory: pytest.TempPathFactory
        ) -> None:
    store = _store_for("" if local else prefix,
                       str(tmp_path_factory.getbasetemp()) if local else None)
    key = store.uri.key("/".join(names))
    fitted = store.fit_key(key)
    limit = store.max_name_bytes
    assert len(fitted.encode()) <= MAX_KEY_BYTES
    assert limit is None or all(len(n.encode()) <= limit for n in fitted.split("/"))
    assert store.uri.contains(fitted)
    assert store.fit_key(fitted) == fitted and store.fit_key(key) == fitted
    if len(key.encode()) <= MAX_KEY_BYTES and (
            limit is None or all(len(n.encode()) <= limit for n in names)):
        assert fitted == key  # a key that fits is never changed
    else:
        name = fitted.rsplit("/", 1)[-1]
        assert re.fullmatch(r".+~[0-9a-f]{12}", name, re.DOTALL), name
        assert name.startswith(names[-1][0])  # the file's own name, cut


def test_a_local_object_in_the_way_of_a_folder_is_named(tmp_path: Path) -> None:
    """A local folder cannot hold an object ``ckpt`` and an object ``ckpt/model.pt``; S3 can.
    The HEAD of the second says which object is in the way."""
    (tmp_path / "bucket").mkdir()
    store = open_store(parse_bucket_uri(f"file://{tmp_path}/bucket"))
    store.put("run/ckpt", b"old checkpoint")
    with pytest.raises(KeyInTheWay) as caught:
        store.head("run/ckpt/shard/model.pt")
    assert caught.value.at == "run/ckpt"
    with pytest.raises(NoSuchObject):
        store.head("run/ckpt~1/shard/model.pt")


def test_a_local_upload_whose_key_is_blocked_completes_at_another_key(tmp_path: Path) -> None:
    """An object (or a folder of objects) made at a key's folder (or at the key) after its
    upload was created: the completion says which object is in the way, as a HEAD does,
    rather than the OS's FileExistsError; and a local upload is not bound to its key, so it
    completes at another one, whole."""
    (tmp_path / "bucket").mkdir()
    store = open_store(parse_bucket_uri(f"file://{tmp_path}/bucket"))
    for key, taken, at in [("d/f", "d", "d"), ("g", "g/x", "g")]:
        upload = store.create_multipart(key, {"mode": "0600"})
        parts = [(1, store.upload_part(key, upload, 1, b"the data"))]
        store.put(taken, b"another file")
        with pytest.raises(KeyInTheWay) as caught:
            store.complete_multipart(key, upload, parts)
        assert caught.value.at == at
        info = store.complete_multipart(f"{at}~1{key[len(at):]}", upload, parts)
        assert store.get_range(info.key, 0, 100) == b"the data"
        assert info.metadata == {"mode": "0600"} and store.head(taken).size == 12
    assert store.list_multipart("") == []
    assert os.listdir(store.work) == []  # (no temp file left by the failed tries)


def test_the_store_layer_does_not_import_the_fuse_library() -> None:
    """The stores, the index and the block cache work without pyfuse3 (tools that only read a
    bucket or an index should not need the FUSE library)."""
    code = ("import sys, tierfs.objects.base, tierfs.objects.local, tierfs.objects.s3, "
            "tierfs.index, tierfs.cache.blocks, tierfs.tiers.hot, tierfs.tiers.cold; "
            "print('pyfuse3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "False"


def test_a_local_folder_bucket_is_closed_to_other_users(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The zero-config bucket, its folders and objects, finished and unfinished uploads, made
    under the daemon's umask 0: folders 0700, files 0600 (they were 0777 and 0666)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("ANYSCALE_ARTIFACT_STORAGE", raising=False)
    old = os.umask(0)
    try:
        config = build_config({}, {"hot": str(tmp_path / "hot")})
        assert config.bucket.scheme == "file"
        store = open_checked_store(config)
        store.put(store.uri.key("a/b/small.txt"), b"small")
        key = store.uri.key("c/d/big.bin")
        upload = store.create_multipart(key)
        store.complete_multipart(key, upload, [(1, store.upload_part(key, upload, 1, b"x"))])
        unfinished = store.create_multipart(key)
        store.upload_part(key, unfinished, 1, b"y")
    finally:
        os.umask(old)
    loose = []
    for dirpath, dirnames, filenames in os.walk(tmp_path / "data"):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) != want:
                loose.append(f"{os.path.join(dirpath, name)} {stat.filemode(st.st_mode)}")
    assert loose == []
    assert store.get_range(key, 0, 1) == b"x"


def test_a_local_folder_keeps_no_folder_its_deletes_leave_empty(tmp_path: Path) -> None:
    """A bucket has no folders: once a folder's last object is deleted (a pruned checkpoint),
    the folder goes too, up to the bucket's own folder, which stays."""
    (tmp_path / "bucket").mkdir()
    store = open_store(parse_bucket_uri(f"file://{tmp_path}/bucket"))
    store.check()
    store.put("run/ckpt_1/shard/model.pt", b"a")
    store.put("run/ckpt_1/meta.json", b"b")
    store.put("run/ckpt_2/model.pt", b"c")
    store.delete("run/ckpt_1/shard/model.pt")
    assert not (tmp_path / "bucket/run/ckpt_1/shard").exists()
    assert (tmp_path / "bucket/run/ckpt_1/meta.json").exists()
    store.delete("run/ckpt_1/meta.json")
    assert sorted(os.listdir(tmp_path / "bucket/run")) == ["ckpt_2"]
    store.delete("run/ckpt_2/model.pt")
    store.delete("run/ckpt_2/model.pt")  # (a missing object: nothing to do, no error)
    assert sorted(os.listdir(tmp_path / "bucket")) == [".tierfs-uploads"]


def test_a_local_put_survives_deletes_pruning_its_folder(tmp_path: Path) -> None:
    """Puts and deletes in one folder from several threads (the daemon's workers): a delete
    that prunes the folder between a put's making it and its rename does not fail the put."""
    import threading

    (tmp_path / "bucket").mkdir()
    store = open_store(parse_bucket_uri(f"file://{tmp_path}/bucket"))
    store.check()
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        try:
            for i in range(300):
                key = f"run/ckpt/{n}-{i}"
                store.put(key, b"x")
                assert store.get_range(key, 0, 1) == b"x"
                store.delete(key)
        except BaseException as e:  # (reported by the test, not lost in the thread)
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(os.listdir(tmp_path / "bucket")) == [".tierfs-uploads"]
