"""Durability: write-back mode, and the crash harness.

The harness starts a writing workload (tests/crashload.py) against a real mount, kills the
daemon with SIGKILL at a point drawn from a seed, unmounts lazily, mounts again and checks what
tierfs promised: every file whose close or fsync returned (the workload's manifest, written
outside the mount) reads back byte-exact; no other file carries partial content under its name;
no multipart upload is left in the bucket; no temp file is left on the warm tier.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (Mount, S3Server, make_mount, renameat2, running, tmpfs,
                      wait_for_exit)
from crashload import plan
from s3proxy import FaultProxy
from tierfs import mounting
from tierfs.index import Index
from tierfs.objects.base import parse_bucket_uri
from tierfs.stubs import parse_stub
from tierfs.tiers.warm import RENAME_EXCHANGE
from tierfs.write import acklog
from tierfs.write import entries as journal
from tierfs.cache.counters import load_saved

MIB = 1024 * 1024
HERE = Path(__file__).parent
#: Kill points per workload: small files in two layouts, multipart and write-back make 28.
#: TIERFS_CRASH_SEEDS=FIRST:END draws other ones (to hunt, beyond what CI runs).
SEEDS = range(*map(int, os.environ.get("TIERFS_CRASH_SEEDS", "0:7").split(":")))


def s3_mount(base: Path, endpoint: str, bucket: str, *extra: str) -> Mount:
    m = make_mount(base, "--bucket", f"s3://{bucket}/t", "--endpoint-url", endpoint,
                   "--addressing-style", "path", "--large-file-threshold", "8MiB",
                   "--part-size", "5MiB", "--attr-timeout", "0", "--entry-timeout", "0",
                   *extra)
    m.bucket = bucket  # type: ignore[attr-defined]
    return m


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def crash(m: Mount, kind: str, seed: int) -> dict[str, str]:
    """Run the workload, kill the daemon at a seeded moment; returns the promised checksums
    (the last promise for each path)."""
    manifest = m.path.parent / f"manifest-{seed}"
    work = m.path / f"w{seed}"
    load = subprocess.Popen([sys.executable, str(HERE / "crashload.py"), str(work),
                             str(manifest), kind, str(seed)], stderr=subprocess.DEVNULL)
    delay = random.Random(seed).uniform(0.3, 2.5)
    time.sleep(delay)
    for pid in m.pids:
        os.kill(pid, signal.SIGKILL)
        assert wait_for_exit(pid, 10)
    load.kill()
    load.wait()
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
    promised: dict[str, str] = {}
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            path, digest, _ = line.split()
            promised[os.path.relpath(path, m.path)] = digest
    return promised


def check_after_remount(m: Mount, kind: str, promised: dict[str, str], s3: S3Server | None,
                        seed: int) -> None:
    m.start()
    for rel, digest in promised.items():
        assert sha(m.path / rel) == digest, f"seed {seed}: {rel} is not what close returned"
    work = m.path / f"w{seed}"
    found = {os.path.relpath(p, m.path) for p in work.rglob("*.bin")} if work.exists() else set()
    for path, data, _ in plan(str(work), kind, seed):
        rel = os.path.relpath(path, m.path)
        if rel not in found:
            if len(found) == 0:
                break
            continue
        found.discard(rel)
        if rel not in promised:
            # Not promised (the kill came before close returned): absent, empty (created
            # and no more), or whole, never partial.
            content = (m.path / rel).read_bytes()
            assert content in (b"", data), f"seed {seed}: partial content under {rel}"
    if s3 is not None:
        bucket = m.bucket  # type: ignore[attr-defined]
        uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert uploads == [], f"seed {seed}: leftover uploads {uploads}"
    deadline = time.monotonic() + 20
    while any(m.warm.rglob(".tierfs-*.tmp")):
        assert time.monotonic() < deadline, f"seed {seed}: temp files left on the warm tier"
        time.sleep(0.2)
    m.stop()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("layout", ["one-fs", "warm-apart"])
def test_crash_during_small_file_writes(tmp_path: Path, layout: str, seed: int) -> None:
    """One file system: files are published by renaming their staging files; warm apart (a
    file system of its own, as NFS): by copying them."""
    m = make_mount(tmp_path, warm_apart=layout == "warm-apart")
    with running(m):
        promised = crash(m, "small", seed)
        assert promised, "the workload promised nothing before the kill: move the kill later"
        check_after_remount(m, "small", promised, None, seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_crash_during_multipart_uploads(tmp_path: Path, s3_server: S3Server, bucket: str,
                                       seed: int) -> None:
    m = s3_mount(tmp_path, s3_server.endpoint, bucket)
    with running(m):
        promised = crash(m, "large", seed)
        check_after_remount(m, "large", promised, s3_server, seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_crash_with_pending_write_back(tmp_path: Path, proxy: FaultProxy, bucket: str,
                                       s3_server: S3Server, seed: int) -> None:
    """Write-back: closes return before the data is home; the bucket is made slow (every
    request held half a second), so the kill finds uploads pending."""
    m = s3_mount(tmp_path, proxy.endpoint, bucket, "--durability", "writeback")
    with running(m):
        proxy.fail("PUT", "delay")
        proxy.fail("POST", "delay")
        promised = crash(m, "mixed", seed)
        proxy.heal()
        assert promised
        check_after_remount(m, "mixed", promised, s3_server, seed)


# -- write-back semantics ------------------------------------------------------------------


@pytest.fixture
def writeback_mount(tmp_path: Path, proxy: FaultProxy, bucket: str) -> Iterator[Mount]:
    m = s3_mount(tmp_path, proxy.endpoint, bucket, "--durability", "writeback")
    with running(m):
        yield m


def test_write_back_close_returns_before_the_upload_and_reports_failures(
        writeback_mount: Mount, proxy: FaultProxy, s3_server: S3Server) -> None:
    m = writeback_mount
    bucket = m.bucket  # type: ignore[attr-defined]
    data = os.urandom(12 * MIB)
    proxy.fail("PUT", "403")  # the bucket refuses every part from now on
    (m.path / "ckpt.bin").write_bytes(data)  # close returns: staged and journaled
    deadline = time.monotonic() + 15
    while (load_saved(m.hot) or {}).get("counters", {}).get("upload_errors", 0) == 0:
        assert time.monotonic() < deadline, "the failed upload was not counted"
        time.sleep(0.2)
    fd = os.open(m.path / "ckpt.bin", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as failed:
            os.fsync(fd)  # fsync waits for the home tier, which is down
        assert failed.value.errno == 5
    finally:
        os.close(fd)
    # The parts that failed are still staged (the hot tier has room): reads are served there.
    assert (m.path / "ckpt.bin").read_bytes() == data
    assert any(m.hot.joinpath("staging").iterdir()), "the staged data must stay"
    proxy.heal()
    deadline = time.monotonic() + 60
    while not os.path.islink(m.warm / "ckpt.bin"):  # retried in the background until home
        assert time.monotonic() < deadline, "the write-back never completed"
        time.sleep(0.2)
    body = s3_server.client().get_object(Bucket=bucket, Key="t/ckpt.bin")["Body"].read()
    assert body == data
    assert (m.path / "ckpt.bin").read_bytes() == data


def test_write_back_small_files_are_published_and_unmount_waits(writeback_mount: Mount) -> None:
    m = writeback_mount
    files = {f"s{i}.txt": os.urandom(1000 + i) for i in range(20)}
    for name, data in files.items():
        (m.path / name).write_bytes(data)
    m.stop()  # unmount publishes what is still pending
    for name, data in files.items():
        assert (m.warm / name).read_bytes() == data
    assert not any(m.hot.joinpath("staging").iterdir())
    m.start()


@pytest.mark.parametrize("layout", ["one-fs", "warm-apart"])
def test_write_back_changes_right_after_a_close_are_kept(tmp_path: Path, layout: str) -> None:
    """A close in write-back mode starts publishing in the background; an open for writing
    or a truncate that comes meanwhile waits for that publish, whose end retires the file's
    open state. Each change must land on the state that is current then (they were lost:
    written into the retired state, or into a staging file left for no one)."""
    rng = random.Random(5)
    with running(make_mount(tmp_path, "--durability", "writeback",
                            warm_apart=layout == "warm-apart")) as m:
        want: dict[str, bytes] = {}
        for i in range(20):
            name, body = f"f{i}", rng.randbytes(10_000)
            (m.path / name).write_bytes(body)
            if i % 2:
                fd = os.open(m.path / name, os.O_WRONLY)  # no O_TRUNC: a patch in place
                try:
                    os.pwrite(fd, b"ABCD", 707)
                finally:
                    os.close(fd)
                want[name] = body[:707] + b"ABCD" + body[711:]
            else:
                os.truncate(m.path / name, 4321)
                want[name] = body[:4321]
        for name, body in want.items():
            assert (m.path / name).read_bytes() == body, name
        m.stop()  # everything published: what other machines see
        for name, body in want.items():
            assert (m.warm / name).read_bytes() == body, name
        assert not any(m.hot.joinpath("staging").iterdir()), "a staging file was left behind"
        m.start()


@pytest.mark.parametrize("layout", ["one-fs", "warm-apart"])
def test_write_back_attribute_changes_right_after_a_close_are_kept(tmp_path: Path,
                                                                    layout: str) -> None:
    """A publish copies the owner, mode, xattrs and times of the file it replaces onto the new
    file, then renames it into place: a chmod, chown, utime or setxattr that came in between
    went to the old file and was lost with it (the mode in nearly every round, before)."""
    rng = random.Random(11)
    with running(make_mount(tmp_path, "--durability", "writeback",
                            warm_apart=layout == "warm-apart")) as m:
        want = {}
        for i in range(60):
            name = f"f{i}"
            fd = os.open(m.path / name, os.O_WRONLY | os.O_CREAT, 0o444)
            try:
                os.write(fd, rng.randbytes(200_000))
            finally:
                os.close(fd)  # published in the background from here
            want[name] = (0o600 | rng.choice([0o040, 0o004, 0o070]), 1000 + i, 2000 + i,
                          10**18 + 2 * i, b"v%d" % i)
            os.chmod(m.path / name, want[name][0])
            os.chown(m.path / name, want[name][1], want[name][2])
            os.utime(m.path / name, ns=(10**18 + i, want[name][3]))
            os.setxattr(m.path / name, b"user.k", want[name][4])
        m.stop()  # everything published
        for name, attrs in want.items():
            st = os.stat(m.warm / name)
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                    os.getxattr(m.warm / name, b"user.k")) == attrs, name
        m.start()


def rewrite(path: Path, body: bytes) -> None:
    """Open an existing file with O_TRUNC, write, close."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, body)
    finally:
        os.close(fd)


