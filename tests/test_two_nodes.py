"""Two mounts sharing one warm root and one bucket, as two nodes of a cluster share their NFS
tree and bucket: each row of docs/semantics.md's table of what another node sees, and when.

Each node has its own hot tier and mount point; the attribute and entry timeouts are the
default 1 s, so a change made on one node must show on the other within that (plus a margin
for a loaded machine), never with wrong or mixed bytes."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Mount, S3Server, make_mount, read_uncached, running, tierfs

#: Past the attribute and entry timeouts (1 s), with a margin.
SETTLE = 1.5
#: Files from this size go to the bucket.
THRESHOLD = 1024 * 1024


def _node(base: Path, warm: Path, bucket: str, s3: S3Server, *extra: str) -> Mount:
    m = make_mount(base, "--bucket", f"s3://{bucket}/nodes", "--endpoint-url", s3.endpoint,
                   "--addressing-style", "path", "--large-file-threshold", str(THRESHOLD),
                   *extra)
    m.warm = warm
    return m


@pytest.fixture
def nodes(tmp_path: Path, s3_server: S3Server, bucket: str) -> Iterator[tuple[Mount, Mount]]:
    warm = tmp_path / "shared-warm"
    warm.mkdir()
    a = _node(tmp_path / "a", warm, bucket, s3_server)
    b = _node(tmp_path / "b", warm, bucket, s3_server)
    with running(a), running(b):
        yield a, b


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """``check()``'s value once it is truthy (another node's change shows within the
    timeouts; a loaded machine may need longer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


