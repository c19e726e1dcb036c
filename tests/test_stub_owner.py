"""Another user's stub copied into a link of one's own serves nothing: through a mount other
users may use (allow_other), with the bucket on moto's S3 server or a local folder. Root
plays the owner (bob); eve is nobody, in a subprocess."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from conftest import Mount, S3Server, make_mount, running

EVE = 65534
PREFIX = "tierfs"


def as_eve(code: str) -> subprocess.CompletedProcess:
    prelude = ("import os, errno\n"
               f"os.setgroups([]); os.setgid({EVE}); os.setuid({EVE})\n"
               "def code(fn, *a):\n"
               "    try:\n"
               "        fn(*a)\n"
               "    except OSError as e:\n"
               "        return e.errno\n"
               "    return 0\n"
               "def read(p):\n"
               "    with open(p, 'rb') as f:\n"
               "        return f.read()\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                          text=True, timeout=60)


def eve_codes(code: str) -> list[int]:
    result = as_eve(code)
    assert result.returncode == 0, result.stderr
    return [int(x) for x in result.stdout.split()]


def uri_of(stub: Path) -> str:
    """The URI of the object a stub on the warm tier names."""
    target = os.readlink(stub)
    assert target.startswith("tierfs:v1?"), target
    return unquote_plus(target.split("uri=", 1)[1].split("&", 1)[0])


@pytest.fixture(params=["folder", "s3"])
def open_mount(request: pytest.FixtureRequest) -> Iterator[Mount]:
    """A mount other users may use, on a path they can reach, large files cold."""
    base = Path(tempfile.mkdtemp(prefix="tierfs-owner-", dir="/tmp"))
    base.chmod(0o755)
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("bucket")
        args = ["--bucket", f"s3://{bucket}/{PREFIX}", "--endpoint-url", server.endpoint,
                "--addressing-style", "path"]
    else:
        (base / "cold").mkdir()
        args = ["--bucket", f"file://{base / 'cold'}"]
    try:
        with running(make_mount(base, "--allow-other", "--large-file-threshold", "4KiB",
                                *args)) as m:
            m.path.chmod(0o755)  # the mount's root is the warm root
            m.s3 = None  # type: ignore[attr-defined]
            if request.param == "s3":
                client = server.client()
                m.s3, m.bucket = client, bucket  # type: ignore[attr-defined]
                m.metadata = lambda stub: client.head_object(  # type: ignore[attr-defined]
                    Bucket=bucket, Key=uri_of(stub).split("/", 3)[3])["Metadata"]
            else:
                m.metadata = lambda stub: json.loads(  # type: ignore[attr-defined]
                    os.getxattr(uri_of(stub).removeprefix("file://"), "user.tierfs.metadata"))
            yield m
    finally:
        shutil.rmtree(base, ignore_errors=True)


def private_cold_file(m: Mount, name: str, data: bytes) -> Path:
    """Bob's (root's) file, mode 0600 from its creation, past the threshold: a stub."""
    p = m.path / name
    fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)
    assert (m.warm / name).is_symlink()
    return p


def eve_dir(m: Mount) -> Path:
    d = m.path / "eve"
    d.mkdir()
    os.chown(d, EVE, EVE)
    return d


def test_copied_stub_serves_nothing(open_mount: Mount) -> None:
    m = open_mount
    data = random.Random(1).randbytes(64 * 1024)
    private_cold_file(m, "bob.bin", data)
    eve_dir(m)
    stolen, own = m.path / "eve" / "stolen", m.path / "eve" / "own.bin"
    codes = eve_codes(
        f"os.symlink(os.readlink({str(m.warm / 'bob.bin')!r}), "
        f"{str(m.warm / 'eve' / 'stolen')!r})\n"
        f"print(code(read, {str(m.path / 'bob.bin')!r}))\n"
        f"print(code(read, {str(stolen)!r}))\n"
        f"print(code(os.chmod, {str(stolen)!r}, 0o644))\n"
        f"print(code(os.truncate, {str(stolen)!r}, 10))\n"
        f"open({str(own)!r}, 'wb').write(bytes(range(256)) * 64)\n"
        f"assert read({str(own)!r}) == bytes(range(256)) * 64\n"
        "print(0)\n")
    assert codes == [errno.EACCES, errno.EACCES, errno.EPERM, errno.EACCES, 0]
    assert (m.warm / "eve" / "own.bin").is_symlink()  # eve's own cold file: read back
    assert m.metadata(m.warm / "bob.bin")["mode"] == "0600"  # type: ignore[attr-defined]
    assert "refused eve/stolen" in m.log()
    assert (m.path / "bob.bin").read_bytes() == data
    # Removing her copy removes her link only: bob's object stays.
    assert eve_codes(f"print(code(os.unlink, {str(stolen)!r}))\n") == [0]
    assert not (m.warm / "eve" / "stolen").is_symlink()
    assert m.metadata(m.warm / "bob.bin")["uid"] == "0"  # type: ignore[attr-defined]
    assert (m.path / "bob.bin").read_bytes() == data


def test_chmod_by_the_owner_opens_the_file(open_mount: Mount) -> None:
    m = open_mount
    data = random.Random(2).randbytes(64 * 1024)
    p = private_cold_file(m, "bob.bin", data)
    assert p.read_bytes() == data
    before = os.readlink(m.warm / "bob.bin")
    os.chmod(p, 0o644)
    key = m.warm / "bob.bin"
    assert m.metadata(key)["mode"] == "0644"  # type: ignore[attr-defined]
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    if m.s3:  # type: ignore[attr-defined]
        # S3 gave it new metadata by copying it (a new ETag): the stub names the copy.
        etag = m.s3.head_object(Bucket=m.bucket, Key=uri_of(key).split("/", 3)[3])["ETag"]
        assert f"etag={etag.strip(chr(34))}&" in os.readlink(key)
        assert f"etag={etag.strip(chr(34))}&" not in before
    result = as_eve(f"print(read({str(p)!r}).hex())\n")
    assert result.returncode == 0, result.stderr + m.log()
    assert bytes.fromhex(result.stdout.strip()) == data
    assert p.read_bytes() == data
    # Narrowing again asks nothing of the bucket, and closes it to eve.
    os.chmod(p, 0o600)
    assert m.metadata(key)["mode"] == "0644"  # type: ignore[attr-defined]
    assert eve_codes(f"print(code(read, {str(p)!r}))\n") == [errno.EACCES]
    assert p.read_bytes() == data


def test_forged_wider_mode_is_refused(open_mount: Mount) -> None:
    m = open_mount
    data = random.Random(3).randbytes(64 * 1024)
    private_cold_file(m, "bob.bin", data)
    target = os.readlink(m.warm / "bob.bin")
    assert "&mode=0600&" in target
    os.symlink(target.replace("&mode=0600&", "&mode=0644&"), m.warm / "wide")  # root's link
    assert stat.S_IMODE(os.stat(m.path / "wide").st_mode) == 0o644
    assert eve_codes(f"print(code(read, {str(m.path / 'wide')!r}))\n") == [errno.EACCES]
    with pytest.raises(PermissionError):
        (m.path / "wide").read_bytes()


def test_s3_replaces_metadata_in_place(s3_server: S3Server, bucket: str) -> None:
    """copy_object onto itself: the content stays, the metadata is the new one, and only the
    version asked for is changed."""
    from tierfs.objects.base import ObjectChanged, parse_bucket_uri
    from tierfs.objects.s3 import S3Store

    store = S3Store(parse_bucket_uri(f"s3://{bucket}/{PREFIX}"), s3_server.endpoint,
                    addressing_style="path")
    key = f"{PREFIX}/f"
    data = random.Random(4).randbytes(6 * 1024 * 1024)
    upload = store.create_multipart(key, {"mode": "0600", "uid": "0"}, store.part_checksum)
    parts = [(1, store.upload_part(key, upload, 1, data[:5 * 1024 * 1024],
                                   store.part_checksum)),
             (2, store.upload_part(key, upload, 2, data[5 * 1024 * 1024:],
                                   store.part_checksum))]
    old = store.complete_multipart(key, upload, parts)
    new = store.replace_metadata(key, old.etag, {"mode": "0644", "uid": "0"})
    # (and the version it was copied from: a copy whose answer was lost is found made)
    assert dict(new.metadata) == {"mode": "0644", "uid": "0", "tierfs-copied-from": old.etag}
    head = store.head(key)
    assert (head.etag, head.size, dict(head.metadata)) == (new.etag, new.size,
                                                           dict(new.metadata))
    assert store.get_range(key, 0, len(data), new.etag) == data
    with pytest.raises(ObjectChanged):
        store.replace_metadata(key, "0" * 32, {"mode": "0666"})
    assert store.head(key).metadata["mode"] == "0644"
