"""The command line: help, version, mount failures with one-line reasons, clean unmounts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Mount, S3Server, make_mount, running, tierfs, tmpfs, wait_for_exit
from tierfs import __version__, mounting
from tierfs.control import registry


def test_help_and_version() -> None:
    assert __version__ in tierfs("--version").stdout
    out = tierfs("--help").stdout
    assert "mount" in out and "unmount" in out
    out = tierfs("mount", "--help").stdout
    for flag in ("--hot", "--warm", "--config", "--foreground", "--allow-other",
                 "--attr-timeout", "--read-ahead"):
        assert flag in out


def _mount_fails(m: Mount, *extra: str, was_mounted: bool = False) -> str:
    result = tierfs("mount", str(m.path), "--hot", str(m.hot), "--warm", str(m.warm), *extra,
                    check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert os.path.ismount(m.path) == was_mounted
    return lines[0]


def test_mount_refuses_bad_mount_points_and_tiers(tmp_path: Path) -> None:
    m = make_mount(tmp_path)
    missing = make_mount(tmp_path)
    missing.path = tmp_path / "nope"
    assert "does not exist" in _mount_fails(missing)
    no_warm = make_mount(tmp_path)
    no_warm.warm = tmp_path / "no-warm"
    assert "warm tier" in _mount_fails(no_warm) and "does not exist" in _mount_fails(no_warm)
    inside = make_mount(tmp_path)
    inside.hot = m.warm / "hot"
    inside.hot.mkdir()
    assert "must not contain" in _mount_fails(inside)
    bad_config = tmp_path / "c.toml"
    bad_config.write_text("colour = 'blue'\n")
    assert "colour" in _mount_fails(m, "--config", str(bad_config))
    assert "--attr-timeout" in _mount_fails(m, "--attr-timeout", "never")


def test_a_failure_while_the_mount_starts_is_told_in_one_line(tmp_path: Path) -> None:
    """Something nobody foresaw (here, a file where the control socket's directory goes)
    stops the daemon inside its event loop: the user gets one line that names it, not the
    last line of a traceback, and nothing stays mounted."""
    m = make_mount(tmp_path)
    (m.hot / "run").write_text("in the way\n")
    reason = _mount_fails(m)
    assert reason.count("\n") == 0, reason
    assert "stopped: NotADirectoryError" in reason and str(m.hot / "run") in reason
    assert not os.path.ismount(m.path)
    assert "Traceback" in (m.hot / "tierfs.log").read_text()


def test_tiers_and_mount_point_at_paths_with_commas_spaces_and_backslashes(
        tmp_path: Path) -> None:
    """libfuse splits mount options at commas; the warm tier's path goes into one."""
    m = make_mount(tmp_path / "a b,c\\d")
    with running(m):
        (m.path / "f").write_text("x")
        assert (m.warm / "f").read_text() == "x"
        assert json.loads(tierfs("stats", "--json", str(m.path)).stdout)["mountpoint"] == \
            str(m.path)


def test_unmount_leaves_other_file_systems_alone(tmp_path: Path) -> None:
    """As root, umount takes any file system away: tierfs unmount takes only its own."""
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tierfs-other", str(other)],
                   check=True)
    try:
        result = tierfs("unmount", str(other), check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == (f"tierfs: error: {other} is not a tierfs mount "
                                         "(tmpfs is mounted there)")
        assert os.path.ismount(other)
    finally:
        subprocess.run(["umount", str(other)], check=False)


def test_the_daemon_keeps_no_directory_of_its_callers_busy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mount started from a directory runs in "/", as a daemon should: it held the caller's
    directory, whose file system then could not be unmounted while tierfs ran."""
    m = make_mount(tmp_path)
    with tmpfs(tmp_path / "elsewhere", "1m") as elsewhere:
        monkeypatch.chdir(elsewhere)
        with running(m):
            monkeypatch.chdir(tmp_path)
            assert [os.readlink(f"/proc/{pid}/cwd") for pid in m.pids] == ["/"] * len(m.pids)
            subprocess.run(["umount", str(elsewhere)], check=True)  # not busy
            assert not os.path.ismount(elsewhere)
            (m.path / "f").write_bytes(b"still served")
            assert (m.warm / "f").read_bytes() == b"still served"


def test_a_config_file_named_relative_to_the_callers_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TIERFS_CONFIG is read by the daemon too, which runs in "/"."""
    m = make_mount(tmp_path)
    (tmp_path / "tierfs.toml").write_text('durability = "writeback"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIERFS_CONFIG", "tierfs.toml")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")  # (botocore's ~)
    monkeypatch.setenv("SSL_CERT_DIR", "certs")  # (a folder: OpenSSL's)
    with running(m):
        (m.path / "f").write_bytes(b"x")
        args = Path(f"/proc/{m.pids[0]}/cmdline").read_bytes().split(b"\0")
        assert args[args.index(b"--durability") + 1] == b"writeback"
        env = dict(v.split(b"=", 1) for v in
                   Path(f"/proc/{m.pids[0]}/environ").read_bytes().split(b"\0") if b"=" in v)
        assert env[b"AWS_SHARED_CREDENTIALS_FILE"] == os.fsencode(
            os.path.expanduser("~/.aws/credentials"))
        assert env[b"SSL_CERT_DIR"] == os.fsencode(tmp_path / "certs")


def test_the_daemon_runs_the_tierfs_its_command_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m tierfs mount`` in a checkout runs that checkout's tierfs, and so must the
    daemon it starts (in "/", it imported another one, or none at all)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(Path(mounting.__file__).parent, checkout / "tierfs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(checkout / "tierfs" / "__init__.py", "a") as f:
        f.write("\nimport os as _os\n"
                "with open(_os.environ['IMPORTED_BY'], 'a') as _f:\n"
                "    _f.write(f'{_os.getpid()} {__file__}\\n')\n")
    imported = tmp_path / "imported"
    monkeypatch.setenv("IMPORTED_BY", str(imported))
    m = make_mount(tmp_path / "m")
    try:
        subprocess.run([sys.executable, "-m", "tierfs", "mount", str(m.path), "--hot",
                        str(m.hot), "--warm", str(m.warm)], cwd=checkout, check=True,
                       timeout=60, stdin=subprocess.DEVNULL)
        m.pids = mounting.daemon_pids(str(m.path))
        (m.path / "f").write_bytes(b"served")
        assert (m.warm / "f").read_bytes() == b"served"
        lines = [line.split() for line in imported.read_text().splitlines()]
        pids = {int(pid) for pid, _ in lines}
        assert len(pids) == 2 and set(m.pids) < pids  # the command and its daemon
        assert {path for _, path in lines} == {str(checkout / "tierfs" / "__init__.py")}
    finally:
        m.force_cleanup()


def test_a_relative_runtime_directory_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands and the daemon (in "/") would look for mounts in different places."""
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "run")
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    assert registry.runtime_dir() == Path("/tmp/tierfs-4321")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert registry.runtime_dir() == tmp_path / "run" / "tierfs"


def test_mount_refuses_a_read_only_tier(tmp_path: Path) -> None:
    m = make_mount(tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tierfs-ro", str(m.warm)],
                   check=True)
    try:
        assert "not writable" in _mount_fails(m)
    finally:
        subprocess.run(["umount", str(m.warm)], check=True)


def test_busy_mount_point_and_hot_tier_on_a_network_file_system(mount: Mount,
                                                                tmp_path: Path) -> None:
    again = make_mount(tmp_path / "again")
    again.path = mount.path
    assert "busy" in _mount_fails(again, was_mounted=True)
    # A hot tier inside a FUSE network file system (here, another tierfs mount) is refused.
    nested = make_mount(tmp_path / "nested")
    nested.hot = mount.path / "hot"
    nested.hot.mkdir()
    assert mounting.fs_type(nested.hot) == "fuse.tierfs"
    assert "local disk" in _mount_fails(nested)


def test_second_mount_on_the_same_hot_tier_is_refused(mount: Mount, tmp_path: Path) -> None:
    other = make_mount(tmp_path / "other")
    other.hot = mount.hot
    assert "in use by another mount" in _mount_fails(other)


def test_unmount_publishes_and_waits_for_the_daemon(mount: Mount) -> None:
    (mount.path / "f").write_text("data")
    pids = mount.pids
    fd = os.open(mount.path / "f", os.O_RDONLY)
    result = tierfs("unmount", str(mount.path), check=False)
    assert result.returncode == 1 and "busy" in result.stderr
    os.close(fd)
    time.sleep(0.2)
    tierfs("unmount", str(mount.path))
    assert not os.path.ismount(mount.path)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert (mount.warm / "f").read_text() == "data"
    result = tierfs("unmount", str(mount.path), check=False)
    assert result.returncode == 1 and "not mounted" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly_and_publishes_open_files(mount: Mount,
                                                          signum: signal.Signals) -> None:
    fd = os.open(mount.path / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"written but never closed")
    pid = mount.pids[0]
    os.kill(pid, signum)
    assert wait_for_exit(pid, 20), "daemon did not exit"
    try:
        os.close(fd)
    except OSError:
        pass  # the mount is gone
    assert not os.path.ismount(mount.path)
    assert (mount.warm / "open").read_bytes() == b"written but never closed"
    assert "unmounted" in mount.log()


def test_inode_numbers_stay_stable_across_remounts(mount: Mount) -> None:
    (mount.path / "d").mkdir()
    (mount.path / "d" / "f").write_text("x")
    before = {p: os.stat(mount.path / p).st_ino for p in ("d", "d/f")}
    mount.restart()
    after = {p: os.stat(mount.path / p).st_ino for p in ("d", "d/f")}
    assert before == after
    (mount.path / "d" / "f").write_text("rewritten")  # published by rename: new warm inode
    assert os.stat(mount.path / "d" / "f").st_ino == before["d/f"]


def test_mount_fails_at_once_on_a_missing_bucket_or_bad_endpoint(tmp_path: Path,
                                                                 s3_server: S3Server) -> None:
    m = make_mount(tmp_path)
    line = _mount_fails(m, "--bucket", "s3://no-such-bucket/x", "--endpoint-url",
                        s3_server.endpoint, "--addressing-style", "path")
    assert "no-such-bucket does not exist" in line
    assert "not exist" in _mount_fails(m, "--bucket", f"file://{tmp_path}/no-folder")
    assert "--bucket" in _mount_fails(m, "--bucket", "ftp://x/y")


def test_a_bucket_folder_without_extended_attributes_fails_the_mount(tmp_path: Path) -> None:
    """A local-folder object keeps its metadata (mode, mtime, the upload's token) in an
    extended attribute: on a file system without them (ramfs here; some NFS mounts) every
    upload would fail, at the first large file. So the mount fails, and says why."""
    m = make_mount(tmp_path)
    cold = tmp_path / "cold"
    cold.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(cold)], check=True)
    try:
        line = _mount_fails(m, "--bucket", f"file://{cold}")
    finally:
        subprocess.run(["umount", str(cold)], check=True)
    assert str(cold) in line and "extended attributes" in line
