"""Starting and stopping mounts from the command line: checks first, then a daemon.

``tierfs mount`` checks everything it can before forking, so a bad mount point or tier fails
with a one-line reason and exit status 1. The daemon is this same program with ``--foreground``;
its stderr is a pipe to the parent until the mount is live, so a late failure (the kernel
refusing the mount, say) still reaches the user as one line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from tierfs.config import Config
from tierfs.control import registry
from tierfs.errors import MountError
from tierfs.objects import open_store
from tierfs.objects.base import ObjectStore, ObjectStoreError
from tierfs.objects.local import make_folders
from tierfs.tiers.hot import read_unpublished

#: File systems the hot tier must not be on: LMDB's locks and mmap need a local file system.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "fuse.sshfs",
              "fuse.tierfs", "lustre", "gpfs", "afs"}
MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 120.0


def fs_type(path: Path) -> str:
    """The type of the file system holding ``path`` (the longest matching mount point)."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
            best, kind = mp, part.fstype
    return kind


def is_mounted(mountpoint: str) -> bool:
    return os.path.ismount(mountpoint)


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _check_tier(name: str, path: Path, create: bool, mode: int = 0o777) -> None:
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    if not path.exists():
        raise MountError(f"{name} tier {path} does not exist")
    if not path.is_dir():
        raise MountError(f"{name} tier {path} is not a directory")
    probe = path / f".tierfs-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MountError(f"{name} tier {path} is not writable: {e.strerror}") from None


def open_checked_store(config: Config) -> ObjectStore:
    """The configured store, checked now: a missing bucket, refused credentials or an
    unreachable endpoint fail the mount with one line, not the first read."""
    uri = config.bucket
    if uri.scheme == "file" and "bucket" not in config.explicit:
        make_folders(Path(uri.bucket))  # the zero-config local folder, 0700
    store = open_store(uri, config.endpoint_url, config.region, config.addressing_style)
    try:
        store.check()
    except ObjectStoreError as e:
        raise MountError(f"cold tier {uri}: {e}") from None
    return store


def preflight(config: Config, mountpoint: str, nonempty: bool = False) -> None:
    """Everything that can be checked before the daemon starts; raises MountError.

    A mount point that holds files is refused unless ``nonempty``: they would vanish from
    view (not from the disk) while tierfs is mounted over them, which looks like data loss."""
    mp = Path(mountpoint)
    if not mp.exists():
        raise MountError(f"mount point {mountpoint} does not exist")
    if not mp.is_dir():
        raise MountError(f"mount point {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise MountError(f"mount point {mountpoint} is busy: something is already mounted there")
    if not nonempty:
        try:
            with os.scandir(mp) as entries:
                occupied = next(entries, None) is not None
        except OSError as e:
            raise MountError(f"mount point {mountpoint} cannot be read: {e.strerror}") from None
        if occupied:
            raise MountError(f"mount point {mountpoint} is not empty: its files would be hidden "
                             "while tierfs is mounted (add --nonempty to mount over them)")
    registry.prepare()  # where the live mount records itself for the other commands
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module (modprobe fuse) or run "
                         "the container with --device /dev/fuse")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise MountError("/dev/fuse is not readable and writable for this user")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        raise MountError("fusermount3 is missing: install the fuse3 package")
    # The hot tier is tierfs's own: closed to other users (see tiers/hot.py).
    _check_tier("hot", config.hot, create="hot" not in config.explicit, mode=0o700)
    warms = [("warm", config.warm)] if not config.roots else \
        [(f"warm (root {name})", path) for name, path in config.roots]
    for name, tier in warms:
        _check_tier(name, tier, create="warm" not in config.explicit)
    for name, tier in (("hot", config.hot), *warms):
        if _inside(tier, mp) or _inside(mp, tier):
            raise MountError(f"the {name} tier {tier} and the mount point {mountpoint} must not "
                             "contain one another")
    for name, tier in warms:
        if _inside(config.hot, tier) or _inside(tier, config.hot):
            raise MountError(f"the hot tier {config.hot} and the {name} tier {tier} must not "
                             "contain one another")
    for i, (name, tier) in enumerate(warms):
        for other, path in warms[i + 1:]:
            if _inside(tier, path) or _inside(path, tier):
                raise MountError(f"the {name} tier {tier} and the {other} tier {path} must "
                                 "not contain one another: their files would be in two roots")
    kind = fs_type(config.hot)
    if kind in NETWORK_FS:
        raise MountError(f"hot tier {config.hot} is on {kind}: it must be a local disk (the "
                         "LMDB index does not work on network file systems)")
    open_checked_store(config)


