"""Through a real mount: a create without O_EXCL whose name another node made between the
kernel's LOOKUP and CREATE answers ESTALE, and the kernel's path walk retries once with
LOOKUP_REVAL, opening the file made meanwhile. Checked for each way a process may open (open,
Python's open "w", creat, openat2), through a multi-root mount, with the permission checks the
kernel then makes itself (supplementary groups), and for what the user sees when the retry
races too.

The daemon is tests/racing_lookup.py: tierfs in the foreground, whose first N lookups of a
raced name answer ENOENT although the warm tier holds it. Every lookup and create of the names
watched is logged, so each test also shows that the race was taken (a CREATE answered ESTALE,
then the retry)."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SAVED = b"another node's save, longer than ours"


@contextmanager
def racing_mount(tmp_path: Path, races: dict[str, int], *extra: str,
                 warm_arg: str | None = None, gone: str = "", gone_found: str = ""
                 ) -> Iterator[tuple[Path, Path, Path]]:
    hot, warm, mnt = tmp_path / "hot", tmp_path / "warm", tmp_path / "mnt"
    for d in (hot, warm, mnt):
        d.mkdir(exist_ok=True)
    helper = HERE / "racing_lookup.py"
    log = tmp_path / "race.log"
    env = dict(os.environ, RACE_LOG=str(log), RACE_WARM=str(warm),
               RACE=",".join(f"{k}:{v}" for k, v in races.items()), RACE_GONE=gone,
               RACE_GONE_FOUND=gone_found)
    proc = subprocess.Popen(
        [sys.executable, str(helper), str(mnt), "--hot", str(hot),
         "--warm", warm_arg or str(warm), "--durability", "writeback", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "tierfs did not mount"
            time.sleep(0.05)
        yield warm, mnt, log
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def events(log: Path, name: str) -> list[str]:
    words = [line.split(" ") for line in log.read_text().splitlines()]
    return [" ".join([w[0], *w[2:]]) if len(w) > 2 else " ".join(w)
            for w in words if w[1] == name]


# -- the ways a process opens --------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CREATE_TRUNC = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def _check(fd: int) -> int:
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def open_os(path: Path) -> int:
    return os.open(path, CREATE_TRUNC, 0o644)


def open_python_w(path: Path) -> int:
    with open(path, "wb") as f:  # (O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
        return os.dup(f.fileno())


def open_creat(path: Path) -> int:
    _libc.creat.argtypes = [ctypes.c_char_p, ctypes.c_uint]
    return _check(_libc.creat(os.fsencode(path), 0o644))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def open_openat2(path: Path) -> int:
    how = _OpenHow(CREATE_TRUNC | os.O_CLOEXEC, 0o644, 0)
    _libc.syscall.restype = ctypes.c_long
    return _check(_libc.syscall(437, -100, os.fsencode(path), ctypes.byref(how),
                                ctypes.sizeof(how)))


OPENERS = {"open": open_os, "python_w": open_python_w, "creat": open_creat,
           "openat2": open_openat2}


@pytest.mark.parametrize("how", list(OPENERS))
def test_every_open_call_opens_the_file_made_meanwhile(tmp_path: Path, how: str) -> None:
    with racing_mount(tmp_path, {"ckpt.pt": 1}) as (warm, mnt, log):
        (warm / "ckpt.pt").write_bytes(SAVED)
        fd = OPENERS[how](mnt / "ckpt.pt")
        try:
            os.write(fd, b"ours")
        finally:
            os.close(fd)
        assert (mnt / "ckpt.pt").read_bytes() == b"ours"
        seen = events(log, "ckpt.pt")
        assert seen[:3] == ["lookup ENOENT-raced", "create ESTALE", "lookup found"], seen
        assert "create ok" not in seen


def test_multi_root_mount(tmp_path: Path) -> None:
    (tmp_path / "warm").mkdir()
    with racing_mount(tmp_path, {"ckpt.pt": 1},
                      warm_arg=f"a={tmp_path / 'warm'}") as (warm, mnt, log):
        (warm / "ckpt.pt").write_bytes(SAVED)
        with open(mnt / "a" / "ckpt.pt", "wb") as f:
            f.write(b"ours")
        assert (mnt / "a" / "ckpt.pt").read_bytes() == b"ours"
        assert events(log, "ckpt.pt")[:3] == ["lookup ENOENT-raced", "create ESTALE",
                                              "lookup found"]


def test_a_symlink_made_meanwhile_is_followed_as_on_a_local_disk(tmp_path: Path) -> None:
    with racing_mount(tmp_path, {"link": 1}) as (warm, mnt, log):
        os.symlink("target", warm / "link")
        with open(mnt / "link", "wb") as f:
            f.write(b"ours")
        assert (warm / "link").is_symlink()
        assert (mnt / "target").read_bytes() == b"ours"
        with pytest.raises(OSError) as caught:  # and O_NOFOLLOW refuses it, as it would
            os.open(mnt / "link", CREATE_TRUNC | os.O_NOFOLLOW)
        assert caught.value.errno == errno.ELOOP


def test_a_directory_made_meanwhile_is_eisdir(tmp_path: Path) -> None:
    with racing_mount(tmp_path, {"d": 1}) as (warm, mnt, log):
        (warm / "d").mkdir()
        with pytest.raises(IsADirectoryError):
            os.open(mnt / "d", CREATE_TRUNC)
        assert events(log, "d")[:2] == ["lookup ENOENT-raced", "create ESTALE"]


def test_made_and_removed_before_the_retry_is_created(tmp_path: Path) -> None:
    with racing_mount(tmp_path, {"f": 1}, gone="f") as (warm, mnt, log):
        (warm / "f").write_bytes(SAVED)
        with open(mnt / "f", "wb") as f:
            f.write(b"ours")
        assert (mnt / "f").read_bytes() == b"ours"
        assert events(log, "f") == ["lookup ENOENT-raced", "create ESTALE", "removed f",
                                    "lookup ENOENT", "create ok"]


def test_the_retry_racing_too_answers_estale(tmp_path: Path) -> None:
    """What docs/semantics.md says the user sees when the name races at both walks."""
    with racing_mount(tmp_path, {"f": 2}) as (warm, mnt, log):
        (warm / "f").write_bytes(SAVED)
        with pytest.raises(OSError) as caught:
            os.open(mnt / "f", CREATE_TRUNC)
        assert caught.value.errno == errno.ESTALE
        assert (warm / "f").read_bytes() == SAVED
        assert events(log, "f") == ["lookup ENOENT-raced", "create ESTALE",
                                    "lookup ENOENT-raced", "create ESTALE"]


def test_removed_between_the_retry_lookup_and_the_open(tmp_path: Path) -> None:
    """Made after the first lookup, removed after the retry's lookup: open(O_CREAT) answers
    ENOENT (a file system never answers ENOENT to an O_CREAT open of a name in a directory
    that exists), as it would with the same race on any file system whose open is a lookup,
    then an open: a double race, documented, not hidden."""
    with racing_mount(tmp_path, {"f": 1}, gone_found="f") as (warm, mnt, log):
        (warm / "f").write_bytes(SAVED)
        with pytest.raises(OSError) as caught:
            os.open(mnt / "f", CREATE_TRUNC)
        assert caught.value.errno == errno.ENOENT
        assert events(log, "f")[:4] == ["lookup ENOENT-raced", "create ESTALE",
                                        "lookup found", "removed f"]


def _as_user(cwd: Path, groups: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid", "4321", "--regid", "4321",
                           f"--groups={groups}", "sh", "-c", script],
                          cwd=cwd, capture_output=True, text=True, timeout=30)


def test_the_kernel_checks_permissions_through_supplementary_groups(tmp_path: Path) -> None:
    with racing_mount(tmp_path, {"ckpt": 1, "theirs": 1}, "--allow-other") as (warm, mnt, log):
        shared = warm / "shared"
        shared.mkdir()
        os.chmod(shared, 0o777)
        for name in ("ckpt", "theirs"):
            (shared / name).write_bytes(SAVED)
        os.chown(shared / "ckpt", 1000, 5555)
        os.chmod(shared / "ckpt", 0o660)  # writable through group 5555 only
        os.chown(shared / "theirs", 1000, 6666)
        os.chmod(shared / "theirs", 0o660)
        done = _as_user(mnt / "shared", "5555", "printf ours > ckpt")
        assert done.returncode == 0, done.stderr
        assert (shared / "ckpt").read_bytes() == b"ours" or (
            mnt / "shared" / "ckpt").read_bytes() == b"ours"
        assert events(log, "ckpt")[:3] == ["lookup ENOENT-raced", "create ESTALE",
                                           "lookup found"]
        refused = _as_user(mnt / "shared", "5555", "printf ours > theirs")
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        assert (shared / "theirs").read_bytes() == SAVED


def test_other_new_names_answer_eexist_as_posix_says(tmp_path: Path) -> None:
    """mkdir, mknod (a FIFO, and a regular file: what knfsd and ksmbd send for a create,
    through vfs_create), symlink and link of a name another node made meanwhile: EEXIST, which
    is what each of these calls answers for a name that exists (no retry is wanted: ESTALE
    there would reach an NFS client of a re-export as a stale handle)."""
    names = {"d": 1, "p": 1, "r": 1, "s": 1, "l": 1}
    with racing_mount(tmp_path, names) as (warm, mnt, log):
        (warm / "src").write_bytes(b"x")
        for name in names:
            (warm / name).write_bytes(SAVED)
        calls = {"d": lambda: os.mkdir(mnt / "d"), "p": lambda: os.mkfifo(mnt / "p"),
                 "r": lambda: os.mknod(mnt / "r", 0o644 | 0o100000),
                 "s": lambda: os.symlink("x", mnt / "s"),
                 "l": lambda: os.link(mnt / "src", mnt / "l")}
        for name, call in calls.items():
            with pytest.raises(FileExistsError):
                call()
            assert (warm / name).read_bytes() == SAVED
            assert events(log, name)[0] == "lookup ENOENT-raced", (name, events(log, name))
