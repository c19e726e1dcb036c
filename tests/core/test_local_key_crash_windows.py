"""A local-folder upload whose key was blocked, completed at a new key: a crash in the live
path between recording the new key and completing, and between completing at it and putting
the stub in place. Recovery must find the object (by the recorded key and the upload's token),
name it in the stub, and leave no other object or upload behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import MIB, PART, ROOT, core_test, open_core
from .test_streaming import SMALL, content


class Crash(Exception):
    pass


@pytest.mark.parametrize("when", ["before-complete", "after-complete"])
@core_test
async def test_crash_around_completion_at_a_moved_key(tmp_path: Path, when: str) -> None:
    big = content(2 * PART + MIB, seed=21)
    other = content(PART + MIB, seed=22)
    moved: list[str] = []
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.mkdirs(b"d")
        fh = await core.create(b"d/f")
        await core.write_all(fh, big)
        await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)
        await core.write_file(b"d", other)
        store = core.store
        real = store.complete_multipart

        def complete(key: str, upload_id: str, parts: list) -> object:
            if key not in ("d/f", "d"):
                moved.append(key)
                if when == "before-complete":
                    raise Crash()
                real(key, upload_id, parts)
                raise Crash()
            return real(key, upload_id, parts)

        store.complete_multipart = complete  # type: ignore[method-assign]
        core.crash()
        with pytest.raises(Crash):
            await core.close(fh)
    assert moved
    async with open_core(tmp_path, large_file_threshold=SMALL) as again:
        report = await again.recover()
        assert report.failed == 0 and report.lost == 0, report
        stub = again.cold(b"e/f")
        assert stub.key == moved[0], (stub.key, moved)
        objects = again.objects()
        assert objects[stub.key] == big and objects["d"] == other
        assert set(objects) == {"d", stub.key}
        assert not again.uploads() and not again.journal()
        assert await again.read_file(b"e/f") == big