@pytest.mark.parametrize("size", [64 * 1024, 3 * THRESHOLD])
def test_a_write_shows_whole_on_the_other_node_only_after_close(
        nodes: tuple[Mount, Mount], size: int) -> None:
    a, b = nodes
    old, new = os.urandom(size), os.urandom(size)
    _write(a.path / "f", old)
    time.sleep(SETTLE)
    assert (b.path / "f").read_bytes() == old
    with open(a.path / "f", "r+b") as f:
        f.write(new[: size // 2])
        f.flush()
        time.sleep(SETTLE)
        assert (b.path / "f").read_bytes() == old  # not published yet: the old content whole
        f.write(new[size // 2:])
    time.sleep(SETTLE)
    assert (b.path / "f").read_bytes() == new  # close-to-open: the new content whole


def test_a_created_file_shows_empty_until_its_writer_closes(nodes: tuple[Mount, Mount]) -> None:
    a, b = nodes
    data = os.urandom(100_000)
    with open(a.path / "new", "wb") as f:
        f.write(data)
        f.flush()
        time.sleep(SETTLE)
        assert (b.path / "new").stat().st_size == 0
    time.sleep(SETTLE)
    assert (b.path / "new").read_bytes() == data


def test_blocks_cached_on_the_other_node_are_not_served_after_a_rewrite(
        nodes: tuple[Mount, Mount]) -> None:
    a, b = nodes
    old, new = os.urandom(3 * THRESHOLD), os.urandom(3 * THRESHOLD)
    _write(a.path / "big", old)
    time.sleep(SETTLE)
    assert (b.path / "big").read_bytes() == old  # now cached on b's hot tier
    assert (b.path / "big").read_bytes() == old
    _write(a.path / "big", new)
    time.sleep(SETTLE)
    assert (b.path / "big").read_bytes() == new


def test_a_rewrite_shows_whole_on_a_node_serving_its_cached_blocks(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """Warm blocks cached on node b, whose opens within attr_timeout of a lookup are served
    from them without opening the warm file: a rewrite on node a shows on b within the
    timeouts, and every read meanwhile is the old content or the new, whole (or ESTALE, a
    handle to a replaced file), never a mix."""
    warm = tmp_path / "shared-warm"
    warm.mkdir()
    cached = ("--cache-warm", "true", "--block-size", "64KiB")
    a = _node(tmp_path / "a", warm, bucket, s3_server)
    b = _node(tmp_path / "b", warm, bucket, s3_server, *cached)
    old, new = os.urandom(THRESHOLD // 2), os.urandom(THRESHOLD // 2)
    with running(a), running(b):
        _write(a.path / "f", old)
        time.sleep(SETTLE)
        assert read_uncached(b.path / "f") == old
        assert _eventually(lambda: sum(1 for f in (b.hot / "cache").rglob("*")
                                       if f.is_file()) >= 8)
        assert read_uncached(b.path / "f") == old  # from b's hot tier
        _write(a.path / "f", new)
        rewritten = time.monotonic()
        while time.monotonic() < rewritten + SETTLE:
            try:
                got = read_uncached(b.path / "f")
            except OSError as e:
                assert e.errno == errno.ESTALE
                continue
            assert got in (old, new), "a mix of two versions"
            time.sleep(0.05)
        assert read_uncached(b.path / "f") == new


def test_namespace_changes_show_on_the_other_node_within_the_timeouts(
        nodes: tuple[Mount, Mount]) -> None:
    a, b = nodes
    (a.path / "d").mkdir()
    _write(a.path / "d" / "x", b"x")
    _write(a.path / "d" / "y", b"y")
    time.sleep(SETTLE)
    assert sorted(os.listdir(b.path / "d")) == ["x", "y"]
    os.rename(a.path / "d" / "x", a.path / "d" / "z")
    os.unlink(a.path / "d" / "y")
    os.chmod(a.path / "d" / "z", 0o600)
    os.utime(a.path / "d" / "z", ns=(1_700_000_000_000_000_000,) * 2)
    assert _eventually(lambda: sorted(os.listdir(b.path / "d")) == ["z"])
    assert _eventually(lambda: not (b.path / "d" / "y").exists())
    st = _eventually(lambda: (lambda s: s if stat.S_IMODE(s.st_mode) == 0o600 else None)(
        (b.path / "d" / "z").stat()))
    assert st is not None and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_mtime_ns == 1_700_000_000_000_000_000
    assert (b.path / "d" / "z").read_bytes() == b"x"
    os.unlink(a.path / "d" / "z")
    os.rmdir(a.path / "d")
    assert _eventually(lambda: not (b.path / "d").exists())


@pytest.mark.parametrize("size", [64 * 1024, 3 * THRESHOLD])
def test_two_writers_of_one_path_the_last_close_wins_whole(nodes: tuple[Mount, Mount],
                                                          size: int) -> None:
    a, b = nodes
    from_a, from_b = os.urandom(size), os.urandom(size)
    fa = open(a.path / "same", "wb")
    fb = open(b.path / "same", "wb")
    fa.write(from_a)
    fb.write(from_b)
    fa.close()
    fb.close()
    time.sleep(SETTLE)
    assert (a.path / "same").read_bytes() == from_b
    assert (b.path / "same").read_bytes() == from_b


def test_a_delete_while_the_other_node_reads_gives_right_bytes_or_an_error(
        nodes: tuple[Mount, Mount]) -> None:
    a, b = nodes
    data = os.urandom(3 * THRESHOLD)
    _write(a.path / "gone", data)
    time.sleep(SETTLE)
    half = len(data) // 2
    with open(b.path / "gone", "rb", buffering=0) as f:
        assert f.read(half) == data[:half]
        os.unlink(a.path / "gone")
        time.sleep(SETTLE)
        try:
            rest = f.read()
        except OSError as e:
            assert e.errno == errno.EIO
        else:
            assert rest == data[half:]
    assert _eventually(lambda: not (b.path / "gone").exists())


def test_write_back_data_shows_on_the_other_node_once_flushed(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    warm = tmp_path / "shared-warm"
    warm.mkdir()
    a = _node(tmp_path / "a", warm, bucket, s3_server, "--durability", "writeback")
    b = _node(tmp_path / "b", warm, bucket, s3_server)
    with running(a), running(b):
        small, big = os.urandom(50_000), os.urandom(3 * THRESHOLD)
        _write(a.path / "small", small)
        _write(a.path / "big", big)
        tierfs("flush", str(a.path))
        time.sleep(SETTLE)
        assert (b.path / "small").read_bytes() == small
        assert (b.path / "big").read_bytes() == big


def test_truncates_and_extended_attributes_show_on_the_other_node(
        nodes: tuple[Mount, Mount]) -> None:
    a, b = nodes
    _write(a.path / "t", b"0123456789")
    time.sleep(SETTLE)
    assert (b.path / "t").read_bytes() == b"0123456789"
    with pytest.raises(OSError):
        os.getxattr(b.path / "t", "user.tag")
    os.truncate(a.path / "t", 4)
    os.setxattr(a.path / "t", "user.tag", b"v1")
    assert _eventually(lambda: (b.path / "t").stat().st_size == 4)
    assert (b.path / "t").read_bytes() == b"0123"
    assert _eventually(lambda: _xattr(b.path / "t", "user.tag") == b"v1")


def test_a_write_over_a_file_the_other_node_demoted_keeps_its_mode(
        nodes: tuple[Mount, Mount]) -> None:
    """Node B holds a file open for writing while node A demotes it: B's close puts its file
    back over A's stub, with the file's mode (which the stub holds), not the symbolic link's
    own 0777 (it made the file writable by everyone)."""
    a, b = nodes
    old = os.urandom(THRESHOLD // 2)  # (on the warm tier: larger ones go to the bucket)
    _write(a.path / "w.bin", old)
    os.chmod(a.path / "w.bin", 0o640)
    time.sleep(SETTLE)
    fd = os.open(b.path / "w.bin", os.O_RDWR)
    try:
        tierfs("demote", str(a.path / "w.bin"))
        assert os.readlink(a.warm / "w.bin").startswith("tierfs:")
        os.pwrite(fd, b"WXYZ", 0)
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.lstat(a.warm / "w.bin").st_mode) == 0o640
    time.sleep(SETTLE)
    for node in (a, b):
        assert stat.S_IMODE(os.stat(node.path / "w.bin").st_mode) == 0o640
        assert read_uncached(node.path / "w.bin") == b"WXYZ" + old[4:]


def _xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name)
    except OSError:
        return None
