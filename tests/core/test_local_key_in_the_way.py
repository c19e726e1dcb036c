"""Local-folder bucket: a key chosen when an upload starts may no longer be possible when the
upload completes, because an object has taken the name of one of the key's folders in the
meantime. Here a directory is renamed while a file in it streams, and a new file is then
written under the directory's old name (or the other way round: a file renamed away while it
streams, and a directory with files made under its old name). A key is a path in a local
folder, and an object cannot also be a folder of other objects. So the completion failed
with the store's FileExistsError (IsADirectoryError) on every try (close, write-back,
``tierfs flush``, unmount), and the file was never published, though its data stayed staged.
Now the store says ``KeyInTheWay``, and the upload completes at a key chosen by the same rule
as a new object's (the suffix goes on the folder in the way). The journal records that key
first, so recovery finds the object after a crash."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import MIB, PART, ROOT, core_test, open_core
from .test_streaming import SMALL, content


@core_test
async def test_an_upload_whose_key_folder_an_object_took_completes_at_another_key(
        tmp_path: Path) -> None:
    big = content(2 * PART + MIB, seed=1)
    other = content(PART + MIB, seed=2)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.mkdirs(b"d")
        fh = await core.create(b"d/f")
        await core.write_all(fh, big)  # streaming now, to the key d/f
        assert core.journal() and next(iter(core.journal().values())).upload.key == "d/f"
        await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)  # the directory moves on
        await core.write_file(b"d", other)  # a new file under the old name: the key d
        assert core.cold(b"d").key == "d" and core.objects()["d"] == other
        failures = []
        try:
            await core.close(fh)
        except OSError as e:
            failures.append(e)
        for _ in range(3):  # every later try (write-back, tierfs flush, unmount) the same
            failures += [e for _, e in await core.publish_all()]
        stub = core.stub(b"e/f")
        assert not failures, f"e/f never published: {failures!r}"
        assert stub is not None and core.objects()[stub.key] == big
        # Past the object in the way, as a new object's key would be; that object is intact.
        assert re.fullmatch(r"d~[0-9a-f]{12}/f", stub.key), stub.key
        assert core.objects()["d"] == other and core.cold(b"d").key == "d"
        assert not core.uploads() and not core.journal()
        assert await core.read_file(b"e/f") == big


@core_test
async def test_recovery_completes_such_an_upload_at_another_key(tmp_path: Path) -> None:
    """The same at recovery: the file was fsynced while it streamed, and tierfs stopped before
    its close. Recovery completes the upload through the same code, so it moves past the object
    in the way too."""
    big = content(2 * PART + MIB, seed=3)
    other = content(PART + MIB, seed=4)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        await core.mkdirs(b"d")
        fh = await core.create(b"d/f")
        await core.write_all(fh, big)
        await core.fs.fsync(fh)  # recovery completes the upload up to here
        await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)
        await core.write_file(b"d", other)
        core.crash()
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        report = await core.recover()
        assert report.uploaded == 1 and not report.failed, report
        stub = core.stub(b"e/f")
        assert stub is not None and re.fullmatch(r"d~[0-9a-f]{12}/f", stub.key), stub
        assert core.objects()[stub.key] == big and core.objects()["d"] == other
        assert not core.uploads() and not core.journal()


@core_test
async def test_an_upload_whose_key_objects_made_a_folder_completes_at_another_key(
        tmp_path: Path) -> None:
    """The other way round: a file streams to the key ``d``, is renamed away, and a directory
    ``d`` with a file in it takes the name; that file's object makes ``d`` a folder of the
    bucket, where no object can be made any more."""
    big = content(2 * PART + MIB, seed=5)
    other = content(PART + MIB, seed=6)
    async with open_core(tmp_path, large_file_threshold=SMALL) as core:
        fh = await core.create(b"d")
        await core.write_all(fh, big)  # streaming now, to the key d
        await core.fs.rename(ROOT, b"d", ROOT, b"e", 0)
        await core.mkdirs(b"d")
        await core.write_file(b"d/x", other)
        assert core.cold(b"d/x").key == "d/x"
        failures = []
        try:
            await core.close(fh)
        except OSError as e:
            failures.append(e)
        failures += [e for _, e in await core.publish_all()]
        assert not failures, f"e never published: {failures!r}"
        stub = core.stub(b"e")
        assert stub is not None and re.fullmatch(r"d~[0-9a-f]{12}", stub.key), stub
        assert core.objects()[stub.key] == big and core.objects()["d/x"] == other
        assert not core.uploads() and not core.journal()