@pytest.mark.parametrize("layout", ["one-fs", "warm-apart"])
def test_write_back_hard_link_right_after_a_close_stays_one_file(tmp_path: Path,
                                                                 layout: str) -> None:
    """A publish checks the link count, then renames a new file over the name: a link made in
    between left the new name on the old file, with the old content (most rounds, before)."""
    rng = random.Random(13)
    with running(make_mount(tmp_path, "--durability", "writeback",
                            warm_apart=layout == "warm-apart")) as m:
        want = {}
        for i in range(60):
            (m.path / f"f{i}").write_bytes(b"the version before")
            want[i] = rng.randbytes(300_000)
            rewrite(m.path / f"f{i}", want[i])  # published in the background from here
            os.link(m.path / f"f{i}", m.path / f"g{i}")
        m.stop()
        for i, body in want.items():
            f, g = os.stat(m.warm / f"f{i}"), os.stat(m.warm / f"g{i}")
            assert (f.st_ino, f.st_nlink) == (g.st_ino, 2), i
            assert (m.warm / f"g{i}").read_bytes() == body, i
        m.start()


@pytest.mark.parametrize("layout", ["one-fs", "warm-apart"])
def test_write_back_exchange_right_after_a_close_keeps_each_files_mode(tmp_path: Path,
                                                                       layout: str) -> None:
    """A publish copies the attributes found at the file's path; a RENAME_EXCHANGE while it
    copied put the other file there, and the published file took that file's mode."""
    rng = random.Random(14)
    with running(make_mount(tmp_path, "--durability", "writeback",
                            warm_apart=layout == "warm-apart")) as m:
        for i in range(100):
            os.close(os.open(m.path / f"g{i}", os.O_WRONLY | os.O_CREAT, 0o644))
            fd = os.open(m.path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.write(fd, rng.randbytes(300_000))
            finally:
                os.close(fd)  # published in the background from here
            renameat2(m.path / f"f{i}", m.path / f"g{i}", RENAME_EXCHANGE)
        m.stop()
        for i in range(100):
            assert (stat.S_IMODE(os.stat(m.warm / f"g{i}").st_mode),
                    stat.S_IMODE(os.stat(m.warm / f"f{i}").st_mode)) == (0o600, 0o644), i
        m.start()


@pytest.mark.parametrize("layout", ["one-fs", "warm-apart"])
def test_write_back_exchange_right_after_a_close_of_a_hard_linked_file(tmp_path: Path,
                                                                       layout: str) -> None:
    """A hard-linked file is published by writing into it in place, and a publish checks the
    link count at the file's path first; a RENAME_EXCHANGE meanwhile put another file there.
    Before: another hard-linked file there was overwritten with this one's content, and over
    one with a single name the rename split this file's links (the other name kept the old
    content), in every run."""
    rng = random.Random(15)
    with running(make_mount(tmp_path, "--durability", "writeback",
                            warm_apart=layout == "warm-apart")) as m:
        want = {}
        for i in range(100):
            (m.path / f"g{i}").write_bytes(b"another file")
            if i % 2:
                os.link(m.path / f"g{i}", m.path / f"k{i}")  # hard-linked too
            (m.path / f"f{i}").write_bytes(b"the version before")
            os.link(m.path / f"f{i}", m.path / f"h{i}")
            want[i] = rng.randbytes(300_000)
            rewrite(m.path / f"f{i}", want[i])  # published in the background from here
            renameat2(m.path / f"f{i}", m.path / f"g{i}", RENAME_EXCHANGE)
        m.stop()
        for i, body in want.items():
            assert (m.warm / f"f{i}").read_bytes() == b"another file", i
            if i % 2:
                assert (m.warm / f"k{i}").read_bytes() == b"another file", i
            assert (m.warm / f"g{i}").read_bytes() == body, i
            assert (m.warm / f"h{i}").read_bytes() == body, i
            assert os.stat(m.warm / f"g{i}").st_ino == os.stat(m.warm / f"h{i}").st_ino, i
        m.start()


def test_write_back_attribute_changes_while_an_upload_completes_are_kept(
        tmp_path: Path, proxy: FaultProxy, bucket: str) -> None:
    """The same for files going to the bucket: changes that come while the upload is being
    completed reach the stub put in place after it."""
    rng = random.Random(12)
    m = s3_mount(tmp_path, proxy.endpoint, bucket, "--durability", "writeback")
    with running(m):
        proxy.delay = 0.3
        proxy.fail("POST", "delay")  # (completing each upload)
        want = {}
        for i in range(8):
            name = f"f{i}"
            fd = os.open(m.path / name, os.O_WRONLY | os.O_CREAT, 0o444)
            try:
                os.write(fd, rng.randbytes(9 * MIB))
            finally:
                os.close(fd)
            want[name] = (0o600 | rng.choice([0o040, 0o004, 0o070]), 1000 + i, 2000 + i,
                          10**18 + 2 * i)
            os.chmod(m.path / name, want[name][0])
            os.chown(m.path / name, want[name][1], want[name][2])
            os.utime(m.path / name, ns=(10**18 + i, want[name][3]))
        m.stop()
        assert all((m.warm / name).is_symlink() for name in want)
        m.start()
        for name, attrs in want.items():
            st = os.stat(m.path / name)
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == attrs, name


def test_new_files_created_while_others_are_published_stay_apart(tmp_path: Path) -> None:
    """Publishing replaces a file's warm inode, and the inode number it frees can go to a
    file created at that moment: the new file must not be taken for the old one renamed (its
    bytes went into the file being published; 2 to 5 in 100 rounds here, before the fix)."""
    rng = random.Random(9)
    with running(make_mount(tmp_path, "--durability", "writeback")) as m:
        want: dict[str, bytes] = {}
        for i in range(200):
            (m.path / f"r{i}").mkdir()
            big, small = f"r{i}/big", f"r{i}/small"
            want[big], want[small] = rng.randbytes(10_000), rng.randbytes(9)
            with open(m.path / big, "wb") as f:  # published in the background from its close
                f.write(want[big][:5000])
                f.write(want[big][5000:])
            time.sleep(rng.random() * 0.003)
            (m.path / small).write_bytes(want[small])
        for name, body in want.items():
            assert (m.path / name).read_bytes() == body, name
        m.stop()
        for name, body in want.items():
            assert (m.warm / name).read_bytes() == body, name
        m.start()


# -- namespace ------------------------------------------------------------------------------


def bucket_keys(s3_server: S3Server, bucket: str) -> set[str]:
    return {o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=bucket).get("Contents", [])}


