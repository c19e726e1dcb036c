"""Records of owed cleanups read at mount: one named otherwise than ``Owed.record`` names it
(``garbage/[key, upload_id]``, as a first version of this code did) is named anew, so that
its cleanup, once done, drops it; before, it was settled under the new name and kept, and
tried again for ever. A delete that names no version is dropped: tried again, it would delete
whatever the key holds by then."""

from __future__ import annotations

import json
from pathlib import Path

from tierfs.core.garbage import PREFIX, Owed

from .conftest import core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_a_record_of_the_previous_format_goes_once_its_cleanup_is_done(
        tmp_path: Path) -> None:
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", content(300_000))
        stub = core.cold(b"f")
        # What 72349cc wrote for a delete it owed (here: of an object already gone).
        old = Owed("gone-key", None, stub.etag)
        core.fs.core.batch.put("meta", PREFIX + json.dumps([old.key, old.upload_id]).encode(),
                               old.encode())
        await core.fs.save_index()
    async with open_core(tmp_path, store=core.store, large_file_threshold=SMALL) as again:
        await again.recover()
        await again.fs.save_index()
        owed = again.fs.core.garbage.owed
        stored = [k for k, _ in again.fs.core.index.items("meta") if k.startswith(PREFIX)]
        assert not owed and not stored, f"a done cleanup is kept: {list(owed)}, {stored}"


@core_test
async def test_a_versionless_delete_left_by_72349cc_does_not_delete_a_live_object(
        tmp_path: Path) -> None:
    """72349cc owed deletes with no ETag (a rewritten cold file's replaced object); 1279f79
    stopped making them, as data loss, but the next mount still loads and runs those left in
    the index: ``_clean`` deletes whatever the key names by then."""
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.write_file(b"f", data)
        key = core.cold(b"f").key
        old = Owed(key)  # owed by 72349cc for an earlier object at that key
        core.fs.core.batch.put("meta", PREFIX + json.dumps([old.key, old.upload_id]).encode(),
                               old.encode())
        await core.fs.save_index()
    async with open_core(tmp_path, store=core.store, large_file_threshold=SMALL) as again:
        await again.recover()
        assert again.objects() == {key: data}, "the live file's object was deleted"
