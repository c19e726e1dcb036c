"""Parts recovery uploads and records must survive a recovery killed before the completion.
During recovery a commit did not mark the acknowledgement log's records as held by the index
(only the end of recovery did), so the next mount read the entry from the log again with no
part recorded; the hot tier being short of room, the parts had been punched out of staging,
and their holes were uploaded again: the file read back as zeros. Recovery now commits what it
starts from first (``Journal.taken_over``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfs.index import Index
from tierfs.transfer import streaming
from tierfs.write import entries as journal_module

from .conftest import MIB, PART, core_test, open_core
from .test_streaming import SMALL, content


class Crash(Exception):
    pass


@core_test
async def test_parts_recorded_by_recovery_survive_a_crash_during_recovery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = content(2 * PART + MIB, seed=31)
    conf = dict(durability="writeback", large_file_threshold=SMALL)
    async with open_core(tmp_path, **conf) as core:
        await core.recover()  # (write-back closes are logged from now on)
        core.store.fail_always("upload_part")  # no part goes up before the crash
        core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
        await core.write_file(b"f", data)  # acknowledged in the log
        (entry,) = core.journal().values()
        assert entry.upload is not None and entry.upload.upload_id and not entry.upload.parts
        core.crash()

    monkeypatch.setattr(streaming, "free_bytes", lambda fd: 0)  # hot tier short of room
    async with open_core(tmp_path, **conf) as again:
        real = again.store.complete_multipart

        def die(*args: object) -> object:
            raise Crash()

        again.store.complete_multipart = die  # type: ignore[method-assign]
        again.crash()
        try:
            await again.recover()
        except Crash:
            pass
        del real
    monkeypatch.undo()
    index = Index(tmp_path / "hot" / "index")
    try:
        (alone,) = journal_module.load(index).values()
        (merged,) = journal_module.load(index, tmp_path / "hot" / "index" / "acks").values()
    finally:
        index.close()
    assert sorted(alone.upload.parts) == [1, 2, 3]  # recorded and committed by recovery...
    seen = sorted(merged.upload.parts)  # ...and what the next mount reads (was: [])

    async with open_core(tmp_path, **conf) as third:
        await third.recover()
        got = await third.read_file(b"f")
        assert got == data, (f"{got.count(0)} zero bytes of {len(got)}; parts the "
                             f"journal named at mount: {seen}")
