"""S3, and Google Cloud Storage through its S3-compatible endpoint, via boto3.

One client per store, created at mount: boto3 clients are thread-safe (sessions are not), and
worker threads share it. Credentials come from boto3's usual chain (environment, shared files,
instance roles); for gs:// that means GCS HMAC keys in the same places.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions

from tierfs.objects.base import (COPIED_FROM, MAX_COPY_SIZE, BucketURI, MetadataFixed,
                                 NoSuchObject, ObjectChanged, ObjectInfo, ObjectStore,
                                 ObjectStoreError, TransientError, UploadGone, is_copy_of)
from tierfs.objects.retry import retry_transient

GCS_ENDPOINT = "https://storage.googleapis.com"

_TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable",
                    "SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "Throttling"}
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "InvalidToken", "ExpiredToken"}


def classify(error: BaseException) -> BaseException | None:
    """Map a boto3/network error to tierfs's store errors (TransientError: retry it)."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _TRANSIENT_CODES or status in _TRANSIENT_CODES:
            return TransientError(f"{code or status} from the object store")
        if code == "NoSuchUpload":
            return UploadGone("the multipart upload no longer exists")
        if code in _MISSING_CODES or (status == "404" and code != "NoSuchBucket"):
            return NoSuchObject(code or "not found")
        if code in ("PreconditionFailed", "412") or status == "412":
            return ObjectChanged("the object changed (ETag mismatch)")
        if code == "NoSuchBucket":
            return ObjectStoreError("the bucket does not exist")
        if code in _DENIED_CODES or status == "403":
            return ObjectStoreError(f"access denied by the object store ({code or status})")
        return ObjectStoreError(f"object store error {code or status}")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return ObjectStoreError("no credentials found (set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, a profile, or an instance role)")
    if isinstance(error, (botocore.exceptions.EndpointConnectionError,
                          botocore.exceptions.ConnectionClosedError,
                          botocore.exceptions.ReadTimeoutError,
                          botocore.exceptions.ConnectTimeoutError,
                          botocore.exceptions.ResponseStreamingError,
                          urllib3.exceptions.ProtocolError,
                          urllib3.exceptions.ReadTimeoutError,
                          ConnectionError, socket.timeout)):
        return TransientError(f"connection problem: {type(error).__name__}")
    if isinstance(error, OSError) and error.errno in (errno.ECONNRESET, errno.EPIPE,
                                                      errno.ETIMEDOUT):
        return TransientError(f"connection problem: {error}")
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return ObjectStoreError(str(error))
    return None


def _etag(value: str) -> str:
    return value.strip('"')


