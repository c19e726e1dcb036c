"""The shared warm tree is hostile: anyone may replace what the mount looked up. A directory
swapped for a symlink to elsewhere must not take tierfs's own calls out of the warm tree (the
kernel follows a symlink in every component of a path but the last), a file swapped for a
symlink must not have a chmod applied to the link's target, and a file swapped for a FIFO must
not hang the open (and the namespace lock it holds) nor a demotion. And what was there before
these checks keeps working: a temp file whose directory was renamed (and a symlink put in its
place) is still removed, a path through a symlinked directory is one missing path (not a
refused plan, a kept record, or a failed listing), and an open waits for a lease's break."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tierfs.tiers import beneath
from tierfs.tiers.scan import is_internal
from tierfs.tiers.warm import WarmTier
from tierfs.vfs import listing
from tierfs.vfs.residency import Residency

from .conftest import ROOT, SetAttr, core_test, open_core
from .test_demote import DATA, crash_at


@core_test
async def test_create_under_a_directory_swapped_for_a_symlink_stays_in_the_warm_tree(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"d")
        # Another user, on the warm tier directly: the directory becomes a link out.
        os.rmdir(core.warm / "d")
        os.symlink(outside, core.warm / "d")
        try:
            fh, _, _, _ = await core.fs.create(d, b"planted", 0o644, os.O_WRONLY,
                                               os.getuid(), os.getgid())
            await core.write_all(fh, b"owned")
            await core.close(fh)
        except OSError:
            pass  # refused: fine
        assert not (outside / "planted").exists(), (
            "tierfs created a file outside the warm root, through a symlink in the parent")


@core_test
async def test_lookup_and_read_under_a_directory_swapped_for_a_symlink_stay_in_the_warm_tree(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"private data")
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"d")
        os.rmdir(core.warm / "d")
        os.symlink(outside, core.warm / "d")
        try:
            inode, _ = await core.fs.lookup(d, b"secret")
            fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)
            data = await core.read_all(fh)
            await core.close(fh)
        except OSError:
            return  # refused: fine
        assert data != b"private data", "tierfs served a file from outside the warm root"


@core_test
async def test_unlink_under_a_directory_swapped_for_a_symlink_stays_in_the_warm_tree(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    async with open_core(tmp_path) as core:
        d = await core.mkdirs(b"d")
        await core.write_file(b"d/victim", b"mine")
        os.unlink(core.warm / "d" / "victim")
        os.rmdir(core.warm / "d")
        os.symlink(outside, core.warm / "d")
        try:
            await core.fs.unlink(d, b"victim")
        except OSError:
            pass
        assert (outside / "victim").exists(), "tierfs removed a file outside the warm root"



@core_test
async def test_chmod_of_a_file_swapped_for_a_symlink_does_not_reach_its_target(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "id_rsa"
    secret.write_bytes(b"private")
    os.chmod(secret, 0o600)
    async with open_core(tmp_path) as core:
        await core.write_file(b"f", b"data")
        inode = await core.lookup_path(b"f")
        os.unlink(core.warm / "f")
        os.symlink(secret, core.warm / "f")
        try:
            await core.fs.setattr(inode.ino, SetAttr(mode=0o100666))
        except OSError:
            pass  # refused: fine
        mode = stat.S_IMODE(os.stat(secret).st_mode)
        assert mode == 0o600, (f"a chmod through the mount changed a file outside the warm "
                               f"tree through a symlink: now {mode:o}")



def _release(fifo: Path) -> None:
    """Open the FIFO for writing once, which lets a blocked reader's open return."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:  # ENXIO: no reader (the open did not block)
        assert e.errno in (errno.ENXIO, errno.ENOENT)
        return
    os.close(fd)


@core_test
async def test_opening_a_file_replaced_by_a_fifo_does_not_hang(tmp_path: Path) -> None:
    async with open_core(tmp_path, attr_timeout=0.0) as core:
        await core.write_file(b"f", b"data")
        inode = await core.lookup_path(b"f")
        fifo = core.warm / "f"
        os.unlink(fifo)
        os.mkfifo(fifo)
        result: list[object] = []
        done = trio.Event()

        async def opener() -> None:
            try:
                result.append(await core.fs.open(inode.ino, os.O_RDONLY))
            except OSError as e:
                result.append(e)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(opener)
            with trio.move_on_after(3):
                await done.wait()
            hung = not done.is_set()
            # A rename through the mount meanwhile (it takes the namespace lock exclusively).
            renamed = False
            with trio.move_on_after(2):
                await core.write_file(b"g", b"x")
                await core.fs.rename(ROOT, b"g", ROOT, b"h", 0)
                renamed = True
            await trio.to_thread.run_sync(_release, fifo)
        assert renamed or not hung, "both: the open hung AND a rename hung behind it (namespace lock held)"
        assert not hung, ("open of a file replaced by a FIFO on the warm tier blocked "
                          "(a warm worker thread stuck in open(2) of the FIFO)")
        assert renamed, "a rename hung behind the blocked open (namespace lock held)"


