"""``tierfs import`` into a namespace whose stubs already own objects: a stub that names another
object is a live file and is left alone, and no object gets a second stub (removing either
would delete the data the other still reads). Real mounts, with the bucket on moto's S3 server
or a local folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

import tierfs.importer as importer
from conftest import Mount, S3Server, make_mount, running, tierfs
from tierfs.config import load_config
from tierfs.mounting import open_checked_store

PREFIX = "tierfs"


@pytest.fixture
def s3_mount(tmp_path: Path, s3_server: S3Server, bucket: str) -> Iterator[Mount]:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/{PREFIX}", "--endpoint-url",
                   s3_server.endpoint, "--addressing-style", "path",
                   "--large-file-threshold", "4KiB")
    m.bucket = bucket  # type: ignore[attr-defined]
    with running(m):
        yield m


@pytest.fixture
def folder_mount(tmp_path: Path) -> Iterator[Mount]:
    (tmp_path / "cold").mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{tmp_path}/cold",
                   "--large-file-threshold", "4KiB")
    m.cold = tmp_path / "cold"  # type: ignore[attr-defined]
    with running(m):
        yield m


def key_of(stub: Path) -> str:
    """The key a stub on the warm tier names."""
    target = os.readlink(stub)
    assert target.startswith("tierfs:v1?"), target
    uri = unquote_plus(target.split("uri=", 1)[1].split("&", 1)[0])
    return uri.split("/", 3)[3]


def checkpoint(m: Mount, data: bytes) -> None:
    """The checkpoint pattern: written to ckpt.tmp/, then renamed whole."""
    (m.path / "ckpt.tmp").mkdir(exist_ok=True)
    (m.path / "ckpt.tmp" / "model.pt").write_bytes(data)


def test_import_leaves_a_live_file_alone_and_gives_its_object_no_second_stub(
        s3_mount: Mount) -> None:
    m = s3_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    old, new = os.urandom(100_000), os.urandom(120_000)
    checkpoint(m, old)
    os.rename(m.path / "ckpt.tmp", m.path / "ckpt-100")
    checkpoint(m, new)
    assert key_of(m.warm / "ckpt-100" / "model.pt") == f"{PREFIX}/ckpt.tmp/model.pt"
    new_key = key_of(m.warm / "ckpt.tmp" / "model.pt")
    assert new_key.startswith(f"{PREFIX}/ckpt.tmp/model.pt~")

    result = tierfs("import", f"s3://{bucket}/{PREFIX}", str(m.path))
    out = result.stdout
    assert "0 new" in out and "0 updated" in out and "1 in the way" in out, out
    assert "1 already named by a stub" in out, out
    # The live file is reported, and the object it names is reported with its stub.
    assert str(m.warm / "ckpt.tmp" / "model.pt") in result.stderr
    assert new_key in result.stderr
    assert sorted(os.listdir(m.warm / "ckpt.tmp")) == ["model.pt"]
    assert key_of(m.warm / "ckpt.tmp" / "model.pt") == new_key

    assert (m.path / "ckpt.tmp" / "model.pt").read_bytes() == new
    assert (m.path / "ckpt-100" / "model.pt").read_bytes() == old
    # Each object has one stub: removing one file leaves the other readable.
    os.unlink(m.path / "ckpt.tmp" / "model.pt")
    assert (m.path / "ckpt-100" / "model.pt").read_bytes() == old
    checkpoint(m, new)
    os.unlink(m.path / "ckpt-100" / "model.pt")
    assert (m.path / "ckpt.tmp" / "model.pt").read_bytes() == new


def test_an_object_whose_stub_moved_out_of_the_destination_gets_no_second_stub(
        s3_mount: Mount, s3_server: S3Server) -> None:
    """The stub that owns an object can be anywhere in the namespace, not only under the
    directory imported into."""
    m = s3_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    old = os.urandom(100_000)
    checkpoint(m, old)
    os.rename(m.path / "ckpt.tmp", m.path / "ckpt-100")
    for uri, dest in ((f"s3://{bucket}/{PREFIX}/ckpt.tmp", m.path / "ckpt.tmp"),
                      (f"s3://{bucket}/{PREFIX}", m.path)):
        result = tierfs("import", uri, str(dest))
        assert "0 new" in result.stdout and "1 already named by a stub" in result.stdout, \
            result.stdout
        assert str(m.warm / "ckpt-100" / "model.pt") in result.stderr
        assert not (m.warm / "ckpt.tmp" / "model.pt").is_symlink()
    os.unlink(m.path / "ckpt-100" / "model.pt")
    # The object went with its only stub.
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)


def test_a_changed_object_still_updates_its_own_stub_beside_a_live_file(
        s3_mount: Mount, s3_server: S3Server) -> None:
    """A stub that names the object's own key follows the object when it changes; one that
    names another object does not, in the same run."""
    m = s3_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    checkpoint(m, os.urandom(100_000))
    os.rename(m.path / "ckpt.tmp", m.path / "ckpt-100")
    new = os.urandom(120_000)
    checkpoint(m, new)
    s3_server.client().put_object(Bucket=bucket, Key=f"{PREFIX}/ds/a.bin", Body=b"first")
    assert "1 new" in tierfs("import", f"s3://{bucket}/{PREFIX}/ds",
                             str(m.path / "ds")).stdout
    s3_server.client().put_object(Bucket=bucket, Key=f"{PREFIX}/ds/a.bin", Body=b"second")
    out = tierfs("import", f"s3://{bucket}/{PREFIX}", str(m.path)).stdout
    assert "1 updated" in out and "1 in the way" in out, out
    assert (m.path / "ds" / "a.bin").read_bytes() == b"second"
    assert (m.path / "ckpt.tmp" / "model.pt").read_bytes() == new


def test_one_dataset_imported_twice_or_after_a_rename_keeps_one_stub_per_object(
        folder_mount: Mount) -> None:
    """Objects put by other tools: the second import, elsewhere or after a file was moved,
    adds no stub for an object that one names already."""
    m = folder_mount
    cold: Path = m.cold  # type: ignore[attr-defined]
    src = f"file://{cold}"
    (cold / "sub").mkdir()
    (cold / "a.bin").write_bytes(b"a" * 10)
    (cold / "sub" / "b.bin").write_bytes(b"b" * 10)
    assert "2 new" in tierfs("import", src, str(m.path / "one")).stdout
    result = tierfs("import", src, str(m.path / "two"))
    assert "0 new" in result.stdout and "2 already named by a stub" in result.stdout, \
        result.stdout
    assert str(m.warm / "one" / "sub" / "b.bin") in result.stderr
    assert not (m.warm / "two" / "a.bin").is_symlink()
    os.rename(m.path / "one" / "a.bin", m.path / "moved.bin")
    result = tierfs("import", src, str(m.path / "one"))
    assert "0 new" in result.stdout and "1 unchanged" in result.stdout, result.stdout
    assert "1 already named by a stub" in result.stdout
    assert not (m.warm / "one" / "a.bin").is_symlink()
    os.unlink(m.path / "moved.bin")
    os.unlink(m.path / "one" / "sub" / "b.bin")
    assert not (cold / "a.bin").exists() and not (cold / "sub" / "b.bin").exists()


def test_importing_again_keeps_what_a_stub_says_of_its_file(
        s3_mount: Mount, s3_server: S3Server) -> None:
    """A stub of an unchanged object is left as it is (the mode narrowed through the mount,
    the mtime of the file's write); one whose object changed follows it and keeps the file's
    mode. Rebuilt from the object's metadata, the stub was opened to others again."""
    m = s3_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    (m.path / "ds").mkdir()
    data = os.urandom(100_000)
    (m.path / "ds" / "a.bin").write_bytes(data)  # streamed to the bucket
    os.chmod(m.path / "ds" / "a.bin", 0o600)
    before = os.readlink(m.warm / "ds" / "a.bin")
    out = tierfs("import", f"s3://{bucket}/{PREFIX}/ds", str(m.path / "ds")).stdout
    assert "0 updated" in out and "1 unchanged" in out, out
    assert os.readlink(m.warm / "ds" / "a.bin") == before
    assert (m.path / "ds" / "a.bin").stat().st_mode & 0o777 == 0o600
    s3_server.client().put_object(Bucket=bucket, Key=f"{PREFIX}/ds/a.bin", Body=b"changed")
    out = tierfs("import", f"s3://{bucket}/{PREFIX}/ds", str(m.path / "ds")).stdout
    assert "1 updated" in out, out
    assert (m.path / "ds" / "a.bin").read_bytes() == b"changed"
    assert (m.path / "ds" / "a.bin").stat().st_mode & 0o777 == 0o600


NAMES = ("a.bin", "b.bin", "c.bin")


def _import_racing(m: Mount, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch,
                   race: Callable[[], None]) -> importer.ImportResult:
    """Import a.bin, b.bin and c.bin, change all three in the bucket, and import again with
    ``race`` (another node's doing) run just after the rename of b.bin's updated stub."""
    bucket = m.bucket  # type: ignore[attr-defined]
    for name in NAMES:
        s3_server.client().put_object(Bucket=bucket, Key=f"{PREFIX}/ds/{name}", Body=b"old")
    assert "3 new" in tierfs("import", f"s3://{bucket}/{PREFIX}/ds", str(m.path / "ds")).stdout
    for name in NAMES:
        s3_server.client().put_object(Bucket=bucket, Key=f"{PREFIX}/ds/{name}",
                                      Body=f"new {name}".encode())
    real, raced = importer.placed, []

    def racing(dfd: int, name: bytes, made: os.stat_result) -> os.stat_result:
        if name == b"b.bin" and not raced:
            raced.append(name)
            race()
        return real(dfd, name, made)

    monkeypatch.setattr(importer, "placed", racing)
    config = load_config(None, {"hot": str(m.hot), "warm": str(m.warm),
                                "bucket": f"s3://{bucket}/{PREFIX}",
                                "endpoint_url": s3_server.endpoint, "addressing_style": "path"})
    result = importer.import_objects(config, open_checked_store(config), f"{PREFIX}/ds", ["ds"])
    monkeypatch.undo()
    assert raced
    return result


def test_a_file_put_in_place_of_a_stub_being_updated_is_in_the_way_and_the_import_goes_on(
        s3_mount: Mount, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node renames a new file onto a stub just as the import renames the stub's
    update over it: the swap's check finds another file at the name (ESTALE). That file is
    a live one, left as it is and counted in the way; the other stubs are still brought up
    to date. The import stopped at that file, leaving the stubs after it stale."""
    m = s3_mount
    names = NAMES
    written = os.urandom(50_000)

    def put_in_place() -> None:  # another node: mv new b.bin, after the rename
        (m.warm / "ds" / "new").write_bytes(written)
        os.rename(m.warm / "ds" / "new", m.warm / "ds" / "b.bin")

    result = _import_racing(m, s3_server, monkeypatch, put_in_place)
    assert (result.updated, result.conflicts) == (2, [str(m.warm / "ds" / "b.bin")]), result
    assert sorted(os.listdir(m.warm / "ds")) == list(names)  # (no temp name left behind)
    assert not (m.warm / "ds" / "b.bin").is_symlink()
    assert (m.path / "ds" / "b.bin").read_bytes() == written
    for name in ("a.bin", "c.bin"):
        assert (m.path / "ds" / name).read_bytes() == f"new {name}".encode()


def test_a_stub_moved_away_as_it_is_updated_is_in_the_way_and_the_import_goes_on(
        s3_mount: Mount, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node moves the stub elsewhere just after the import renamed its update into
    place: the swap's check finds no file at the name (ENOENT). Counted in the way, and the
    import goes on to the stubs after it; it stopped there."""
    m = s3_mount

    def move_away() -> None:  # another node: mv b.bin moved.bin, after the rename
        os.rename(m.warm / "ds" / "b.bin", m.warm / "ds" / "moved.bin")

    result = _import_racing(m, s3_server, monkeypatch, move_away)
    assert (result.updated, result.conflicts) == (2, [str(m.warm / "ds" / "b.bin")]), result
    assert sorted(os.listdir(m.warm / "ds")) == ["a.bin", "c.bin", "moved.bin"]
    assert (m.path / "ds" / "moved.bin").read_bytes() == b"new b.bin"  # (the update moved)
    for name in ("a.bin", "c.bin"):
        assert (m.path / "ds" / name).read_bytes() == f"new {name}".encode()
