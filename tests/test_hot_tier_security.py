"""What the daemon (root, umask 0) makes on the hot tier and in a local-folder bucket is the
mount's user's and closed to others, and a symlink another user plants where tierfs keeps a
folder or a file of its own is never followed."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import make_mount, running
from tierfs.cache.store import BlockFiles
from tierfs.cli import setup_logging
from tierfs.config import build_config
from tierfs.errors import MountError
from tierfs.index import Index
from tierfs.tiers.hot import HotTier

MIB = 1024 * 1024


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The daemon's umask (0) while tierfs makes its files."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def loose(root: Path) -> list[str]:
    """What under ``root`` is not the mount's user's, 0700 for a folder and 0600 for a file
    (or is a symlink)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != want or \
                    stat.S_ISLNK(st.st_mode):
                found.append(f"{path.relative_to(root)} {stat.filemode(st.st_mode)}")
    return found


def test_a_mount_leaves_nothing_open_to_other_users(tmp_path: Path) -> None:
    """Blocks cached from a warm file, a large file staged and sent to a local-folder bucket,
    the index, the log: every folder 0700 and every file 0600, on the hot tier and in the
    bucket (under its folder, which the user chose)."""
    cold = tmp_path / "cold"
    cold.mkdir()
    m = make_mount(tmp_path, "--cache-warm", "true", "--block-size", "1MiB",
                   "--large-file-threshold", "1MiB", "--bucket", f"file://{cold}")
    (m.warm / "d").mkdir()
    (m.warm / "d" / "w.bin").write_bytes(os.urandom(3 * MIB))
    data = os.urandom(3 * MIB)
    with running(m):
        assert (m.path / "d" / "w.bin").read_bytes() == (m.warm / "d" / "w.bin").read_bytes()
        (m.path / "d" / "big.bin").write_bytes(data)
        m.stop()
        assert list((m.hot / "cache" / "v1").glob("??/*")), "no block was cached"
        assert [p for p in cold.rglob("*") if p.is_file()], "nothing reached the bucket"
        assert loose(m.hot) == []
        assert loose(cold) == []
        m.start()
        assert (m.path / "d" / "big.bin").read_bytes() == data


def test_what_tierfs_makes_on_the_hot_tier_is_closed_to_others(tmp_path: Path) -> None:
    """The same, part by part, including what a mount seldom makes (lost+found)."""
    root = tmp_path / "hot"
    root.mkdir()
    hot = HotTier(root, 1)
    with umask(0):
        hot.prepare()
        hot.acquire("/mnt/x")
        files = BlockFiles(root)
        files.prepare()
        files.write(bytes.fromhex("ab" * 16), b"block")
        Index(hot.index_dir).close()
        sid, fd = hot.new_staging()
        os.close(fd)
        hot.set_aside(sid, b"{}")
        with kept_logging():
            setup_logging(build_config({}, {"hot": str(root)}), to_stderr=False)
            logging.getLogger("tierfs.test").warning("a line")
    hot.release()
    assert loose(root) == []
    assert (root / "tierfs.log").read_text().count("a line") == 1


@contextmanager
def kept_logging() -> Iterator[None]:
    """setup_logging takes over the root logger: give pytest's handlers back after."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    try:
        yield
    finally:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:], logger.level = handlers, level


def test_a_symlink_planted_for_a_block_folder_is_never_followed(tmp_path: Path) -> None:
    """Another user links ``cache/v1/ab`` to a folder only root may write: the block whose
    key starts with ab must not land there (a hot tier made by an older tierfs left
    ``cache/v1`` open to anyone)."""
    root = tmp_path / "hot"
    (root / "cache" / "v1").mkdir(parents=True)
    os.chmod(root / "cache" / "v1", 0o777)
    victim = tmp_path / "root-only"
    victim.mkdir(mode=0o700)
    (root / "cache" / "v1" / "ab").symlink_to(victim)
    (root / "cache" / "v1" / "cd").write_bytes(b"not a folder")
    with umask(0):
        files = BlockFiles(root)
        files.prepare()
        key = bytes.fromhex("ab" * 16)
        files.write(key, b"block")
    assert list(victim.iterdir()) == []
    assert not (root / "cache" / "v1" / "ab").is_symlink()
    assert files.path(key).read_bytes() == b"block"
    assert loose(root) == []


@pytest.mark.parametrize("name", ["staging", "index"])
def test_a_symlink_where_a_hot_folder_goes_is_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "hot"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (root / name).symlink_to(elsewhere)
    with pytest.raises(MountError, match=f"{name} is not a folder"):
        HotTier(root, 1).prepare()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert (root / name).is_symlink()


def test_symlinks_where_hot_files_go_are_refused(tmp_path: Path) -> None:
    """The lock file (truncated at every mount), the log and lost+found."""
    root = tmp_path / "hot"
    root.mkdir()
    precious = tmp_path / "precious"
    precious.write_bytes(b"keep me")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hot = HotTier(root, 1)
    hot.prepare()
    (root / "lock").symlink_to(precious)
    with pytest.raises(MountError, match="lock is a symlink"):
        hot.acquire("/mnt/x")
    (root / "tierfs.log").symlink_to(precious)
    with kept_logging(), pytest.raises(MountError, match="tierfs.log is a symlink"):
        setup_logging(build_config({}, {"hot": str(root)}), to_stderr=False)
    (root / "lost+found").symlink_to(elsewhere)
    sid, fd = hot.new_staging()
    os.close(fd)
    with pytest.raises(OSError, match="lost\\+found is not a folder"):
        hot.set_aside(sid, b"{}")
    assert precious.read_bytes() == b"keep me"
    assert list(elsewhere.iterdir()) == []


def test_a_hot_tier_anyone_may_write_in_is_refused(tmp_path: Path) -> None:
    """Another user could move tierfs's folders away and plant symlinks in their place."""
    root = tmp_path / "hot"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(MountError, match="writable by other users"):
        HotTier(root, 1).prepare()


def test_in_a_sticky_hot_folder_what_others_plant_first_is_refused(tmp_path: Path) -> None:
    """A folder anyone may write in, with the sticky bit (a tmpfs's root), passes: nobody can
    move tierfs's entries there. What another user plants before tierfs makes its own is
    refused, never followed: the control socket's folder (the server would chmod it and put
    its socket in it) and the cache's."""
    root = tmp_path / "hot"
    root.mkdir()
    os.chmod(root, 0o1777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (root / "run").symlink_to(elsewhere)
    with pytest.raises(MountError, match="run is a symlink"):
        HotTier(root, 1).prepare()
    (root / "run").unlink()
    (root / "cache").symlink_to(elsewhere)
    HotTier(root, 1).prepare()
    with pytest.raises(MountError, match="cache is not a folder"):
        BlockFiles(root).prepare()
    assert list(elsewhere.iterdir()) == []
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755


def test_the_control_server_follows_no_symlink_to_its_folder(tmp_path: Path) -> None:
    """HotTier.prepare makes ``run`` before the server starts; the server itself should not
    chmod and use a folder a symlink points to either."""
    from tierfs.control.server import _prepare, socket_path

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (elsewhere / "control.sock").write_bytes(b"not the server's")
    (tmp_path / "run").symlink_to(elsewhere)
    try:
        _prepare(socket_path(tmp_path))
    except OSError:
        pass
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert (elsewhere / "control.sock").exists()