def test_directories_are_reached_beneath_the_root_without_a_symlink(tmp_path: Path,
                                                                    monkeypatch: object) -> None:
    """Both ways of ``tiers.beneath`` (openat2, and the walk where it is missing) reach plain
    directories and refuse a symlink anywhere on the way, and a way out of the root."""
    import pytest

    from tierfs.tiers import beneath
    (tmp_path / "root" / "a" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "a" / "link")
    root = os.open(tmp_path / "root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for openat2 in (True, False):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(beneath, "_have_openat2", openat2 and beneath._have_openat2)
                fd = beneath.open_dir_beneath(root, b"a/b")
                assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "root" / "a" / "b"))
                os.close(fd)
                for bad in (b"a/link", b"a/link/x", b"a/../.."):
                    with pytest.raises(OSError) as e:
                        os.close(beneath.open_dir_beneath(root, bad))
                    assert e.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)
    finally:
        os.close(root)


@core_test
async def test_demoting_a_file_replaced_by_a_fifo_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    (tmp_path / "warm" / "big.bin").write_bytes(b"x" * 100_000)
    async with open_core(tmp_path) as c:
        # Another user, on the warm tier directly: the file becomes a FIFO.
        fifo = c.warm / "big.bin"
        os.unlink(fifo)
        os.mkfifo(fifo)
        done = trio.Event()
        outcome: list[object] = []

        async def demote() -> None:
            outcome.append(await c.fs.demoter.demote(b"big.bin"))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(demote)
            with trio.move_on_after(3):
                await done.wait()
            hung = not done.is_set()
            await trio.to_thread.run_sync(_release, fifo)  # (so that the test ends)
        assert not hung, ("the demotion of a file replaced by a FIFO hung in open(2) "
                          "(warmswap.open_plain opens without O_NONBLOCK)")


def test_a_temp_file_is_dropped_after_its_directory_was_renamed_and_linked(
        tmp_path: Path) -> None:
    root = tmp_path / "warm"
    (root / "d").mkdir(parents=True)
    warm = WarmTier(root, 1)
    try:
        tmp, fd = warm.open_temp(b"d")
        os.write(fd, b"a whole copy of the file")
        # Another user: the directory renamed, a symlink left at its old name.
        os.rename(root / "d", root / "d2")
        os.symlink("d2", root / "d")
        err = None
        try:
            warm.drop_temp(tmp, fd)  # (as write_temp or Mirror.drop do on a failure)
        except OSError as e:
            err = e
        left = [n for n in os.listdir(root / "d2") if is_internal(os.fsencode(n))]
        assert left == [], (f"the temp file was left behind ({left}); drop_temp raised {err!r}")
        assert err is None, f"drop_temp raised {err!r}"
    finally:
        warm.close()


