"""The cold tier: an object-store bucket (S3, GCS or a local folder) behind its own threads.

Every store call blocks (boto3 or file I/O), so the filesystem reaches the store only through
``ColdTier.run``; the number of its threads bounds parallel GETs and part uploads. The store
itself is opened and checked at mount (``mounting.open_checked_store``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tierfs.objects.base import ObjectStore
from tierfs.tiers.base import Tier


class ColdTier(Tier):
    name = "cold"

    def __init__(self, store: ObjectStore, threads: int) -> None:
        super().__init__(threads)
        self.store = store
        #: Aborts an upload given up on. The core makes it owe the abort where the store
        #: fails (``core.garbage``): nothing else would know of the upload any more.
        self.abort_upload: Callable[[str, str], Awaitable[None]] = self._abort

    async def _abort(self, key: str, upload_id: str) -> None:
        await self.run(self.store.abort_multipart, key, upload_id)