def stub_keys(m: Mount) -> list[str]:
    """The object key of every stub on the warm tier (one entry per stub)."""
    uri = parse_bucket_uri(f"s3://{m.bucket}/t")  # type: ignore[attr-defined]
    return [parse_stub(os.readlink(p).encode(), uri).key for p in m.warm.rglob("*")
            if p.is_symlink()]


@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_renaming_a_checkpoint_directory_is_one_metadata_operation(
        tmp_path: Path, s3_server: S3Server, bucket: str, durability: str) -> None:
    """Checkpoints written into one temp directory (one file in the bucket, one on the warm
    tier) and renamed into place, again and again: the stub moves with its directory, the
    object stays, and the next checkpoint written under the temp name never overwrites the
    object of the one renamed away."""
    m = s3_mount(tmp_path, s3_server.endpoint, bucket, "--durability", durability)
    saved = {}
    with running(m):
        for step in (100, 200, 300):
            big, small = os.urandom(10 * MIB), os.urandom(1000)
            (m.path / "ckpt.tmp").mkdir()
            (m.path / "ckpt.tmp" / "model.bin").write_bytes(big)
            (m.path / "ckpt.tmp" / "meta.json").write_bytes(small)
            if durability == "sync":
                assert os.path.islink(m.warm / "ckpt.tmp" / "model.bin")
                before = bucket_keys(s3_server, bucket)
            os.rename(m.path / "ckpt.tmp", m.path / f"ckpt-{step}")
            if durability == "sync":
                assert bucket_keys(s3_server, bucket) == before  # the object keeps its key
            saved[step] = (big, small)
            assert not (m.path / "ckpt.tmp").exists()
        os.unlink(m.path / "ckpt-300" / "model.bin")  # its object goes, the others stay
        del saved[300]
        for step, (big, small) in saved.items():
            assert (m.path / f"ckpt-{step}" / "model.bin").read_bytes() == big, step
            assert (m.path / f"ckpt-{step}" / "meta.json").read_bytes() == small, step
        m.stop()
        keys = stub_keys(m)
        assert len(keys) == len(set(keys)) == 2, "two stubs share an object"
        assert bucket_keys(s3_server, bucket) == set(keys)
        assert "t/ckpt.tmp/model.bin" in keys  # the first one took the path as it was
        m.start()


