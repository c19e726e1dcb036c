"""Named warm roots in one mount: the top directory, each root's own warm directory and
bucket prefix, EXDEV between roots, the control commands and recovery per root."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import (Mount, S3Server, make_mount, make_roots_mount, require, running,
                      tierfs, wait_for_exit)
from test_durability import immutable, journal_entries, set_immutable  # noqa: F401
from tierfs import mounting


def test_top_level_lists_the_roots(roots_mount: Mount) -> None:
    m = roots_mount
    assert sorted(os.listdir(m.path)) == ["cluster", "shared", "user"]
    st = os.stat(m.path)
    assert st.st_mode & 0o777 == 0o555
    for name in ("cluster", "user", "shared"):
        assert os.path.isdir(m.path / name)
        assert os.listdir(m.path / name) == []


def test_files_land_in_their_roots_warm_directory(roots_mount: Mount) -> None:
    m = roots_mount
    for name in ("cluster", "user", "shared"):
        (m.path / name / "d").mkdir()
        (m.path / name / "d" / "f").write_bytes(name.encode())
        os.rename(m.path / name / "d" / "f", m.path / name / "d" / "g")
    for name in ("cluster", "user", "shared"):
        assert (m.roots[name] / "d" / "g").read_bytes() == name.encode()
        assert not (m.roots[name] / "d" / "f").exists()
        assert (m.path / name / "d" / "g").read_bytes() == name.encode()
    assert sorted(os.listdir(m.roots["user"])) == ["d"]


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno  # type: ignore[no-any-return]


def test_top_level_refuses_changes(roots_mount: Mount) -> None:
    m = roots_mount
    (m.path / "cluster" / "f").write_bytes(b"x")
    assert _errno(os.mkdir, m.path / "new") == errno.EACCES
    assert _errno(os.mkdir, m.path / "cluster") == errno.EEXIST
    assert _errno(os.open, m.path / "new", os.O_CREAT | os.O_WRONLY) == errno.EACCES
    assert _errno(os.symlink, "cluster", m.path / "link") == errno.EACCES
    assert _errno(os.rmdir, m.path / "user") == errno.EACCES
    assert _errno(os.rename, m.path / "user", m.path / "u2") == errno.EACCES
    assert _errno(os.rename, m.path / "cluster" / "f", m.path / "f") == errno.EACCES
    assert _errno(os.link, m.path / "cluster" / "f", m.path / "f") == errno.EACCES
    assert _errno(os.unlink, m.path / "nothing") == errno.ENOENT
    assert _errno(os.chmod, m.path, 0o777) == errno.EPERM
    long = "a" * 256  # (past NAME_MAX, as any directory of the roots answers)
    assert _errno(os.stat, m.path / "cluster" / long) == errno.ENAMETOOLONG
    for call in (os.stat, os.mkdir, os.rmdir, os.unlink):
        assert _errno(call, m.path / long) == errno.ENAMETOOLONG, call
    assert _errno(os.open, m.path / long, os.O_CREAT | os.O_WRONLY) == errno.ENAMETOOLONG
    assert _errno(os.symlink, "cluster", m.path / long) == errno.ENAMETOOLONG
    assert sorted(os.listdir(m.path)) == ["cluster", "shared", "user"]
    assert (m.path / "cluster" / "f").read_bytes() == b"x"


def test_rename_and_link_across_roots_fail_with_exdev(roots_mount: Mount) -> None:
    m = roots_mount
    (m.path / "cluster" / "f").write_bytes(b"data")
    (m.path / "user" / "d").mkdir()
    assert _errno(os.rename, m.path / "cluster" / "f", m.path / "user" / "f") == errno.EXDEV
    assert _errno(os.rename, m.path / "user" / "d", m.path / "shared" / "d") == errno.EXDEV
    assert _errno(os.link, m.path / "cluster" / "f", m.path / "user" / "f") == errno.EXDEV
    os.link(m.path / "cluster" / "f", m.path / "cluster" / "g")  # within a root: fine
    assert os.stat(m.path / "cluster" / "f").st_nlink == 2
    # mv falls back to a copy, as between file systems.
    subprocess.run(["mv", str(m.path / "cluster" / "f"), str(m.path / "user" / "f")],
                   check=True)
    assert (m.roots["user"] / "f").read_bytes() == b"data"
    assert not (m.roots["cluster"] / "f").exists()


def test_inode_numbers_stay_across_remounts_and_reordered_roots(tmp_path: Path) -> None:
    m = make_roots_mount(tmp_path, ("cluster", "user", "shared"))
    paths = ["cluster", "cluster/a", "user/a", "shared/d", "shared/d/b"]
    with running(m):
        for name in ("cluster", "user"):
            (m.path / name / "a").write_bytes(name.encode())
        (m.path / "shared" / "d").mkdir()
        (m.path / "shared" / "d" / "b").write_bytes(b"b")
        before = {p: os.stat(m.path / p).st_ino for p in paths}
        assert len(set(before.values())) == len(paths)
        m.stop()
        m.roots = {"shared": m.roots["shared"], "user": m.roots["user"],
                   "cluster": m.roots["cluster"]}
        m.start()
        assert {p: os.stat(m.path / p).st_ino for p in paths} == before
        assert (m.path / "user" / "a").read_bytes() == b"user"
        assert (m.path / "cluster" / "a").read_bytes() == b"cluster"
        m.stop()
        # Nothing mounted: the figures each root saved, per root and added up.
        warm = [a for n, p in m.roots.items() for a in ("--warm", f"{n}={p}")]
        saved = json.loads(tierfs("stats", "--json", "--hot", str(m.hot), *warm).stdout)[0]
        assert saved["live"] is False and sorted(saved["roots"]) == ["cluster", "shared", "user"]
        assert saved["counters"]["bytes_warm"] == sum(
            json.loads(tierfs("stats", "--json", "--hot", str(m.hot / "roots" / n), "--warm",
                              str(p)).stdout)[0]["counters"]["bytes_warm"]
            for n, p in m.roots.items())


def test_large_file_goes_under_its_roots_bucket_prefix(tmp_path: Path, s3_server: S3Server,
                                                        bucket: str) -> None:
    m = make_roots_mount(tmp_path, ("cluster", "user"), "--endpoint-url", s3_server.endpoint,
                         "--addressing-style", "path", "--large-file-threshold", "64KiB",
                         bucket=f"s3://{bucket}/pre")
    data = os.urandom(300_000)
    with running(m):
        (m.path / "user" / "big.bin").write_bytes(data)
        (m.path / "cluster" / "big.bin").write_bytes(data[::-1])
        keys = sorted(o["Key"] for o in s3_server.client().list_objects_v2(
            Bucket=bucket, Prefix="pre/")["Contents"])
        assert keys == ["pre/cluster/big.bin", "pre/user/big.bin"]
        assert os.readlink(m.roots["user"] / "big.bin").startswith("tierfs:")
        assert (m.path / "user" / "big.bin").read_bytes() == data
        assert (m.path / "cluster" / "big.bin").read_bytes() == data[::-1]
        where = json.loads(tierfs("where", "--json", str(m.path / "user" / "big.bin")).stdout)
        assert [(w["path"], w["tier"]) for w in where] == \
            [(str(m.path / "user" / "big.bin"), "cold")]
        assert where[0]["uri"] == f"s3://{bucket}/pre/user/big.bin"
        # The cache commands reach the root a path is in (both files were read: hot).
        tierfs("evict", str(m.path / "cluster"))
        tierfs("pin", str(m.path / "user" / "big.bin"))
        where = json.loads(tierfs("where", "--json", str(m.path)).stdout)
        assert {w["path"]: (w["pinned"], w["hot"]) for w in where} == {
            str(m.path / "user" / "big.bin"): (True, len(data)),
            str(m.path / "cluster" / "big.bin"): (False, 0)}
        warmed = json.loads(tierfs("warm", "--json", str(m.path / "cluster")).stdout)
        assert [(w["path"], w["hot"]) for w in warmed] == [("cluster", len(data))]
        # An import into a root takes that root's warm directory and bucket prefix.
        s3_server.client().put_object(Bucket=bucket, Key="pre/user/sets/a.txt", Body=b"a")
        out = tierfs("import", f"s3://{bucket}/pre/user/sets", str(m.path / "user" / "sets"))
        assert "1 new" in out.stdout
        assert os.readlink(m.roots["user"] / "sets" / "a.txt").startswith("tierfs:")
        assert (m.path / "user" / "sets" / "a.txt").read_bytes() == b"a"
        refused = tierfs("import", f"s3://{bucket}/pre/user/sets", str(m.path / "cluster"),
                         check=False)
        assert refused.returncode == 1 and "not inside the configured bucket" in refused.stderr


def test_stats_where_and_status_name_the_roots(roots_mount: Mount) -> None:
    m = roots_mount
    (m.path / "cluster" / "d").mkdir()
    (m.path / "cluster" / "d" / "f").write_bytes(b"c" * 1000)
    (m.path / "user" / "g").write_bytes(b"u" * 10)
    where = json.loads(tierfs("where", "--json", str(m.path / "cluster" / "d"),
                              str(m.path / "user")).stdout)
    assert sorted((w["path"], w["tier"], w["size"]) for w in where) == [
        (str(m.path / "cluster" / "d" / "f"), "warm", 1000),
        (str(m.path / "user" / "g"), "warm", 10)]
    top = json.loads(tierfs("stats", "--json", str(m.path / "user")).stdout)
    assert (top["path"], top["files"], top["size"]) == ("user", 1, 10)
    whole = json.loads(tierfs("where", "--json", str(m.path)).stdout)  # every root
    assert sorted(w["path"] for w in whole) == [str(m.path / "cluster" / "d" / "f"),
                                                str(m.path / "user" / "g")]
    assert tierfs("where", str(m.path / "nothing"), check=False).returncode != 0
    flushed = tierfs("flush", str(m.path))
    assert flushed.returncode == 0
    assert os.statvfs(m.path).f_namemax == os.statvfs(m.roots["cluster"]).f_namemax

    doc = json.loads(tierfs("stats", "--json", "--hot", str(m.hot)).stdout)[0]
    assert sorted(doc["roots"]) == ["cluster", "shared", "user"]
    assert doc["roots"]["user"]["warm"]["path"] == str(m.roots["user"])
    assert doc["roots"]["user"]["cold"]["bucket"].endswith("/user")
    shown = tierfs("stats", "--hot", str(m.hot)).stdout
    for name in ("cluster", "user", "shared"):
        assert f"warm {name}" in shown and str(m.roots[name]) in shown



def test_status_names_each_roots_tiers(roots_mount: Mount,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``tierfs status`` of this mount alone (other mounts on the machine may be slow to
    answer: the registry is the machine's)."""
    from click.testing import CliRunner

    from tierfs.cli.inspect import status
    from tierfs.control import registry

    m = roots_mount
    record = registry.mount_for(str(m.path))[0]  # type: ignore[index]
    monkeypatch.setattr(registry, "mounts", lambda: [record])
    result = CliRunner().invoke(status, ["--json"])
    assert result.exit_code == 0, result.output
    health = json.loads(result.output)[0]["health"]
    assert health["hot"]["path"] == str(m.hot)
    for name in ("cluster", "user", "shared"):
        assert health[f"warm {name}"]["ok"]
        assert health[f"warm {name}"]["path"] == str(m.roots[name])
        assert health[f"cold {name}"]["path"].endswith(f"/{name}")
    text = CliRunner().invoke(status, []).output
    assert "warm user ok" in " ".join(text.split()) and str(m.roots["user"]) in text