@core_test
async def test_a_truncate_waits_for_a_read_lease_to_be_given_back(tmp_path: Path) -> None:
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "warm" / "f"
    path.write_bytes(b"some data")
    async with open_core(tmp_path) as c:
        inode = await c.lookup_path(b"f")
        # Another holder of the file (a delegation, an oplock): a read lease, given back as
        # soon as it is asked to break (SIGIO), as any lease holder does.
        lfd = os.open(path, os.O_RDONLY)
        breaks: list[int] = []

        def give_back(signum: int, frame: object) -> None:
            breaks.append(signum)
            fcntl.fcntl(lfd, fcntl.F_SETLEASE, fcntl.F_UNLCK)

        old = signal.signal(signal.SIGIO, give_back)
        try:
            fcntl.fcntl(lfd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            err = None
            try:
                await c.fs.setattr(inode.ino, SetAttr(size=4))
            except OSError as e:
                err = e
        finally:
            signal.signal(signal.SIGIO, old)
            os.close(lfd)
        assert err is None, (f"a truncate of a file someone holds a read lease on failed "
                             f"({err!r}) instead of waiting for the lease to be given back "
                             f"(WarmTier.open opens with O_NONBLOCK)")
        assert path.read_bytes() == b"some"


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_a_plan_naming_a_path_through_a_symlinked_directory_is_not_refused_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openat2: bool) -> None:
    monkeypatch.setattr(beneath, "_have_openat2", openat2 and beneath._have_openat2)

    @core_test
    async def body(tmp_path: Path) -> None:
        (tmp_path / "warm" / "d2").mkdir(parents=True)
        (tmp_path / "warm" / "d2" / "f").write_bytes(b"data")
        (tmp_path / "warm" / "g").write_bytes(b"other")
        os.symlink("d2", tmp_path / "warm" / "d")  # (mv d d2; ln -s d2 d)
        async with open_core(tmp_path) as c:
            try:
                resolved = await Residency(c.fs).resolve([b"g", b"d/f"])
            except OSError as e:
                pytest.fail(f"the whole plan was refused ({e!r}) for one path through a "
                            f"symlinked directory; under the other resolver it is "
                            f"{'ENOTDIR (answered missing)' if openat2 else 'ELOOP'}")
            assert resolved[0] is not None and [s.path for s in resolved[0]] == ["g"]

    body(tmp_path)


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_a_crashed_demotion_under_a_directory_renamed_and_linked_is_settled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openat2: bool) -> None:
    monkeypatch.setattr(beneath, "_have_openat2", openat2 and beneath._have_openat2)

    @core_test
    async def body(tmp_path: Path) -> None:
        (tmp_path / "warm" / "d").mkdir(parents=True)
        (tmp_path / "warm" / "d" / "big.bin").write_bytes(DATA)
        store = await crash_at(tmp_path, "swap", b"d/big.bin")
        os.rename(tmp_path / "warm" / "d", tmp_path / "warm" / "d2")
        os.symlink("d2", tmp_path / "warm" / "d")
        for _ in range(2):  # two mounts: the record would be retried at each
            async with open_core(tmp_path, store=store) as c:
                await c.recover()
                await c.fs.save_index()
                left = [k for k, _ in c.fs.index.items("meta") if k.startswith(b"demoting/")]
        assert left == [], ("the record of a crashed demotion is kept for ever: its path's "
                            "directory became a symlink, and ELOOP is not taken for 'gone'")

    body(tmp_path)


def test_dropping_a_moved_temp_file_does_not_follow_a_symlink_out_of_the_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "warm"
    (root / "d").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    warm = WarmTier(root, 1)
    try:
        tmp, fd = warm.open_temp(b"d")
        name = os.fsdecode(tmp.rpartition(b"/")[2])
        (outside / name).write_bytes(b"not tierfs's")
        os.rename(root / "d", root / "d2")  # (renamed while the temp was written)
        real_readlink = os.readlink

        def racing_readlink(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            out = real_readlink(path, *args, **kwargs)
            if str(path).startswith("/proc/self/fd/"):
                # Another user, right then: the directory becomes a symlink out of the tree.
                os.rename(root / "d2", root / "d3")
                os.symlink(outside, root / "d2")
            return out

        monkeypatch.setattr(os, "readlink", racing_readlink)
        try:
            warm.drop_temp(tmp, fd)
        except OSError:
            pass
        finally:
            monkeypatch.setattr(os, "readlink", real_readlink)
        assert (outside / name).exists(), (
            "drop_temp removed a file outside the warm tree, through a symlink in the "
            "absolute path it read from /proc/self/fd")
    finally:
        warm.close()


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_a_long_listing_whose_parent_became_a_symlink_does_not_fail_with_eloop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openat2: bool) -> None:
    monkeypatch.setattr(beneath, "_have_openat2", openat2 and beneath._have_openat2)
    monkeypatch.setattr(listing, "MOST_HELD", 0)  # (as with 64 other listings under way)

    @core_test
    async def body(tmp_path: Path) -> None:
        d = tmp_path / "warm" / "p" / "d"
        d.mkdir(parents=True)
        for i in range(3 * listing.READ_BATCH):
            (d / f"f{i:04}").write_bytes(b"")
        async with open_core(tmp_path) as c:
            inode = await c.lookup_path(b"p/d")
            fh = await c.fs.opendir(inode.ino)
            got = await c.fs.readdir(fh, 0)
            assert got
            os.rename(tmp_path / "warm" / "p", tmp_path / "warm" / "p2")
            os.symlink("p2", tmp_path / "warm" / "p")
            start = got[-1][0]
            try:
                while True:
                    more = await c.fs.readdir(fh, start)
                    if not more:
                        break
                    start = more[-1][0]
            except OSError as e:
                assert e.errno != errno.ELOOP, (
                    "readdir failed with ELOOP: a parent directory swapped for a symlink is "
                    "not taken for a directory gone (ENOTDIR, under the fallback walk)")
                raise
            finally:
                await c.fs.releasedir(fh)

    body(tmp_path)