def test_write_back_truncate_right_after_a_close_keeps_the_data(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """A file that went to the bucket, truncated as soon as it is closed (its write-back
    publish still going): the truncate keeps the first bytes, and the object goes."""
    m = s3_mount(tmp_path, s3_server.endpoint, bucket, "--durability", "writeback")
    body = os.urandom(9 * MIB)
    with running(m):
        for size in (0, 1000, 3 * MIB):
            name = f"f{size}"
            (m.path / name).write_bytes(body)
            os.truncate(m.path / name, size)
            assert (m.path / name).read_bytes() == body[:size], size
        m.stop()
        for size in (0, 1000, 3 * MIB):
            assert (m.warm / f"f{size}").read_bytes() == body[:size], size
        assert not stub_keys(m)
        assert not bucket_keys(s3_server, bucket)
        m.start()


@pytest.fixture
def tiny_hot(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tinyhot", "24m") as hot:
        yield hot


def test_a_full_hot_tier_fails_only_that_writer(tmp_path: Path, tiny_hot: Path,
                                                s3_server: S3Server, bucket: str) -> None:
    m = s3_mount(tmp_path, s3_server.endpoint, bucket, "--large-file-threshold", "1GiB")
    m.hot = tiny_hot
    keep = os.urandom(100_000)
    with running(m):
        (m.path / "keep.bin").write_bytes(keep)
        with pytest.raises(OSError) as full:
            with open(m.path / "huge.bin", "wb") as f:  # 40 MiB into a 24 MiB hot tier
                for _ in range(40):
                    f.write(os.urandom(MIB))
        assert full.value.errno == 28  # ENOSPC, for this writer only
        assert (m.path / "keep.bin").read_bytes() == keep
        (m.path / "after.bin").write_bytes(b"still fine")
        assert (m.path / "after.bin").read_bytes() == b"still fine"
        assert mounting.daemon_pids(str(m.path)) == m.pids


def test_a_full_hot_tier_streams_a_large_file_instead(tmp_path: Path, tiny_hot: Path,
                                                      s3_server: S3Server, bucket: str) -> None:
    m = s3_mount(tmp_path, s3_server.endpoint, bucket, "--upload-window", "2")
    m.hot = tiny_hot
    data = os.urandom(40 * MIB)  # past the 8 MiB threshold: it streams in 5 MiB parts
    with running(m):
        (m.path / "big.bin").write_bytes(data)
        assert os.path.islink(m.warm / "big.bin")
        assert (m.path / "big.bin").read_bytes() == data


_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def set_immutable(path: Path, on: bool) -> None:
    """chattr +i / -i without a child process: a fork would close (and so flush) the test's
    open files on the mount."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        value = int.from_bytes(flags[:4], "little")
        value = value | _FS_IMMUTABLE_FL if on else value & ~_FS_IMMUTABLE_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, value.to_bytes(4, "little") + bytes(4))
    finally:
        os.close(fd)


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Directories made immutable by a test, made mutable again afterwards."""
    made: list[Path] = []
    yield made
    for path in made:
        set_immutable(path, False)


def journal_entries(hot: Path) -> dict[str, journal.Entry]:
    index = Index(hot / "index", readonly=True)
    try:
        return journal.load(index, hot / "index" / acklog.NAME)  # (what a crash leaves)
    finally:
        index.close()


def restart_the_system(hot: Path, unflushed: bool = False) -> None:
    """What the index looks like after the node restarted: another boot id. ``unflushed``:
    the restart came before tierfs had flushed its closed staged data to disk."""
    index = Index(hot / "index")
    try:
        changes: dict[tuple[str, bytes], bytes | None] = {("meta", b"boot"): b"an-earlier-boot"}
        if unflushed:
            for sid, entry in journal.load(index).items():
                entry.synced = None
                changes[("journal", sid.encode())] = entry.encode()
        index.commit(changes)
    finally:
        index.close()


def unpublishable_close(m: Mount, immutable: list[Path], durability: str, data: bytes) -> None:
    """Write ``d/ckpt.pt`` and close it while the warm directory refuses the publish, then
    kill the daemon (the data is staged, closed, not home)."""
    (m.path / "d").mkdir()
    f = open(m.path / "d" / "ckpt.pt", "wb")
    f.write(data)
    f.flush()
    set_immutable(m.warm / "d", True)
    immutable.append(m.warm / "d")
    if durability == "sync":
        with pytest.raises(OSError):
            f.close()
    else:
        f.close()
    deadline = time.monotonic() + 10
    while not any(e.synced == len(data) for e in journal_entries(m.hot).values()):
        assert time.monotonic() < deadline, "the staged data was never flushed to disk"
        time.sleep(0.2)
    assert (m.warm / "d" / "ckpt.pt").stat().st_size == 0  # not home
    for pid in m.pids:
        os.kill(pid, signal.SIGKILL)
        assert wait_for_exit(pid, 10)
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
    set_immutable(m.warm / "d", False)


@pytest.mark.parametrize("restarted", [False, True], ids=["tierfs-killed", "system-restarted"])
@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_closed_data_that_could_not_be_published_is_published_after_a_crash(
        tmp_path: Path, immutable: list[Path], durability: str, restarted: bool) -> None:
    """The warm directory refuses the publish (immutable); the daemon is then killed. The
    remount publishes what was closed: in write-back mode the close had returned, in sync mode
    it had failed with EIO and the staged data was kept for another try. A failed publish
    flushes the staged data to the hot disk and journals that, so this holds after a restart
    of the system too (simulated: another boot id in the index). The tiers share a file
    system: recovery publishes by renaming the staging file, as the mount does."""
    m = make_mount(tmp_path, "--durability", durability)
    data = os.urandom(300_000)
    with running(m):
        unpublishable_close(m, immutable, durability, data)
        if restarted:
            restart_the_system(m.hot)
        [staging] = m.hot.joinpath("staging").iterdir()
        staging_ino = staging.stat().st_ino
        m.start()
        assert (m.path / "d" / "ckpt.pt").read_bytes() == data
        assert (m.warm / "d" / "ckpt.pt").read_bytes() == data
        assert (m.warm / "d" / "ckpt.pt").stat().st_ino == staging_ino
        assert not any(m.hot.joinpath("staging").iterdir())


def test_unflushed_closed_data_is_set_aside_after_a_system_restart(
        tmp_path: Path, immutable: list[Path]) -> None:
    """Closed write-back data that was not flushed when the system went down may be torn on
    disk: recovery must not publish it over the file. The file keeps what it had, the staged
    copy is kept in lost+found with a note, and the log says so. (The same journal without
    the restart is published: test_closed_data_that_could_not_be_published_...)"""
    m = make_mount(tmp_path, "--durability", "writeback")
    data = os.urandom(300_000)
    with running(m):
        unpublishable_close(m, immutable, "writeback", data)
        restart_the_system(m.hot, unflushed=True)
        m.start()
        assert (m.path / "d" / "ckpt.pt").read_bytes() == b""  # as before the write
        assert not any(m.hot.joinpath("staging").iterdir())
        kept = [p for p in (m.hot / "lost+found").iterdir() if p.suffix != ".txt"]
        assert len(kept) == 1 and kept[0].read_bytes() == data
        note = json.loads(kept[0].with_suffix(".txt").read_bytes())
        assert note["path"] == "d/ckpt.pt" and note["closed"] and note["size"] == len(data)
        assert "kept as" in m.hot.joinpath("tierfs.log").read_text()


@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_torch_checkpoint_round_trip(tmp_path: Path, s3_server: S3Server, bucket: str,
                                     durability: str) -> None:
    """torch.save to a temp name, rename into place, torch.load: equal tensors. The model's
    weights pass the (lowered) threshold, so the checkpoint streams to the bucket."""
    torch = pytest.importorskip("torch")
    m = s3_mount(tmp_path, s3_server.endpoint, bucket, "--durability", durability)
    torch.manual_seed(0)
    state = {"weight": torch.randn(1024, 3072), "bias": torch.randn(3072),
             "step": torch.tensor(1000)}
    with running(m):
        (m.path / "ckpts").mkdir()
        tmp = m.path / "ckpts" / "step1000.pt.tmp"
        torch.save(state, tmp)
        os.rename(tmp, m.path / "ckpts" / "step1000.pt")
        loaded = torch.load(m.path / "ckpts" / "step1000.pt")
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
        m.stop()  # and after a remount, from the bucket
        m.start()
        assert os.path.islink(m.warm / "ckpts" / "step1000.pt")  # a stub: it is cold
        loaded = torch.load(m.path / "ckpts" / "step1000.pt")
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def kill_daemon(m: Mount) -> None:
    for pid in m.pids:
        os.kill(pid, signal.SIGKILL)
        assert wait_for_exit(pid, 10)
    subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)


@pytest.mark.parametrize("punched", [True, False], ids=["parts-left-staging", "all-staged"])
def test_recovery_of_an_upload_the_bucket_dropped(tmp_path: Path, proxy: FaultProxy,
                                                  bucket: str, s3_server: S3Server,
                                                  punched: bool) -> None:
    """While tierfs was down, the bucket dropped a file's unfinished upload (a lifecycle rule,
    say). If none of its parts had left staging, recovery uploads the file again; if some had,
    no mount could ever finish it: recovery sets the staged rest aside and goes on, instead
    of failing at every mount."""
    from test_streaming import abort_uploads
    m = s3_mount(tmp_path, proxy.endpoint, bucket, "--durability", "writeback")
    data = os.urandom(12 * MIB)
    with running(m):
        fd = os.open(m.path / "ckpt.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        if punched:
            os.write(fd, data)
            os.fsync(fd)  # parts 1 and 2 are in the bucket, out of staging; size promised
        else:
            proxy.fail("PUT", "503")  # no part gets in
            os.write(fd, data)
            os.close(fd)  # closed (write-back): recovery must publish it
        deadline = time.monotonic() + 20
        while not any(e.upload is not None and e.upload.upload_id
                      and (e.closed or e.synced) for e in journal_entries(m.hot).values()):
            assert time.monotonic() < deadline, "the upload was never journaled"
            time.sleep(0.1)
        kill_daemon(m)
        if punched:
            with pytest.raises(OSError):
                os.close(fd)  # (the mount is gone)
        assert abort_uploads(proxy, bucket) == 1
        proxy.heal()
        m.start()
        log = (m.hot / "tierfs.log").read_text()
        if punched:
            [kept] = [p for p in (m.hot / "lost+found").iterdir() if p.suffix != ".txt"]
            assert kept.read_bytes()[10 * MIB:] == data[10 * MIB:]
            assert "dropped the unfinished upload" in log
            assert (m.path / "ckpt.bin").read_bytes() == b""  # what it was before: new, empty
            assert bucket_keys(s3_server, bucket) == set()
        else:
            assert (m.path / "ckpt.bin").read_bytes() == data
            assert stub_keys(m) == ["t/ckpt.bin"]
            assert not (m.hot / "lost+found").exists()
        assert not any((m.hot / "staging").iterdir())
        assert journal_entries(m.hot) == {}
    assert abort_uploads(proxy, bucket) == 0
