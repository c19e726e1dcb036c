"""A completion whose reply was lost is recognised by a HEAD of its key
(``StreamingUpload.completed_before``). When that HEAD itself fails (the bucket busy: 503s past
every retry), the bucket has not said the upload was dropped: the publish fails with EIO, the
data stays staged, and a later try asks again. Before, the failure was taken for "dropped":
with parts already freed from the hot tier the new content was thrown away (``lose_upload``)
though the bucket held it whole; without, it was uploaded a second time under another key and
the first object leaked."""

from __future__ import annotations

import errno

import pytest

from pathlib import Path

from .conftest import PART, core_test, open_core
from .test_streaming import SMALL, content, open_short


@core_test
async def test_a_failed_head_after_a_lost_completion_reply_loses_nothing(tmp_path: Path
                                                                         ) -> None:
    data = content(2 * PART + 1000)
    async with open_short(tmp_path, "12m", large_file_threshold=SMALL,
                          upload_window=2) as core:
        core.store.lose_reply("complete_multipart")  # completed, the reply lost
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        with pytest.raises(OSError) as e:
            await core.fs.flush(fh)
        assert e.value.errno == errno.EIO  # fine: the caller hears of it, data kept staged
        core.store.fail_always("head")  # the bucket answers HEADs with 503s for a while
        try:
            await core.fs.release(fh)  # the last release tries again
        except OSError:
            pass
        core.store.heal()
        # The bucket holds the whole file; a failed HEAD must only mean "try again".
        assert core.counter("uploads_lost") == 0, "the new content was thrown away"
        assert core.stub(b"f") is not None or core.journal(), \
            "neither published nor kept staged for another try"


@core_test
async def test_a_failed_head_after_a_lost_completion_reply_leaks_no_object(tmp_path: Path
                                                                          ) -> None:
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        core.store.lose_reply("complete_multipart")
        fh = await core.create(b"f")
        await core.write_all(fh, data)
        with pytest.raises(OSError):
            await core.fs.flush(fh)
        core.store.fail_nth("head", 1)  # the HEAD of completed_before
        try:
            await core.fs.release(fh)
        except OSError:
            pass
        assert await core.read_file(b"f") == data
        assert list(core.objects()) == [core.cold(b"f").key], \
            f"objects left that no stub names: {sorted(core.objects())}"


@core_test
async def test_recovery_keeps_acknowledged_data_when_the_head_of_its_completed_upload_fails(
        tmp_path: Path) -> None:
    """Write-back: the close was acknowledged, the completion went through before the crash
    (its reply lost). At recovery every recorded part counts as freed from staging, so one
    failed HEAD makes recovery throw the acknowledged content away (set aside, the file
    keeps its old content) while the bucket holds it whole, under no stub."""
    data = content(300_000)
    async with open_core(tmp_path, large_file_threshold=SMALL, durability="writeback") as core:
        core.store.lose_reply("complete_multipart")
        await core.write_file(b"f", data)  # acknowledged
        await core.until(lambda: core.counter("upload_errors") >= 1)
        assert core.objects() == {"f": data} and core.stub(b"f") is None
        core.crash()
        store = core.store
    store.heal()
    store.fail_nth("head", 1)  # recovery's HEAD of the key meets a 503 burst
    async with open_core(tmp_path, store, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.lost == 0, f"acknowledged data thrown away: {report}"
        assert again.stub(b"f") is not None or again.journal(), \
            "neither published nor kept for the next mount"