@core_test
async def test_a_fifo_swapped_in_at_a_lease_break_does_not_hang_the_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "warm").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "warm" / "f"
    path.write_bytes(b"some data")
    fifo_src = tmp_path / "fifo"
    os.mkfifo(fifo_src)
    async with open_core(tmp_path, attr_timeout=0.0) as c:
        inode = await c.lookup_path(b"f")
        # The hostile: a write lease on its own file (no one else has it open).
        lfd = os.open(path, os.O_RDWR)

        def give_back(signum: int, frame: object) -> None:
            try:  # (the swap itself is made below, where the race is won)
                fcntl.fcntl(lfd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            except OSError:
                pass

        old = signal.signal(signal.SIGIO, give_back)
        fcntl.fcntl(lfd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        real_open = os.open
        swapped: list[bool] = []

        def racing_open(name, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return real_open(name, flags, *args, **kwargs)
            except BlockingIOError:
                if name == b"f" and not swapped:
                    # The lease holder's SIGIO handler, right then: a FIFO in the file's
                    # place, and the lease given up.
                    swapped.append(True)
                    os.rename(fifo_src, path)
                    fcntl.fcntl(lfd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
                raise

        monkeypatch.setattr(os, "open", racing_open)
        result: list[object] = []
        finished = trio.Event()

        async def opener() -> None:
            try:
                result.append(await c.fs.open(inode.ino, os.O_RDONLY))
            except OSError as e:
                result.append(e)
            finished.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(opener)
                with trio.move_on_after(3):
                    await finished.wait()
                hung = not finished.is_set()
                renamed = False
                with trio.move_on_after(2):
                    await c.write_file(b"g", b"x")
                    await c.fs.rename(ROOT, b"g", ROOT, b"h", 0)
                    renamed = True
                await trio.to_thread.run_sync(_release, path)  # (so that the test ends)
        finally:
            monkeypatch.setattr(os, "open", real_open)
            os.close(lfd)
            signal.signal(signal.SIGIO, old)
        assert not hung, ("an open that met a lease being broken was made again without "
                          "O_NONBLOCK on whatever the name held then (a FIFO): it blocked "
                          f"in open(2); a rename through the mount {'went' if renamed else 'hung too (namespace lock held)'}")


@core_test
async def test_first_read_of_an_open_from_memory_whose_directory_became_a_symlink_is_stale(
        tmp_path: Path) -> None:
    (tmp_path / "warm" / "d").mkdir(parents=True)
    (tmp_path / "warm" / "d" / "f").write_bytes(b"data")
    async with open_core(tmp_path, attr_timeout=60.0) as c:
        inode = await c.lookup_path(b"d/f")
        # Another user, on the warm tier directly.
        os.rename(tmp_path / "warm" / "d", tmp_path / "warm" / "d2")
        os.symlink("d2", tmp_path / "warm" / "d")
        fh, _, _ = await c.fs.open(inode.ino, os.O_RDONLY)  # (from memory: no warm call)
        try:
            await c.read_all(fh)
        except OSError as e:
            assert e.errno == errno.ESTALE, (
                f"the first read of a file whose directory became a symlink failed with "
                f"{errno.errorcode.get(e.errno, e.errno)}, not ESTALE as before 95bf2cc: "
                f"Core.open_warm takes only ELOOP for 'replaced', and a symlink on the way "
                f"is ENOTDIR now")
        finally:
            await c.close(fh)


def test_dropping_a_moved_temp_file_deep_in_the_tree_does_not_raise(tmp_path: Path) -> None:
    root = tmp_path / "warm"
    root.mkdir()
    # Directories 4000 bytes deep below the root (a path that fits under a mount point).
    parts, length = [], 0
    while length + 201 < 4000:
        parts.append("p" * 200)
        length += 201
    parts.append("q" * (4000 - length - 1))
    rel = "/".join(parts)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:  # (made one at a time: the whole is past what a path call takes)
            os.mkdir(part, dir_fd=fd)
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    warm = WarmTier(root, 1)
    try:
        tmp, tfd = warm.open_temp(rel.encode())
        os.write(tfd, b"a whole copy of the file")
        # Another user renames the deepest directory while the copy is made.
        pfd = os.open("/".join(parts[:-1]), os.O_RDONLY | os.O_DIRECTORY, dir_fd=warm.fd)
        try:
            os.rename(parts[-1], "r" * len(parts[-1]), src_dir_fd=pfd, dst_dir_fd=pfd)
        finally:
            os.close(pfd)
        err = None
        try:
            warm.drop_temp(tmp, tfd)  # (as write_temp does when the copy failed)
        except OSError as e:
            err = e
        assert err is None, (
            f"drop_temp raised {errno.errorcode.get(err.errno, err.errno)} ({err!r}): the "
            f"readlink of /proc/self/fd in _unlink_moved fails past PATH_MAX and is not "
            f"guarded, so it replaces the error the caller was cleaning up after")
    finally:
        warm.close()


_IN_OPEN = 0x20


def _mknod_or_skip(path: Path, rdev: int) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, rdev)
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")


def test_a_device_in_a_files_place_is_not_opened(tmp_path: Path) -> None:
    root = tmp_path / "warm"
    root.mkdir()
    _mknod_or_skip(root / "f", os.makedev(1, 3))  # (/dev/null: harmless to open here)
    libc = ctypes.CDLL(None, use_errno=True)
    ifd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert ifd >= 0
    warm = WarmTier(root, 1)
    try:
        assert libc.inotify_add_watch(ifd, os.fsencode(root / "f"), _IN_OPEN) >= 0
        with pytest.raises(OSError):
            os.close(warm.open(b"f", os.O_RDONLY))
        try:
            events = os.read(ifd, 4096)
        except BlockingIOError:
            events = b""
        assert not events, ("WarmTier.open ran open(2) on a device node put in a file's "
                            "place (refused only after: the driver's open ran)")
    finally:
        warm.close()
        os.close(ifd)


_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tierfs.tiers.warm import WarmTier
assert os.getsid(0) == os.getpid()
warm = WarmTier(Path(sys.argv[2]), 1)
try:
    os.close(warm.open(b"f", os.O_RDONLY))
except OSError:
    pass
print(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
"""


def test_a_tty_in_a_files_place_does_not_become_the_daemons_controlling_terminal(
        tmp_path: Path) -> None:
    tty = next((f"/dev/tty{n}" for n in range(2, 12) if os.path.exists(f"/dev/tty{n}")), None)
    if tty is None:
        pytest.skip("no virtual console here")
    try:
        held = os.open(tty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # (anyone else's use)
    except OSError as e:
        pytest.skip(f"{tty}: {e}")
    try:
        root = tmp_path / "warm"
        root.mkdir()
        _mknod_or_skip(root / "f", os.stat(tty).st_rdev)
        repo = str(Path(__file__).resolve().parents[2])
        out = subprocess.run([sys.executable, "-c", _CHILD, repo, str(root)],
                             start_new_session=True, capture_output=True, text=True,
                             timeout=20)
        assert out.returncode == 0, out.stderr
        tty_nr = int(out.stdout.split()[-1])
        assert tty_nr == 0, (
            f"a session leader (as the daemon is) that opened a warm file replaced by a tty "
            f"node has {tty} (tty_nr {tty_nr}) as its controlling terminal after the refused "
            f"open: WarmTier.open opens the node itself, without O_NOCTTY")
    finally:
        os.close(held)


DIRTY = b"d" * 70_000


async def _dirty_without_descriptor(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``a`` created and written through the mount, its publish failed after it let go of
    the created file's descriptor (the warm tier refused the copy: an NFS hiccup)."""
    await core.recover()
    core.fs.writeback.quiet = core.fs.writeback.max_wait = 60.0
    fh = await core.create(b"a")
    await core.write_all(fh, DIRTY)
    await core.close(fh)  # acknowledged (write-back)
    warm_cls = type(core.fs.warm)

    def publish_copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "the warm tier did not answer")

    monkeypatch.setattr(warm_cls, "publish_copy", publish_copy)
    assert await core.publish_all() != []
    inode = await core.lookup_path(b"a")
    data = inode.data
    assert data is not None and data.dirty and data.warm_fd is None \
        and not data.warm_deferred, "setup: not a dirty file without a warm descriptor"


@pytest.mark.parametrize("swap", ["symlink", "fifo"])
@core_test
async def test_an_unlink_of_a_name_replaced_elsewhere_goes_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        await _dirty_without_descriptor(core, monkeypatch)
        # Another node replaces the name: mv elsewhere-made-thing a
        path = core.warm_path(b"a")
        path.unlink()
        if swap == "symlink":
            os.symlink("somewhere", path)
        else:
            os.mkfifo(path)
        try:
            await core.fs.unlink(ROOT, b"a")
        except OSError as e:
            pytest.fail(f"rm a failed with {errno.errorcode.get(e.errno, e.errno)} "
                        f"({e}): the name now holds another node's {swap}, which the "
                        "removal tried to open first (vfs/removal.py open_before_removal)")
        finally:
            monkeypatch.undo()
        assert not os.path.lexists(path)


@core_test
async def test_a_rename_over_a_name_removed_elsewhere_goes_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_core(tmp_path, durability="writeback", by_rename=False) as core:
        await _dirty_without_descriptor(core, monkeypatch)
        core.warm_path(b"x").write_bytes(b"new content")
        await core.lookup_path(b"x")
        core.warm_path(b"a").unlink()  # another node: rm a
        try:
            await core.fs.rename(ROOT, b"x", ROOT, b"a", 0)
        except OSError as e:
            pytest.fail(f"mv x a failed with {errno.errorcode.get(e.errno, e.errno)} ({e}): "
                        "a was removed by another node, and the rename first opened the "
                        "file it would replace (vfs/removal.py open_before_removal)")
        finally:
            monkeypatch.undo()
        assert core.warm_path(b"a").read_bytes() == b"new content"


@pytest.mark.parametrize("swap", ["file", "symlink", "fifo"])
@core_test
async def test_unlink_of_a_replaced_name_with_a_deferred_reader_goes_through(
        tmp_path: Path, swap: str) -> None:
    async with open_core(tmp_path) as core:
        await core.recover()
        core.warm_path(b"a").write_bytes(b"old content")
        inode = await core.lookup_path(b"a")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)  # answered from memory
        assert inode.data is not None and inode.data.warm_deferred, "setup: not deferred"
        # Another node replaces the name: mv its-thing a
        path = core.warm_path(b"a")
        other = core.warm_path(b"elsewhere")
        if swap == "file":
            other.write_bytes(b"another node's file")
        elif swap == "symlink":
            os.symlink("somewhere", other)
        else:
            os.mkfifo(other)
        os.rename(other, path)
        try:
            await core.fs.unlink(ROOT, b"a")
        except OSError as e:
            pytest.fail(f"rm a failed with {errno.errorcode.get(e.errno, e.errno)} ({e}): "
                        "a reader's open answered from memory made the removal open the "
                        f"replaced name ({swap}) first (removal.open_before_removal -> "
                        "Core.open_warm)")
        finally:
            await core.fs.release(fh)
        assert not os.path.lexists(path)


@core_test
async def test_rename_over_a_name_removed_elsewhere_with_a_deferred_reader_goes_through(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        await core.recover()
        core.warm_path(b"a").write_bytes(b"old content")
        core.warm_path(b"x").write_bytes(b"new content")
        await core.lookup_path(b"x")
        inode = await core.lookup_path(b"a")
        fh, _, _ = await core.fs.open(inode.ino, os.O_RDONLY)  # answered from memory
        assert inode.data is not None and inode.data.warm_deferred, "setup: not deferred"
        core.warm_path(b"a").unlink()  # another node: rm a
        try:
            await core.fs.rename(ROOT, b"x", ROOT, b"a", 0)
        except OSError as e:
            pytest.fail(f"mv x a failed with {errno.errorcode.get(e.errno, e.errno)} ({e}): "
                        "a was removed by another node while a reader had it open from "
                        "memory; the rename first opened it (open_before_removal -> "
                        "Core.open_warm)")
        finally:
            await core.fs.release(fh)
        assert core.warm_path(b"a").read_bytes() == b"new content"