class S3Store(ObjectStore):
    def __init__(self, uri: BucketURI, endpoint_url: str | None = None,
                 region: str | None = None, addressing_style: str = "auto",
                 max_connections: int = 64) -> None:
        super().__init__(uri)
        if uri.scheme == "gs" and endpoint_url is None:
            endpoint_url = GCS_ENDPOINT
        # GCS's S3 interface refuses the checksums boto3 adds to uploads by default (parts are
        # answered SignatureDoesNotMatch, completions PreconditionFailed): for gs://, boto3
        # sends them only where an operation requires them, as it did before version 1.36.
        checksums = ({"request_checksum_calculation": "when_required",
                      "response_checksum_validation": "when_required"}
                     if uri.scheme == "gs" else {})
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 3},
            s3={"addressing_style": addressing_style},
            max_pool_connections=max_connections,
            connect_timeout=10, read_timeout=60, **checksums)
        self.endpoint_url = endpoint_url
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.bucket = uri.bucket
        # As boto3's own upload_file does: S3 checks each part's CRC32 on arrival and keeps
        # them with the object. Left out where boto3 is told to send checksums only when
        # required (the usual setting for S3-compatible stores without them, and GCS's).
        if self.client.meta.config.request_checksum_calculation == "when_supported":
            self.part_checksum = "CRC32"

    def _info(self, key: str, response: Mapping[str, Any]) -> ObjectInfo:
        modified = response.get("LastModified")
        return ObjectInfo(key=key, size=int(response.get("ContentLength", response.get("Size", 0))),
                          etag=_etag(response["ETag"]),
                          mtime_ns=int(modified.timestamp() * 1e9) if modified else 0,
                          metadata=dict(response.get("Metadata", {})))

    def check(self) -> None:
        try:
            self._head_bucket()
        except NoSuchObject:  # HEAD on a bucket has no body: a bare 404 means no bucket
            raise ObjectStoreError(f"bucket {self.bucket} does not exist") from None
        except ObjectStoreError as e:
            raise type(e)(f"bucket {self.bucket}: {e}") from None

    @retry_transient(classify)
    def _head_bucket(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)

    @retry_transient(classify)
    def head(self, key: str) -> ObjectInfo:
        return self._info(key, self.client.head_object(Bucket=self.bucket, Key=key))

    @retry_transient(classify)
    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        if length <= 0:
            return b""
        args = {"Bucket": self.bucket, "Key": key,
                "Range": f"bytes={start}-{start + length - 1}"}
        if etag is not None:
            args["IfMatch"] = f'"{etag}"'
        response = self.client.get_object(**args)
        if etag is not None and _etag(response["ETag"]) != etag:
            raise ObjectChanged("the object changed (ETag mismatch)")
        return response["Body"].read()  # inside the retry: a reset mid-body is retried

    @retry_transient(classify)
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
            ) -> ObjectInfo:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                               Metadata=dict(metadata or {}))
        return self.head(key)

    def replace_metadata(self, key: str, etag: str, metadata: Mapping[str, str]) -> ObjectInfo:
        # S3 changes metadata only by copying the object onto itself, in one request up to
        # 5 GiB (a larger copy is a multipart upload of its own: not done here). The copy is
        # made only from version ``etag``; a multipart object's ETag changes.
        info = self.head(key)
        if info.etag != etag:
            raise ObjectChanged("the object changed (ETag mismatch)")
        if info.size > MAX_COPY_SIZE:
            raise MetadataFixed(f"{key}: S3 cannot give an object of more than 5 GiB new "
                                "metadata in place")
        # The copy names the version it was made from: a copy whose answer was lost is
        # found made, by whoever looks next (its retry, from a source gone, fails).
        marked = {**metadata, COPIED_FROM: etag}
        try:
            made = self._copy_onto_itself(key, etag, marked)
        except ObjectChanged:
            now = self.head(key)
            # Made by this call only if it holds what this call sent: another change from
            # the same version (a chown racing this one) would have its own metadata.
            sent = {name.lower(): value for name, value in marked.items()}
            if not is_copy_of(now, etag, info.size) or dict(now.metadata) != sent:
                raise
            return now
        if "ETag" not in made:
            return self.head(key)  # (a store that does not answer as S3 does)
        # (Its new ETag from the copy's answer: a HEAD after it failing would leave the
        # object changed and its stub naming the version it was copied from.)
        return self._info(key, {**made, "ContentLength": info.size, "Metadata": marked})

    @retry_transient(classify)
    def _copy_onto_itself(self, key: str, etag: str, metadata: Mapping[str, str]
                          ) -> Mapping[str, Any]:
        # The copy gets a whole-object checksum of its own: a multipart object's is one of
        # its parts' checksums, which would not match the copy's bytes when read back.
        extra = {"ChecksumAlgorithm": self.part_checksum} if self.part_checksum else {}
        response = self.client.copy_object(Bucket=self.bucket, Key=key,
                                           CopySource={"Bucket": self.bucket, "Key": key},
                                           CopySourceIfMatch=f'"{etag}"',
                                           Metadata=dict(metadata),
                                           MetadataDirective="REPLACE", **extra)
        return response.get("CopyObjectResult", {})  # type: ignore[no-any-return]

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            page = self._list_page(prefix, token)
            for item in page.get("Contents", []):
                yield self._info(item["Key"], item)
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    @retry_transient(classify)
    def _list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        args = {"Bucket": self.bucket, "Prefix": prefix}
        if token:
            args["ContinuationToken"] = token
        return self.client.list_objects_v2(**args)

    @retry_transient(classify)
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    @retry_transient(classify)
    def create_multipart(self, key: str, metadata: Mapping[str, str] | None = None,
                         checksum: str | None = None) -> str:
        extra = {"ChecksumAlgorithm": checksum} if checksum else {}
        response = self.client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                       Metadata=dict(metadata or {}), **extra)
        return str(response["UploadId"])

    @retry_transient(classify)
    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    checksum: str | None = None) -> str:
        extra = {"ChecksumAlgorithm": checksum} if checksum else {}
        response = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                           PartNumber=number, Body=data, **extra)
        etag = _etag(response["ETag"])
        if not checksum:
            return etag
        # The receipt: "<etag> <ALGORITHM>:<base64 checksum>" (no spaces in either).
        return f"{etag} {checksum}:{response[f'Checksum{checksum}']}"

    @retry_transient(classify)
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]
                           ) -> ObjectInfo:
        listed = []
        for number, receipt in parts:
            etag, _, checksum = receipt.partition(" ")
            part = {"PartNumber": number, "ETag": f'"{etag}"'}
            if checksum:
                algorithm, _, value = checksum.partition(":")
                part[f"Checksum{algorithm}"] = value
            listed.append(part)
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                              MultipartUpload={"Parts": listed})
        return self.head(key)

    @retry_transient(classify)
    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    @retry_transient(classify)
    def has_parts(self, key: str, upload_id: str) -> bool:
        try:
            page = self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                          MaxParts=1)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
            return False
        return bool(page.get("Parts"))

    @retry_transient(classify)
    def list_multipart(self, prefix: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        args = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self.client.list_multipart_uploads(**args)
            found += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
            if not page.get("IsTruncated"):
                return found
            args["KeyMarker"] = page["NextKeyMarker"]
            args["UploadIdMarker"] = page["NextUploadIdMarker"]
