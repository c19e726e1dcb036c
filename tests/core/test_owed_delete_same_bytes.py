"""An owed delete is held to the version it was meant for, not to its ETag alone
(``core.garbage``). On S3 an ETag is a digest of the bytes, not a version: the same bytes
written again to the same key have the same ETag. A delete whose reply was lost (it took
effect) is owed; the file is written again, the same bytes, to the same key, free again; the
retry found "its" ETag there and deleted the live file's object. Now the owed delete also
keeps the upload token the HEAD before it saw (each upload its own), as
``ColdPublisher._delete_own`` does. (moto's S3 server, in its own process.)"""

from __future__ import annotations

from pathlib import Path

from tierfs.objects.base import parse_bucket_uri
from tierfs.objects.s3 import S3Store

from conftest import S3Server  # (tests/conftest.py)

from .conftest import ROOT, FaultStore, core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_an_owed_delete_keeps_the_same_bytes_written_again_at_its_key(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    uri = f"s3://{bucket}"
    s3 = S3Store(parse_bucket_uri(uri), endpoint_url=s3_server.endpoint, region="us-east-1")
    store = FaultStore(s3)
    data = content(300_000)
    async with open_core(tmp_path, store=store, bucket=uri,
                         large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data)
        stub = core.stub(b"f")
        assert stub is not None
        store.lose_reply("delete", 1)  # took effect, its reply lost: owed
        await core.fs.unlink(ROOT, b"f")
        assert len(core.fs.core.garbage.owed) == 1
        await core.write_file(b"f", data)  # the same bytes again (cp -a, a re-run build)
        again = core.stub(b"f")
        assert again is not None and again.key == stub.key
        assert again.etag == stub.etag  # (S3: a digest of the bytes)
        await core.fs.core.garbage.retry()  # (the upkeep job, five minutes later)
        keys = [info.key for info in s3.list_objects("")]
        assert keys == [stub.key], "the live file's object was deleted by an owed delete"
