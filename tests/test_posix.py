"""POSIX behaviour through a real mount, checked against what the warm tier then holds."""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from collections.abc import Iterator
import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Mount, make_mount, renameat2, running

libc = ctypes.CDLL(None, use_errno=True)

def wait_for(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_files_and_directories_land_on_the_warm_tier(mount: Mount) -> None:
    m, w = mount.path, mount.warm
    (m / "d" / "e").mkdir(parents=True)
    (m / "d" / "e" / "f.txt").write_bytes(b"hello")
    assert (w / "d" / "e" / "f.txt").read_bytes() == b"hello"
    assert sorted(os.listdir(m / "d")) == ["e"]
    assert (m / "d" / "e" / "f.txt").stat().st_size == 5
    # Nothing on the hot tier is named after the user's path.
    hot_names = {p.name for p in mount.hot.rglob("*")}
    assert "f.txt" not in hot_names and "e" not in hot_names


def test_errors_a_posix_filesystem_gives(mount: Mount) -> None:
    m = mount.path
    (m / "dir").mkdir()
    (m / "dir" / "x").write_text("x")
    (m / "file").write_text("f")
    assert errno_of(os.stat, m / "missing") == errno.ENOENT
    assert errno_of(os.mkdir, m / "dir") == errno.EEXIST
    assert errno_of(os.rmdir, m / "dir") == errno.ENOTEMPTY
    assert errno_of(os.unlink, m / "dir") == errno.EISDIR
    assert errno_of(os.open, m / "dir", os.O_WRONLY) == errno.EISDIR
    assert errno_of(os.mkdir, m / "file" / "sub") == errno.ENOTDIR
    assert errno_of(os.rmdir, m / "file") == errno.ENOTDIR
    assert errno_of(os.open, m / "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    assert errno_of(os.rename, m / "dir", m / "dir" / "inside") == errno.EINVAL
    assert errno_of(os.link, m / "dir", m / "dirlink") == errno.EPERM


def test_name_limit_follows_statfs(mount: Mount) -> None:
    namemax = os.statvfs(mount.path).f_namemax
    assert namemax == os.statvfs(mount.warm).f_namemax
    ok = mount.path / ("n" * namemax)
    ok.write_text("longest")
    assert ok.read_text() == "longest"
    assert errno_of(os.open, mount.path / ("n" * (namemax + 1)),
                    os.O_CREAT | os.O_WRONLY) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, mount.path / ("d" * (namemax + 1))) == errno.ENAMETOOLONG


def test_deep_path_close_to_path_max(tmp_path: Path) -> None:
    # The warm root's own path is ~300 bytes longer than the mount point's, so the same tree
    # on the warm tier is past PATH_MAX: tierfs must not build absolute warm paths.
    long_warm = tmp_path / ("w" * 250) / ("w" * 50)
    long_warm.mkdir(parents=True)
    m = make_mount(tmp_path)
    m.warm = long_warm
    with running(m):
        parts, length = [], len(str(m.path)) + len("/leaf")
        while length + 201 < 4090:
            parts.append("p" * 200)
            length += 201
        if 4090 - length - 1 > 0:
            parts.append("q" * (4090 - length - 1))
        fd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts:
                os.mkdir(part, dir_fd=fd)
                new = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = new
            leaf = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
            os.write(leaf, b"deep")
            os.close(leaf)
        finally:
            os.close(fd)
        full = os.path.join(m.path, *parts, "leaf")
        assert 4000 < len(full) < 4096 < len(os.path.join(long_warm, *parts, "leaf"))
        with open(full, "rb") as f:
            assert f.read() == b"deep"
        os.rename(full, full[:-1] + "2")
        assert os.stat(full[:-1] + "2").st_size == 4


def test_setattr_mode_owner_size_times(mount: Mount) -> None:
    p = mount.path / "f"
    p.write_bytes(b"0123456789")
    os.chmod(p, 0o640)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(mount.warm / "f").st_mode) == 0o640
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.truncate(p, 4)
    assert p.read_bytes() == b"0123" and (mount.warm / "f").read_bytes() == b"0123"
    os.truncate(p, 6)
    assert p.read_bytes() == b"0123\0\0"
    os.utime(p, ns=(1_000_000_000, 2_000_000_000))
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
    # UTIME_OMIT for atime, UTIME_NOW for mtime, through utimensat directly.
    before = time.time()

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
    times = (Timespec * 2)(Timespec(0, UTIME_OMIT), Timespec(0, UTIME_NOW))
    assert libc.utimensat(-100, os.fsencode(p), times, 0) == 0
    st = os.stat(p)
    assert st.st_atime_ns == 1_000_000_000
    assert st.st_mtime >= before - 1