def test_crash_recovery_publishes_every_roots_journaled_files(
        tmp_path: Path, immutable: list[Path]) -> None:
    """Each root's file is written and closed while its warm directory refuses the publish
    (write-back: close returns once staged and journaled), then the daemon is killed. The
    remount finds both roots' journals and publishes each file into its own root."""
    names = ("cluster", "user")
    m = make_roots_mount(tmp_path, names, "--durability", "writeback")
    data = {name: os.urandom(200_000) for name in names}
    with running(m):
        for name in names:
            (m.path / name / "d").mkdir()
            f = open(m.path / name / "d" / "ckpt.pt", "wb")
            f.write(data[name])
            f.flush()
            set_immutable(m.roots[name] / "d", True)
            immutable.append(m.roots[name] / "d")
            f.close()
        deadline = time.monotonic() + 20
        for name in names:
            while not any(e.synced == len(data[name]) for e in
                          journal_entries(m.hot / "roots" / name).values()):
                assert time.monotonic() < deadline, "the staged data was never journaled"
                time.sleep(0.2)
            assert (m.roots[name] / "d" / "ckpt.pt").stat().st_size == 0  # not home
        for pid in m.pids:
            os.kill(pid, signal.SIGKILL)
            assert wait_for_exit(pid, 10)
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
        for name in names:
            set_immutable(m.roots[name] / "d", False)
        m.start()
        for name in names:
            assert (m.path / name / "d" / "ckpt.pt").read_bytes() == data[name]
            assert (m.roots[name] / "d" / "ckpt.pt").read_bytes() == data[name]


