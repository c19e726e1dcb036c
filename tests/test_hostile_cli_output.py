"""What a hostile user of the shared warm tree puts in a stub reaches the operator's commands
and the mount's log: an object key is as much anyone's text as a name (docs/stubs.md: a stub's
key is URL-encoded, any UTF-8, a newline or an escape included), and must be shown as one line
of text (tierfs.paths), and a stub refused alone must not end a command over a directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, make_mount, running
from test_operator_names import cli
from tierfs.objects.base import parse_bucket_uri
from tierfs.objects.local import LocalStore
from tierfs.stubs import Stub

KIB = 1024


@pytest.fixture
def m(tmp_path: Path) -> Iterator[Mount]:
    (tmp_path / "cold").mkdir()
    mm = make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                    "--large-file-threshold", "16KiB", "--part-size", "5MiB")
    with running(mm):
        yield mm


def bucket_of(m: Mount) -> object:
    return parse_bucket_uri(f"file://{m.warm.parent / 'cold'}")


def plant(m: Mount, rel: str, stub: Stub) -> None:
    """A stub made on the warm tree directly, as any user there can."""
    os.symlink(stub.encode(bucket_of(m)), m.warm / rel)  # type: ignore[arg-type]


def test_where_shows_the_object_of_a_name_with_a_newline_on_one_line(m: Mount) -> None:
    """The user's own file: its key keeps the newline of its name (docs/stubs.md, Objects),
    and ``where`` printed the URI raw after the escaped name: two lines for one file."""
    (m.path / "a\nb").write_bytes(os.urandom(64 * KIB))  # (past the threshold: the bucket)
    r = cli("where", str(m.path / "a\nb"))
    assert r.returncode == 0, r.stderr
    assert b"cold" in r.stdout
    assert len(r.stdout.splitlines()) == 1, r.stdout


def test_where_shows_a_planted_keys_escape_sequence_as_text(m: Mount) -> None:
    """A stub whose key holds a terminal escape and a forged line: ``where`` over the
    directory printed both raw (the terminal obeys the escape; the forged line reads as
    another file's)."""
    (m.warm / "d").mkdir()
    key = "x\x1b[2J\n/fake/path: warm, 1.0 KiB, 100% hot"
    plant(m, "d/evil", Stub(key, 10, "etag", 0o644, 1))
    (m.path / "d" / "fine").write_bytes(b"x" * 100)
    r = cli("where", str(m.path / "d"))
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stdout, r.stdout
    assert len(r.stdout.splitlines()) == 2, r.stdout  # one line per file


def test_a_planted_keys_newline_does_not_forge_a_log_line(m: Mount) -> None:
    """The key of a stub whose object is missing goes into the log line of its failed read
    (``reading %s at %d``) raw: a newline in it starts a line of the stub writer's choosing."""
    plant(m, "evil", Stub("x\n2099-01-01 00:00:00,000 INFO FORGED: all good", 10, "etag",
                          0o644, 1))
    with pytest.raises(OSError):
        (m.path / "evil").read_bytes()
    lines = m.log().splitlines()
    assert not any(line.startswith("2099-01-01") for line in lines), m.log()


def test_promote_of_a_directory_goes_on_past_a_stub_with_a_nul_in_its_key(m: Mount) -> None:
    """One stub naming a key with a NUL byte (taken by the parser; a local folder raises
    ValueError for it) ended ``tierfs promote DIR`` with an internal error: the good cold file
    after it was not brought back."""
    (m.warm / "d").mkdir()
    store = LocalStore(bucket_of(m))  # type: ignore[arg-type]
    data = b"small and good" * 100
    info = store.put("good.bin", data, {"uid": str(os.getuid()), "gid": str(os.getgid()),
                                        "mode": "0644"})
    plant(m, "d/evil", Stub("a\x00b", 10, "etag", 0o644, 1))
    plant(m, "d/good", Stub("good.bin", len(data), info.etag, 0o644, 1))
    # The bad one first (oldest), the good one after it.
    os.utime(m.warm / "d" / "evil", ns=(10**9, 10**9), follow_symlinks=False)
    os.utime(m.warm / "d" / "good", ns=(2 * 10**9, 2 * 10**9), follow_symlinks=False)
    r = cli("promote", str(m.path / "d"))
    assert b"internal error" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (m.warm / "d" / "good").is_symlink(), r.stdout + r.stderr
    assert (m.warm / "d" / "good").read_bytes() == data
    assert "Traceback" not in m.log(), m.log()
