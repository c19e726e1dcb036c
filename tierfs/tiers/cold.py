"""The cold tier: an object-store bucket (S3, GCS or a local folder) behind its own threads.

Every store call blocks (boto3 or file I/O), so the filesystem reaches the store only through
``ColdTier.run``; the number of its threads bounds parallel GETs and part uploads.
"""

from __future__ import annotations

from pathlib import Path

from tierfs.config import Config
from tierfs.errors import MountError
from tierfs.objects import open_store
from tierfs.objects.base import ObjectStore, ObjectStoreError
from tierfs.objects.local import make_folders
from tierfs.tiers.base import Tier


class ColdTier(Tier):
    name = "cold"

    def __init__(self, store: ObjectStore, threads: int) -> None:
        super().__init__(threads)
        self.store = store


def open_checked_store(config: Config) -> ObjectStore:
    """The configured store, checked now: a missing bucket, refused credentials or an
    unreachable endpoint fail the mount with one line, not the first read."""
    uri = config.bucket
    if uri.scheme == "file" and "bucket" not in config.explicit:
        make_folders(Path(uri.bucket))  # the zero-config local folder, 0700
    store = open_store(uri, config.endpoint_url, config.region, config.addressing_style)
    try:
        store.check()
    except ObjectStoreError as e:
        raise MountError(f"cold tier {uri}: {e}") from None
    return store