@contextmanager
def stoppable_fuse(backing: Path, mnt: Path) -> Iterator[int]:
    """``backing`` served at ``mnt`` by mergerfs in the foreground (a FUSE passthrough, as
    an NFS mount would be a remote one): its pid, which a test may stop (SIGSTOP) to make
    every call there hang. Continued and unmounted afterwards, whatever happened."""
    require("mergerfs")
    backing.mkdir(parents=True)
    mnt.mkdir(parents=True)
    proc = subprocess.Popen(["mergerfs", "-f", "-o", "fsname=roots-test,cache.entry=0,"
                             "cache.attr=0", str(backing), str(mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mnt):
            assert time.monotonic() < deadline and proc.poll() is None, "mergerfs did not mount"
            time.sleep(0.05)
        yield proc.pid
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        proc.terminate()
        proc.wait(timeout=10)


def test_a_stalled_root_slows_only_what_touches_it(tmp_path: Path) -> None:
    """The root ``slow`` has its warm directory on a FUSE mount whose daemon is then
    stopped: every warm call of that root hangs (more of them than its warm threads). Reads,
    writes and listings in the root ``fast`` keep answering meanwhile."""
    m = make_roots_mount(tmp_path, ("fast",), "--warm-threads", "2")
    with stoppable_fuse(tmp_path / "nfs", tmp_path / "nfs-mnt") as server:
        m.roots["slow"] = tmp_path / "nfs-mnt"
        with running(m):
            for name in ("fast", "slow"):
                (m.path / name / "d").mkdir()
                for i in range(3):
                    (m.path / name / "d" / f"f{i}").write_bytes(f"{name}{i}".encode())
            for i in range(4):
                (m.path / "slow" / f"d{i}").mkdir()
            assert (tmp_path / "nfs" / "d" / "f1").read_bytes() == b"slow1"
            stuck: list[threading.Thread] = []
            os.kill(server, signal.SIGSTOP)
            try:
                # More calls than the root's 2 warm threads, each in a directory of its own
                # (the kernel lets one change at a time into a directory).
                for i in range(4):
                    t = threading.Thread(target=_quietly, daemon=True, args=(
                        (lambda i=i: os.stat(m.path / "slow" / f"d{i}" / "missing")) if i % 2
                        else (lambda i=i: (m.path / "slow" / f"d{i}" / "new").write_bytes(b"x")),
                    ))
                    t.start()
                    stuck.append(t)
                time.sleep(1.0)
                assert all(t.is_alive() for t in stuck), "the stalled root answered"

                def fast_work() -> None:
                    for i in range(3):
                        got = (m.path / "fast" / "d" / f"f{i}").read_bytes()
                        assert got == f"fast{i}".encode()
                    (m.path / "fast" / "d" / "new").write_bytes(b"new")
                    assert sorted(os.listdir(m.path / "fast" / "d")) == \
                        ["f0", "f1", "f2", "new"]
                    # df shows the first root's figures, which it has at once: it used to
                    # wait a second for the stalled root's too.
                    for _ in range(2):
                        started = time.monotonic()
                        assert os.statvfs(m.path).f_blocks > 0
                        assert time.monotonic() - started < 0.5
                    done.append(True)

                done: list[bool] = []
                worker = threading.Thread(target=fast_work, daemon=True)
                worker.start()
                worker.join(timeout=10)
                assert done, "the fast root waited for the stalled one"
                assert (m.roots["fast"] / "d" / "new").read_bytes() == b"new"
            finally:
                os.kill(server, signal.SIGCONT)
            for t in stuck:
                t.join(timeout=30)
            assert not any(t.is_alive() for t in stuck)
            assert (m.path / "slow" / "d0" / "new").read_bytes() == b"x"


def _quietly(fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except OSError:
        pass


def test_zero_config_default_mounts_three_roots(tmp_path: Path, s3_server: S3Server,
                                                bucket: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On a node with the three NFS mounts (a base directory of the test's), a mount with no
    warm tier and no bucket given shows cluster, user and shared, each a ``tierfs`` folder
    of its NFS mount, and puts large files under $ANYSCALE_ARTIFACT_STORAGE/tierfs/NAME/."""
    base = tmp_path / "node"
    for folder in ("cluster_storage", "user_storage", "shared_storage"):
        (base / folder).mkdir(parents=True)
    monkeypatch.setenv("TIERFS_MOUNTS_BASE", str(base))
    monkeypatch.setenv("ANYSCALE_ARTIFACT_STORAGE", f"s3://{bucket}/org")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TIERFS_CONFIG", raising=False)
    m = make_mount(tmp_path, "--endpoint-url", s3_server.endpoint, "--addressing-style",
                   "path", "--large-file-threshold", "64KiB")
    try:
        tierfs("mount", str(m.path), "--hot", str(m.hot), *m.extra)
        m.pids = mounting.daemon_pids(str(m.path))
        assert sorted(os.listdir(m.path)) == ["cluster", "shared", "user"]
        (m.path / "user" / "small").write_bytes(b"small")
        (m.path / "shared" / "big").write_bytes(os.urandom(100_000))
        assert (base / "user_storage" / "tierfs" / "small").read_bytes() == b"small"
        assert os.readlink(base / "shared_storage" / "tierfs" / "big").startswith("tierfs:")
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(
            Bucket=bucket, Prefix="org/")["Contents"]]
        assert keys == ["org/tierfs/shared/big"]
    finally:
        m.force_cleanup()
    assert "Traceback" not in m.log(), m.log()


def test_staged_files_of_another_layout_are_not_stranded(tmp_path: Path,
                                                         immutable: list[Path]) -> None:
    """A mount of one warm directory is killed with a closed file not yet published; a
    mount of named roots on the same hot tier would never publish it, so it is refused
    until the mount as before has published the file."""
    m = make_mount(tmp_path, "--durability", "writeback")
    with running(m):
        (m.path / "d").mkdir()
        f = open(m.path / "d" / "f", "wb")  # noqa: SIM115 - closed once the directory refuses
        f.write(b"staged")
        f.flush()
        set_immutable(m.warm / "d", True)
        immutable.append(m.warm / "d")
        f.close()
        deadline = time.monotonic() + 20
        while not journal_entries(m.hot):
            assert time.monotonic() < deadline, "the staged data was never journaled"
            time.sleep(0.2)
        for pid in m.pids:
            os.kill(pid, signal.SIGKILL)
            assert wait_for_exit(pid, 10)
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
    set_immutable(m.warm / "d", False)
    (tmp_path / "warm-a").mkdir()
    refused = tierfs("mount", str(m.path), "--hot", str(m.hot), "--warm",
                     f"a={tmp_path / 'warm-a'}", check=False)
    assert refused.returncode == 1 and "not published yet" in refused.stderr
    assert not os.path.ismount(m.path)
    with running(m):  # as before: recovery publishes it
        assert (m.path / "d" / "f").read_bytes() == b"staged"
    assert (m.warm / "d" / "f").read_bytes() == b"staged"


def test_import_without_a_mount_goes_to_the_named_root(tmp_path: Path, s3_server: S3Server,
                                                        bucket: str) -> None:
    """``tierfs import`` with named roots and nothing mounted: the first component of the
    namespace path (or the root directory an absolute path is in) picks the root, whose
    directory gets the stubs and whose bucket prefix the objects must be under."""
    s3_server.client().put_object(Bucket=bucket, Key="pre/user/sets/a.txt", Body=b"a")
    roots = []
    for name in ("cluster", "user"):
        (tmp_path / name).mkdir()
        roots += ["--warm", f"{name}={tmp_path / name}"]
    (tmp_path / "hot").mkdir(mode=0o700)
    common = (*roots, "--hot", str(tmp_path / "hot"), "--bucket", f"s3://{bucket}/pre",
              "--endpoint-url", s3_server.endpoint, "--addressing-style", "path")
    source = f"s3://{bucket}/pre/user/sets"
    assert "1 new" in tierfs("import", source, "user/sets", *common).stdout
    assert os.readlink(tmp_path / "user" / "sets" / "a.txt").startswith("tierfs:")
    assert "1 unchanged" in tierfs("import", source, str(tmp_path / "user" / "sets"),
                                   *common).stdout
    assert not (tmp_path / "cluster" / "sets").exists()
    for where, why in (("elsewhere/sets", "must name a root"),
                       ("cluster/sets", "not inside the configured bucket"),
                       (str(tmp_path / "hot"), "not inside any warm root")):
        refused = tierfs("import", source, where, *common, check=False)
        assert refused.returncode == 1 and why in refused.stderr, refused.stderr


def test_unmount_and_flush_name_unpublished_files_with_their_root(
        tmp_path: Path, immutable: list[Path]) -> None:
    m = make_roots_mount(tmp_path, ("cluster", "user"), "--durability", "writeback")
    data = os.urandom(100_000)
    with running(m):
        (m.path / "user" / "d").mkdir()
        (m.path / "user" / "d" / "g").write_bytes(b"")
        set_immutable(m.roots["user"] / "d", True)
        immutable.append(m.roots["user"] / "d")
        (m.path / "user" / "d" / "g").write_bytes(data)  # write-back: the close returns
        (m.path / "cluster" / "fine").write_bytes(b"fine")
        flushed = tierfs("flush", str(m.path), check=False)
        assert flushed.returncode != 0 and "user/d/g" in flushed.stdout + flushed.stderr
        result = tierfs("unmount", str(m.path), check=False)
        assert result.returncode != 0 and "not published: user/d/g" in result.stderr
        assert (m.roots["cluster"] / "fine").read_bytes() == b"fine"
        set_immutable(m.roots["user"] / "d", False)
        m.start()
        assert (m.path / "user" / "d" / "g").read_bytes() == data
