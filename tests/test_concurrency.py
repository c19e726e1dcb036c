"""Several threads at once on a few files, through a real mount: whole-file writes (some
fsynced), reads, opens for writing, truncates, unlinks, renames. There is no single expected
tree, but each file read must be one whole version written under its own name or under a name
renamed to it (or empty: truncated, or not yet written), never bytes of another file or a mix;
and once everything is closed and the mount is gone, the warm tier must hold what the mount
showed last. With a small threshold, the larger versions go to the bucket as they are
written, so files cross tiers while the threads run.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import random
import stat
import threading
from pathlib import Path

import pytest

from conftest import S3Server, make_mount, renameat2, running
from tierfs.objects.base import parse_bucket_uri
from tierfs.stubs import parse_stub
from tierfs.tiers.warm import RENAME_EXCHANGE

NAMES = ["a", "b", "c", "d/a", "d/b", "d/c"]
THREADS = 4
ROUNDS = 150
HEADER = 64
#: Calls on one name take turns: on any file system two writers of one name interleave (open
#: with O_TRUNC, open with O_TRUNC, write, write), and a read racing a truncate returns part
#: of a version. Calls on different names, and what tierfs does in the background after a
#: close (publishing, write-back), run freely.
TURNS = {name: threading.Lock() for name in NAMES}
#: Under a name's turn: the names whose versions it may hold (its own, or one renamed to it).
FROM: dict[str, set[str]] = {name: {name} for name in NAMES}


def version(name: str, serial: int, rng: random.Random) -> bytes:
    """A body that says which file and which version it is, and checks itself."""
    body = rng.randbytes(rng.choice([0, 100, 3000, 9000, 20_000]))
    head = f"{name}:{serial}:{hashlib.sha256(body).hexdigest()[:16]}".encode().ljust(HEADER)
    return head + body


def check(name: str, content: bytes) -> None:
    if not content:
        return
    head, body = content[:HEADER], content[HEADER:]
    fields = head.rstrip().decode(errors="replace").split(":")
    zeros = len(content) - len(content.lstrip(b"\0"))
    assert len(fields) == 3 and fields[0] in FROM[name], \
        f"{name} holds {head!r} ({len(content)} bytes, the first {zeros} zeros)"
    assert hashlib.sha256(body).hexdigest()[:16] == fields[2], f"{name} is torn ({head!r})"


def worker(root: Path, seed: int, errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        for serial in range(ROUNDS):
            name = rng.choice(NAMES)
            op = rng.random()
            if op >= 0.9:
                other = rng.choice([n for n in NAMES if n != name])
                first, second = sorted([name, other])  # one order: no deadlock
                with TURNS[first], TURNS[second]:
                    rename(root, name, other)
                continue
            with TURNS[name]:
                one_call(root / name, name, op, version(name, seed * 1000 + serial, rng),
                         fsync=rng.random() < 0.2)
    except BaseException as e:  # noqa: BLE001 - handed to the test
        errors.append(e)


def rename(root: Path, src: str, dst: str) -> None:
    try:
        os.rename(root / src, root / dst)
    except FileNotFoundError:
        return
    FROM[dst] = FROM[src]
    FROM[src] = {src}


def one_call(path: Path, name: str, op: float, data: bytes, fsync: bool) -> None:
    try:
        if op < 0.35:
            FROM[name] = {name}  # the write truncates first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        elif op < 0.65:
            check(name, path.read_bytes())
        elif op < 0.75:
            # Open for writing and read through that handle (in write-back mode the open
            # waits for the last close's publish), writing nothing.
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError as e:
                # A cold file cannot be opened for writing in place (docs/semantics.md).
                if e.errno != errno.EOPNOTSUPP or not (path.parent / ".cold").exists():
                    raise
                check(name, path.read_bytes())
                return
            try:
                check(name, os.pread(fd, 1 << 20, 0))
            finally:
                os.close(fd)
        elif op < 0.85:
            os.unlink(path)
        else:
            os.truncate(path, 0)
    except FileNotFoundError:
        pass  # not written yet, or unlinked


def lister(root: Path, done: threading.Event, errors: list[BaseException]) -> None:
    """ls -l, over and over, while the workers run: every entry a regular file (a file in
    the bucket too: its stub is a symlink only on the warm tier), never an error."""
    try:
        while not done.is_set():
            for where in (root, root / "d"):
                with os.scandir(where) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if entry.name != "d":
                            assert stat.S_ISREG(st.st_mode), f"{entry.path}: {st}"
    except BaseException as e:  # noqa: BLE001 - handed to the test
        errors.append(e)


def run_threads(root: Path, cold: bool = False) -> dict[str, bytes]:
    """Run the workers on the mount at ``root``; what the mount shows afterwards."""
    FROM.update({name: {name} for name in NAMES})
    (root / "d").mkdir()
    if cold:
        (root / ".cold").touch()  # tells the workers that cold files are about
        (root / "d" / ".cold").touch()
    errors: list[BaseException] = []
    threads = [threading.Thread(target=worker, args=(root, seed, errors))
               for seed in range(1, THREADS + 1)]
    done = threading.Event()
    listing = threading.Thread(target=lister, args=(root, done, errors))
    listing.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    listing.join()
    if errors:
        raise errors[0]  # with the traceback of the thread's call
    seen = {}
    for name in NAMES:
        try:
            seen[name] = (root / name).read_bytes()
        except FileNotFoundError:
            continue
        check(name, seen[name])
    return seen


@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_threads_on_shared_files_never_mix_them(tmp_path: Path, durability: str) -> None:
    with running(make_mount(tmp_path, "--durability", durability)) as m:
        seen = run_threads(m.path)
        m.stop()
        on_warm = {name: (m.warm / name).read_bytes() for name in NAMES
                   if (m.warm / name).exists()}
        assert on_warm == seen
        assert not any(m.hot.joinpath("staging").iterdir()), "a staging file was left behind"
        m.start()


@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_threads_on_files_crossing_into_the_bucket(tmp_path: Path, durability: str,
                                                   s3_server: S3Server, bucket: str) -> None:
    """Versions over 8 KiB stream to the bucket while they are written; renames move stubs,
    unlinks and rewrites leave objects to delete."""
    with running(make_mount(tmp_path, "--durability", durability, "--bucket", f"s3://{bucket}/t",
                            "--endpoint-url", s3_server.endpoint, "--addressing-style", "path",
                            "--large-file-threshold", "8KiB")) as m:
        seen = run_threads(m.path, cold=True)
        m.stop()
        assert not any(m.hot.joinpath("staging").iterdir()), "a staging file was left behind"
        client = s3_server.client()
        assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads"), \
            "a multipart upload was left behind"
        uri = parse_bucket_uri(f"s3://{bucket}/t")
        named = {parse_stub(os.readlink(m.warm / name).encode(), uri).key for name in NAMES
                 if (m.warm / name).is_symlink()}
        stored = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert stored == named, "objects no stub names, or stubs naming no object"
        m.start()
        shown = {name: (m.path / name).read_bytes() for name in NAMES
                 if (m.path / name).exists()}
        assert shown == seen
        assert "streaming" in m.log(), "no file went to the bucket: the test did not test tiering"


def test_truncates_by_path_while_another_thread_opens_and_closes(tmp_path: Path) -> None:
    """A truncate by path stages the change on the file's open state; a reader's last close
    meanwhile retires that state. The truncate must still land, and leave no staging file
    behind (it was lost, its staging file left for no one)."""
    body = random.Random(3).randbytes(100_000)
    with running(make_mount(tmp_path)) as m:
        path = m.path / "f"
        path.write_bytes(body)
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                with open(path, "rb") as f:
                    f.read(10)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for size in range(99_000, 0, -1000):
                os.truncate(path, size)
                assert path.read_bytes() == body[:size], size
        finally:
            done.set()
            thread.join()
        m.stop()
        assert (m.warm / "f").read_bytes() == body[:1000]
        assert not any(m.hot.joinpath("staging").iterdir()), "a staging file was left behind"
        m.start()


@pytest.mark.parametrize("call", ["open", "stat", "xattr"])
def test_a_file_opened_or_read_while_names_are_exchanged_is_itself(tmp_path: Path,
                                                                    call: str) -> None:
    """The mount finds a file on the warm tier by its path; a rename through the mount
    between finding the path and using it makes the path name another file. An open, stat
    or xattr read of one file must never get the other's content, size or xattrs (the
    kernel would keep another file's bytes in this file's cached pages)."""
    with running(make_mount(tmp_path)) as m:
        x, y = m.path / "x", m.path / "y"
        x.write_bytes(b"x" * 3000)
        y.write_bytes(b"y" * 5000)
        os.setxattr(x, "user.who", b"x")
        os.setxattr(y, "user.who", b"y")
        ino = {os.stat(x).st_ino: b"x", os.stat(y).st_ino: b"y"}
        size = {b"x": 3000, b"y": 5000}
        done = threading.Event()
        errors: list[BaseException] = []

        def exchanger() -> None:
            try:
                while not done.is_set():
                    renameat2(x, y, RENAME_EXCHANGE)
            except BaseException as e:  # noqa: BLE001 (reported by the test)
                errors.append(e)

        thread = threading.Thread(target=exchanger)
        thread.start()
        try:
            for _ in range(3000):
                if call == "open":
                    fd = os.open(x, os.O_RDONLY | os.O_DIRECT)  # every read asks the mount
                    try:
                        who = ino[os.fstat(fd).st_ino]
                        buf = mmap.mmap(-1, 8192)
                        n = os.preadv(fd, [buf], 0)
                        assert buf[:n] == who * size[who], f"{who!r} opened as the other"
                    finally:
                        os.close(fd)
                elif call == "stat":
                    fd = os.open(x, os.O_RDONLY)
                    try:
                        st = os.fstat(fd)
                        assert st.st_size == size[ino[st.st_ino]], "another file's size"
                    finally:
                        os.close(fd)
                else:
                    fd = os.open(x, os.O_RDONLY)
                    try:
                        who = ino[os.fstat(fd).st_ino]
                        assert os.getxattr(fd, "user.who") == who, "another file's xattr"
                    finally:
                        os.close(fd)
        finally:
            done.set()
            thread.join()
        assert not errors, errors


def test_a_long_listing_read_while_names_are_exchanged_keeps_each_name_on_its_file(
        tmp_path: Path) -> None:
    """A listing is read from the warm tier once and handed to the kernel over several
    readdir calls (a large directory takes several getdents calls). Two names exchanged
    through the mount between those calls must not end up on each other's files: each name
    must read as the file the warm tier has under it (they are hard-linked, which is where
    the old code moved a name to the other file)."""
    names = [f"f{i:04d}" for i in range(3000)]
    with running(make_mount(tmp_path)) as m:
        d = m.path / "d"
        d.mkdir()
        for name in names:
            (d / name).write_bytes(name.encode() * 100)
        pair = os.listdir(m.warm / "d")[-2:]  # last in the listing: a later getdents call
        for name in pair:
            os.link(d / name, m.path / f"link-{name}")
        for round in range(4):
            with os.scandir(d) as it:
                next(it)  # the first getdents call is done, the listing read
                renameat2(d / pair[0], d / pair[1], RENAME_EXCHANGE)
                for entry in it:
                    entry.stat()
            for name in pair:
                assert (d / name).read_bytes() == (m.warm / "d" / name).read_bytes(), \
                    f"round {round}: {name} reads as another file"
                with open(d / name, "ab") as f:
                    f.write(b"!")
                assert (d / name).read_bytes() == (m.warm / "d" / name).read_bytes(), name


def test_a_long_listing_read_while_names_go_lists_every_other_name_once(
        tmp_path: Path) -> None:
    """Names unlinked or renamed away through the mount in the middle of a listing: the rest
    of the listing still gives every other name exactly once (offsets stay valid), and the
    names that went are left out (POSIX allows either; tierfs reads the rest of the listing
    again and finds them gone rather than hand the kernel files under names they left)."""
    names = [f"f{i:04d}" for i in range(3000)]
    with running(make_mount(tmp_path)) as m:
        d = m.path / "d"
        d.mkdir()
        for name in names:
            (d / name).write_bytes(b"x")
        late = os.listdir(m.warm / "d")[-40:]
        going, moving = set(late[::2]), set(late[1::2])
        with os.scandir(d) as it:
            listed = [next(it).name]
            for name in going:
                os.unlink(d / name)
            for name in moving:
                os.rename(d / name, m.path / name)
            for entry in it:
                listed.append(entry.name)
                if entry.name not in going | moving:
                    assert entry.stat().st_size == 1, entry.name
        assert len(listed) == len(set(listed)), "a name listed twice"
        assert set(names) - going - moving <= set(listed)
        assert not (set(listed) & (going | moving)), "names that went are listed"
        assert sorted(os.listdir(d)) == sorted(os.listdir(m.warm / "d"))