def test_open_flags_trunc_append_excl(mount: Mount) -> None:
    p = mount.path / "f"
    p.write_bytes(b"abcdef")
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"xy")
    os.close(fd)
    assert p.read_bytes() == b"xy"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"zz")
    os.close(fd)
    assert p.read_bytes() == b"xyzz"
    assert errno_of(os.open, p, os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST


def test_handles_share_one_content_and_read_their_writes(mount: Mount) -> None:
    p = mount.path / "shared"
    a = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    b = os.open(p, os.O_RDWR)
    os.pwrite(a, b"hello world", 0)
    assert os.pread(a, 11, 0) == b"hello world"
    assert os.pread(b, 11, 0) == b"hello world"
    os.pwrite(b, b"W", 6)
    assert os.pread(a, 11, 0) == b"hello World"
    # Not yet closed or fsynced: the warm tier still holds what was there at create.
    assert (mount.warm / "shared").read_bytes() == b""
    os.fsync(a)
    assert (mount.warm / "shared").read_bytes() == b"hello World"
    os.close(a)
    os.close(b)
    assert p.read_bytes() == b"hello World"


def test_readers_on_the_warm_tier_never_see_a_partial_file(mount: Mount) -> None:
    p = mount.path / "data"
    p.write_bytes(b"old" * 1000)
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    for _ in range(100):
        os.write(fd, b"new" * 1000)
    assert (mount.warm / "data").read_bytes() == b"old" * 1000
    os.close(fd)
    assert (mount.warm / "data").read_bytes() == b"new" * 100_000
    assert not [n for n in os.listdir(mount.warm) if n.startswith(".tierfs-")]


def test_o_direct_reads_and_writes(mount: Mount) -> None:
    p = mount.path / "direct"
    import mmap
    buf = mmap.mmap(-1, 8192)
    buf.write(b"D" * 8192)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    assert os.write(fd, buf) == 8192
    os.close(fd)
    fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
    out = mmap.mmap(-1, 8192)
    assert os.readv(fd, [out]) == 8192
    os.close(fd)
    assert out[:] == b"D" * 8192
    assert p.read_bytes() == b"D" * 8192


def test_writes_through_a_shared_mapping_reach_the_warm_tier(mount: Mount) -> None:
    """numpy.memmap in r+ mode: pages written through a MAP_SHARED mapping come to tierfs as
    writes, even after the descriptor is closed (the mapping keeps the file open), and are
    published when the mapping goes."""
    import mmap
    p = mount.path / "mapped"
    p.write_bytes(b"a" * 10_000)
    fd = os.open(p, os.O_RDWR)
    mapped = mmap.mmap(fd, 10_000, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    mapped[100:105] = b"HELLO"
    mapped.flush()
    os.close(fd)
    mapped[9_000:9_005] = b"WORLD"
    mapped.close()
    expected = bytearray(b"a" * 10_000)
    expected[100:105], expected[9_000:9_005] = b"HELLO", b"WORLD"
    assert p.read_bytes() == expected
    assert wait_for(lambda: (mount.warm / "mapped").read_bytes() == expected)


def test_an_unnamed_temp_file_is_refused_clearly(mount: Mount) -> None:
    """O_TMPFILE: FUSE (through pyfuse3) has no such operation; docs/semantics.md lists it."""
    assert errno_of(os.open, mount.path, os.O_TMPFILE | os.O_RDWR, 0o600) == errno.EOPNOTSUPP


def test_rename_over_existing_and_directories(mount: Mount) -> None:
    m = mount.path
    (m / "a").write_text("A")
    (m / "b").write_text("B")
    os.rename(m / "a", m / "b")
    assert (m / "b").read_text() == "A" and not (m / "a").exists()
    (m / "d1" / "sub").mkdir(parents=True)
    (m / "d1" / "sub" / "f").write_text("deep")
    (m / "d2").mkdir()
    os.rename(m / "d1", m / "d2")  # over an empty directory
    assert (m / "d2" / "sub" / "f").read_text() == "deep"
    assert (mount.warm / "d2" / "sub" / "f").read_text() == "deep"
    (m / "d3").mkdir()
    (m / "d3" / "x").write_text("x")
    assert errno_of(os.rename, m / "d2", m / "d3") == errno.ENOTEMPTY


def test_rename_noreplace_and_exchange(mount: Mount) -> None:
    m = mount.path
    (m / "a").write_text("A")
    (m / "b").write_text("B")
    with pytest.raises(OSError) as info:
        renameat2(m / "a", m / "b", 1)  # RENAME_NOREPLACE
    assert info.value.errno == errno.EEXIST
    renameat2(m / "a", m / "c", 1)
    assert (m / "c").read_text() == "A" and not (m / "a").exists()
    renameat2(m / "b", m / "c", 2)  # RENAME_EXCHANGE
    assert (m / "b").read_text() == "A" and (m / "c").read_text() == "B"


def test_open_file_follows_renames_of_itself_and_its_directory(mount: Mount) -> None:
    m = mount.path
    (m / "d").mkdir()
    fd = os.open(m / "d" / "f", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"one")
    os.rename(m / "d", m / "e")
    os.rename(m / "e" / "f", m / "e" / "g")
    os.write(fd, b"two")
    os.close(fd)
    assert (mount.warm / "e" / "g").read_bytes() == b"onetwo"
    assert sorted(os.listdir(mount.warm / "e")) == ["g"]


def test_symlinks_and_hard_links(mount: Mount) -> None:
    m = mount.path
    (m / "target").write_text("T")
    os.symlink("target", m / "sym")
    assert os.readlink(m / "sym") == "target"
    assert (m / "sym").read_text() == "T"
    assert os.lstat(m / "sym").st_size == len("target")
    assert os.path.islink(mount.warm / "sym")
    os.link(m / "target", m / "hard")
    assert os.stat(m / "hard").st_ino == os.stat(m / "target").st_ino
    assert os.stat(m / "target").st_nlink == 2
    with open(m / "hard", "a") as f:
        f.write("more")
    assert (m / "target").read_text() == "Tmore"
    assert os.stat(mount.warm / "target").st_nlink == 2  # publishing kept the link
    os.unlink(m / "target")
    assert (m / "hard").read_text() == "Tmore"
    assert os.stat(m / "hard").st_nlink == 1


def test_unlinked_open_file_keeps_its_data(mount: Mount) -> None:
    p = mount.path / "victim"
    p.write_bytes(b"still here")
    fd = os.open(p, os.O_RDWR)
    os.unlink(p)
    assert not p.exists()
    assert os.pread(fd, 10, 0) == b"still here"
    os.pwrite(fd, b"STILL", 0)
    assert os.pread(fd, 10, 0) == b"STILL here"
    assert os.fstat(fd).st_nlink == 0
    os.close(fd)
    assert not p.exists() and not (mount.warm / "victim").exists()
    # The kernel sends RELEASE after close() returns: staging goes shortly after.
    assert wait_for(lambda: os.listdir(mount.hot / "staging") == [])


def as_user(uid: int, gid: int, code: str) -> subprocess.CompletedProcess:
    prelude = f"import os, errno\nos.setgroups([]); os.setgid({gid}); os.setuid({uid})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True)


@pytest.fixture
def open_mount() -> Iterator[Mount]:
    """A mount other users may use (allow_other) on a path they can reach."""
    base = Path(tempfile.mkdtemp(prefix="tierfs-shared-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with running(make_mount(base, "--allow-other")) as m:
            m.path.chmod(0o777)  # the mount's root is the warm root
            yield m
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_create_honours_mode_and_caller_ids(open_mount: Mount) -> None:
    m = open_mount
    os.chmod(m.path, 0o777)
    result = as_user(1234, 4321, (
        "os.umask(0o022)\n"
        f"fd = os.open({str(m.path / 'mine')!r}, os.O_CREAT | os.O_WRONLY, 0o666)\n"
        "os.write(fd, b'x'); os.close(fd)\n"
        f"os.mkdir({str(m.path / 'mydir')!r}, 0o777)\n"))
    assert result.returncode == 0, result.stderr
    for name, mode in (("mine", 0o644), ("mydir", 0o755)):
        for where in (m.path, m.warm):
            st = os.lstat(where / name)
            assert (st.st_uid, st.st_gid) == (1234, 4321), (where, name)
            assert stat.S_IMODE(st.st_mode) == mode, (where, name)


def test_permissions_are_enforced_for_other_users(open_mount: Mount) -> None:
    m = open_mount
    (m.path / "private").write_text("root only")
    os.chmod(m.path / "private", 0o600)
    (m.path / "readonly").write_text("r")
    os.chmod(m.path / "readonly", 0o644)
    (m.path / "closed").mkdir(mode=0o700)
    result = as_user(1234, 1234, (
        "def code(fn, *a):\n"
        "    try:\n"
        "        fn(*a)\n"
        "    except OSError as e:\n"
        "        return e.errno\n"
        "    return 0\n"
        f"print(code(open, {str(m.path / 'private')!r}))\n"
        f"print(code(open, {str(m.path / 'readonly')!r}, 'a'))\n"
        f"print(code(os.listdir, {str(m.path / 'closed')!r}))\n"
        f"print(code(os.chmod, {str(m.path / 'readonly')!r}, 0o777))\n"
        f"print(code(os.unlink, {str(m.path / 'readonly')!r}))\n"))
    assert result.returncode == 0, result.stderr
    codes = [int(x) for x in result.stdout.split()]
    assert codes == [errno.EACCES, errno.EACCES, errno.EACCES, errno.EPERM, 0]


def test_non_owner_write_clears_setuid(open_mount: Mount) -> None:
    m = open_mount
    p = m.path / "suid"
    p.write_text("x")
    os.chmod(p, 0o4777)
    result = as_user(1234, 1234, f"open({str(p)!r}, 'a').write('more')\n")
    assert result.returncode == 0, result.stderr
    assert p.read_text() == "xmore"
    assert not os.stat(p).st_mode & stat.S_ISUID
    assert not os.stat(m.warm / "suid").st_mode & stat.S_ISUID


def test_a_directory_shows_every_change_after_creates_in_it(open_mount: Mount) -> None:
    """The kernel asks for a directory's attributes again after every create in it; tierfs
    answers from what it read at that create (and at the publish that follows). Any other
    change made through the mount must still show at once, permissions included."""
    m = open_mount
    d, warm = m.path / "d", m.warm / "d"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)

    def same(fields: tuple[str, ...]) -> None:
        ours, theirs = os.stat(d), os.stat(warm)
        assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields]

    with open(d / "a", "wb") as f:
        time.sleep(0.02)  # the publish at close renames in a later clock tick than the create
        f.write(b"1")
    same(("st_mode", "st_nlink", "st_mtime_ns", "st_ctime_ns"))
    (d / "b").write_bytes(b"2")
    (d / "sub").mkdir()
    same(("st_nlink", "st_mtime_ns"))
    (d / "c").write_bytes(b"3")
    os.chmod(d, 0o700)
    same(("st_mode", "st_ctime_ns"))
    result = as_user(1234, 1234, f"open({str(d / 'x')!r}, 'w')\n")
    assert "PermissionError" in result.stderr
    (d / "e").write_bytes(b"4")
    os.unlink(d / "a")
    same(("st_nlink", "st_mtime_ns"))


def test_setgid_directory_passes_its_group_on(mount: Mount) -> None:
    d = mount.path / "team"
    d.mkdir()
    os.chown(d, 0, 777)
    os.chmod(d, 0o2775)
    (d / "f").write_text("x")
    (d / "sub").mkdir()
    assert os.stat(d / "f").st_gid == 777
    assert os.stat(d / "sub").st_gid == 777
    assert os.stat(d / "sub").st_mode & stat.S_ISGID


def test_extended_attributes(mount: Mount) -> None:
    p = mount.path / "x"
    p.write_text("x")
    os.setxattr(p, "user.tier", b"warm")
    assert os.getxattr(p, "user.tier") == b"warm"
    assert "user.tier" in os.listxattr(p)
    assert os.getxattr(mount.warm / "x", "user.tier") == b"warm"
    with open(p, "a") as f:  # publishing by rename keeps the attributes
        f.write("more")
    assert os.getxattr(p, "user.tier") == b"warm"
    os.removexattr(p, "user.tier")
    assert errno_of(os.getxattr, p, "user.tier") == errno.ENODATA


def test_statfs_reports_the_warm_tier(mount: Mount) -> None:
    ours, warm = os.statvfs(mount.path), os.statvfs(mount.warm)
    assert ours.f_blocks == warm.f_blocks and ours.f_bsize == warm.f_bsize


def test_fifo_works_and_device_nodes_are_refused(mount: Mount) -> None:
    os.mkfifo(mount.path / "fifo")
    assert stat.S_ISFIFO(os.lstat(mount.path / "fifo").st_mode)
    assert errno_of(os.mknod, mount.path / "dev", stat.S_IFCHR | 0o600,
                    os.makedev(1, 3)) == errno.EPERM


def test_internal_names_are_hidden_and_reserved(mount: Mount) -> None:
    (mount.warm / ".tierfs-0123.tmp").write_text("leftover")
    assert ".tierfs-0123.tmp" not in os.listdir(mount.path)
    assert not (mount.path / ".tierfs-0123.tmp").exists()
    assert errno_of(os.open, mount.path / ".tierfs-abcd.tmp",
                    os.O_CREAT | os.O_WRONLY) == errno.EPERM
    # A directory holding only a leftover temp file looks empty and can be removed.
    (mount.path / "d").mkdir()
    (mount.warm / "d" / ".tierfs-feed.tmp").write_text("leftover")
    assert os.listdir(mount.path / "d") == []
    os.rmdir(mount.path / "d")
    assert not (mount.warm / "d").exists()


def test_large_directory_listing(mount: Mount) -> None:
    d = mount.path / "many"
    d.mkdir()
    for i in range(3000):
        (mount.warm / "many" / f"f{i:05d}").write_bytes(b"")
    names = os.listdir(d)
    assert len(names) == 3000 and len(set(names)) == 3000
    assert sorted(names) == sorted(os.listdir(mount.warm / "many"))


def test_two_mounts_of_one_warm_tier_see_each_others_closes(tmp_path: Path) -> None:
    """Close-to-open between nodes: a file closed on one mount reads as closed on the other
    once that other's attributes of it are older than the attribute timeout (1 s), though it
    read the file just before (and an open within the timeout is answered from memory)."""
    a = make_mount(tmp_path / "a")
    b_dirs = make_mount(tmp_path / "b")
    b = Mount(b_dirs.path, b_dirs.hot, a.warm)
    with running(a), running(b):
        (a.path / "f").write_bytes(b"first")
        for i in range(3):
            writer, reader = (a, b) if i % 2 == 0 else (b, a)
            assert (reader.path / "f").read_bytes() == (b"first" if i == 0 else
                                                        f"round {i - 1}, longer".encode())
            new = f"round {i}, longer".encode()
            (writer.path / "f").write_bytes(new)
            time.sleep(1.2)  # past the attribute timeout
            assert (reader.path / "f").read_bytes() == new, f"round {i}"
            assert (reader.path / "f").stat().st_size == len(new)


def test_changes_on_the_warm_tier_show_through(mount: Mount) -> None:
    p = mount.path / "f"
    p.write_text("mine")
    assert p.read_text() == "mine"
    time.sleep(0.01)
    (mount.warm / "f").write_text("theirs, longer")  # another node writes the file
    os.utime(mount.warm / "f", ns=(time.time_ns(), time.time_ns() + 10**9))
    time.sleep(1.2)  # past the attribute timeout
    assert p.read_text() == "theirs, longer"