#: Environment variables naming files, which the daemon reads as this command does.
PATH_VARIABLES = frozenset({
    "TIERFS_CONFIG", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "GOOGLE_APPLICATION_CREDENTIALS"})


#: The daemon runs the tierfs this command runs, wherever that was found (an installed one,
#: a checkout the command was started in, a folder a wrapper put on the path): it imports
#: with this command's import path, made absolute (it runs in "/").
DAEMON_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv.pop(1)); "
               "sys.argv[0] = 'tierfs'; from tierfs.cli import main; main()")


def start_daemon(config: Config, mountpoint: str, nonempty: bool = False) -> int:
    """Start the mount in the background and wait until it is live; returns the daemon's pid."""
    path = json.dumps([os.path.abspath(p) for p in sys.path])  # ("" is the current folder)
    cmd = [sys.executable, "-c", DAEMON_BOOT, path, "mount", "--foreground",
           "--daemon-child", *(["--nonempty"] if nonempty else []), *config.to_args(),
           mountpoint]
    # In "/", as a daemon should be: it would otherwise hold the caller's directory busy (its
    # file system could not be unmounted while tierfs runs).
    # The daemon reads these too: from "/", a relative one would not be found.
    env = {name: os.path.abspath(os.path.expanduser(value))
           if name in PATH_VARIABLES and value and "$" not in value else value
           for name, value in os.environ.items()}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
                            cwd="/", env=env)
    assert proc.stderr is not None
    # The child closes its end of the pipe once it is mounted (or exits on failure).
    output = proc.stderr.read().decode(errors="replace")
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while time.monotonic() < deadline:
        if is_mounted(mountpoint):
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.terminate()
    lines = [line for line in output.strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else f"the mount daemon exited with status {proc.returncode}"
    raise MountError(reason.removeprefix("tierfs: error: "))


def daemon_pids(mountpoint: str) -> list[int]:
    """Processes serving ``mountpoint`` (started by tierfs mount, in any mode)."""
    target = os.path.abspath(mountpoint)
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "--foreground" in cmdline and "mount" in cmdline and any(
                "tierfs" in part for part in cmdline) and \
                os.path.abspath(cmdline[-1]) == target and proc.info["pid"] != os.getpid():
            pids.append(proc.info["pid"])
    return pids


def unmount(mountpoint: str) -> list[str]:
    """Unmount (the kernel releases every handle first, which publishes dirty files) and wait
    for the daemon to finish its shutdown. Returns what it could not publish (staged still,
    for the next mount)."""
    if not is_mounted(mountpoint):
        raise MountError(f"{mountpoint} is not mounted")
    kind = fs_type(Path(mountpoint))
    if kind != "fuse.tierfs":  # as root, umount would take any file system away
        raise MountError(f"{mountpoint} is not a tierfs mount ({kind} is mounted there)")
    pids = daemon_pids(mountpoint)
    hot = next((Path(r.hot) for r in registry.mounts() if r.mountpoint == mountpoint), None)
    if os.geteuid() == 0 and shutil.which("fusermount3") is None:
        cmd = ["umount", mountpoint]
    else:
        cmd = ["fusermount3", "-u", mountpoint]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        if "busy" in detail.lower():
            raise MountError(f"{mountpoint} is busy: files or directories under it are in use")
        raise MountError(f"could not unmount {mountpoint}: {detail or os.strerror(errno.EIO)}")
    deadline = time.monotonic() + UNMOUNT_TIMEOUT
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except psutil.NoSuchProcess:
            continue
        except psutil.TimeoutExpired:
            raise MountError(f"unmounted {mountpoint}, but its daemon (pid {pid}) is still "
                             "publishing files") from None
    if hot is None:
        return []
    try:
        return read_unpublished(hot)
    except (OSError, ValueError) as e:
        raise MountError(f"unmounted {mountpoint}, but what it could not publish is "
                         f"unknown: {e}") from None
