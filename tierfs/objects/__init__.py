"""Object stores for the cold tier: one interface (base.py), S3 and GCS (s3.py), a local
folder (local.py)."""

from __future__ import annotations

from tierfs.objects.base import BucketURI, ObjectStore


def open_store(uri: BucketURI, endpoint_url: str | None = None, region: str | None = None,
               addressing_style: str = "auto") -> ObjectStore:
    """The store for a bucket URI (boto3 is imported only for s3:// and gs://)."""
    if uri.scheme == "file":
        from tierfs.objects.local import LocalStore
        return LocalStore(uri)
    from tierfs.objects.s3 import S3Store
    return S3Store(uri, endpoint_url, region, addressing_style)
