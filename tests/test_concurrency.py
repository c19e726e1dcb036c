"""Several threads at once on a few files, through a real mount: whole-file writes (some
fsynced), reads, opens for writing, truncates, unlinks. There is no single expected tree, but
each file read must be one whole version written under its own name (or empty: truncated, or
not yet written), never bytes of another file or a mix; and once everything is closed and the
mount is gone, the warm tier must hold what the mount showed last.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from conftest import make_mount, running

NAMES = ["a", "b", "c", "d/a", "d/b", "d/c"]
THREADS = 4
ROUNDS = 150
HEADER = 64
#: Calls on one name take turns: on any file system two writers of one name interleave (open
#: with O_TRUNC, open with O_TRUNC, write, write), and a read racing a truncate returns part
#: of a version. Calls on different names, and what tierfs does in the background after a
#: close (publishing, write-back), run freely.
TURNS = {name: threading.Lock() for name in NAMES}


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
    assert len(fields) == 3 and fields[0] == name, f"{name} holds {head!r}"
    assert hashlib.sha256(body).hexdigest()[:16] == fields[2], f"{name} is torn ({head!r})"


def worker(root: Path, seed: int, errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        for serial in range(ROUNDS):
            name = rng.choice(NAMES)
            with TURNS[name]:
                one_call(root / name, name, rng.random(), version(name, seed * 1000 + serial, rng),
                         fsync=rng.random() < 0.2)
    except BaseException as e:  # noqa: BLE001 - handed to the test
        errors.append(e)


def one_call(path: Path, name: str, op: float, data: bytes, fsync: bool) -> None:
    try:
        if op < 0.4:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        elif op < 0.75:
            check(name, path.read_bytes())
        elif op < 0.85:
            # Open for writing and read through that handle (in write-back mode the open
            # waits for the last close's publish), writing nothing.
            fd = os.open(path, os.O_RDWR)
            try:
                check(name, os.pread(fd, 1 << 20, 0))
            finally:
                os.close(fd)
        elif op < 0.95:
            os.unlink(path)
        else:
            os.truncate(path, 0)
    except FileNotFoundError:
        pass  # not written yet, or unlinked


@pytest.mark.parametrize("durability", ["sync", "writeback"])
def test_threads_on_shared_files_never_mix_them(tmp_path: Path, durability: str) -> None:
    with running(make_mount(tmp_path, "--durability", durability)) as m:
        (m.path / "d").mkdir()
        errors: list[BaseException] = []
        threads = [threading.Thread(target=worker, args=(m.path, seed, errors))
                   for seed in range(1, THREADS + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        seen = {}
        for name in NAMES:
            try:
                seen[name] = (m.path / name).read_bytes()
            except FileNotFoundError:
                continue
            check(name, seen[name])
        m.stop()
        on_warm = {name: (m.warm / name).read_bytes() for name in NAMES
                   if (m.warm / name).exists()}
        assert on_warm == seen
        assert not any(m.hot.joinpath("staging").iterdir()), "a staging file was left behind"
        m.start()


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
