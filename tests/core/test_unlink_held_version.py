"""The unlink of a cold file deletes its object only if the bucket still holds the version
the removed name's stub named (``held``), not the one this mount last parsed: another node
that rewrote the file under the same key put a stub naming its new object, and removing that
stub here must delete that object (compared with the old ETag, it was kept, named by
nothing, for ever)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .conftest import ROOT, core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_unlink_deletes_the_object_the_removed_stub_named(tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000, seed=1))
        await core.lookup_path(b"f")
        old = core.cold(b"f")
        # Another node rewrites the file under the same key, and puts its stub in place.
        inner = core.store.inner
        meta = inner.head(old.key).metadata
        info = inner.put(old.key, content(200_000, seed=2), meta)
        core.put_stub(b"f", dataclasses.replace(old, size=info.size, etag=info.etag))
        assert info.etag != old.etag
        # Removed here (the kernel's entry still valid: no new lookup).
        await core.fs.unlink(ROOT, b"f")
        assert core.warm_names() == []
        assert core.objects() == {}, "the object of the removed stub is left for ever"
