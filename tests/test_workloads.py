"""Real programs through the mount: tar, git and SQLite."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import tarfile
from pathlib import Path

from conftest import Mount, require


def _make_archive(path: Path) -> dict[str, bytes]:
    files = {f"pkg/src/mod{i}.py": os.urandom(100 + i * 37) for i in range(30)}
    files["pkg/big.bin"] = os.urandom(3 * 1024 * 1024)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg/latest")
        link.type, link.linkname = tarfile.SYMTYPE, "src/mod3.py"
        tar.addfile(link)
        hard = tarfile.TarInfo("pkg/big-again.bin")
        hard.type, hard.linkname = tarfile.LNKTYPE, "pkg/big.bin"
        tar.addfile(hard)
    return files


def test_tar_with_symlinks_and_hard_links(mount: Mount, tmp_path: Path) -> None:
    require("tar")
    files = _make_archive(tmp_path / "a.tgz")
    subprocess.run(["tar", "-xzf", str(tmp_path / "a.tgz"), "-C", str(mount.path)], check=True)
    for name, data in files.items():
        assert (mount.path / name).read_bytes() == data
        assert (mount.warm / name).read_bytes() == data
        assert (mount.path / name).stat().st_mode & 0o777 == 0o640
    assert os.readlink(mount.path / "pkg/latest") == "src/mod3.py"
    assert (mount.path / "pkg/latest").read_bytes() == files["pkg/src/mod3.py"]
    big, again = (mount.path / "pkg/big.bin").stat(), (mount.path / "pkg/big-again.bin").stat()
    assert big.st_ino == again.st_ino and big.st_nlink == 2
    # And back out: tar reads through the mount and the listing matches.
    out = subprocess.run(["tar", "-czf", str(tmp_path / "b.tgz"), "-C", str(mount.path), "pkg"],
                         check=True)
    assert out.returncode == 0
    with tarfile.open(tmp_path / "b.tgz") as tar:
        names = set(tar.getnames())
    assert set(files) | {"pkg/latest", "pkg/big-again.bin"} <= names


def test_git_init_add_commit_log(mount: Mount) -> None:
    require("git")
    repo = mount.path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "HOME": str(mount.path)}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True,
                              capture_output=True, text=True).stdout

    git("init", "-q")
    for i in range(20):
        (repo / f"file{i}.txt").write_text(f"line {i}\n" * (i + 1))
    git("add", ".")
    git("commit", "-q", "-m", "first")
    (repo / "file3.txt").write_text("changed\n")
    git("commit", "-q", "-am", "second")
    log = git("log", "--format=%s")
    assert log.split() == ["second", "first"]
    assert git("status", "--porcelain") == ""
    git("fsck", "--strict")
    assert git("show", "HEAD~1:file3.txt") == "line 3\n" * 4


def test_sqlite_inserts_reopen_and_integrity(mount: Mount) -> None:
    db = mount.path / "data.db"
    con = sqlite3.connect(db)
    con.execute("create table t (id integer primary key, payload blob, digest text)")
    rows = []
    for i in range(2000):
        payload = os.urandom(200 + i % 300)
        rows.append((i, payload, hashlib.sha256(payload).hexdigest()))
    with con:
        con.executemany("insert into t values (?, ?, ?)", rows[:1000])
    with con:
        con.executemany("insert into t values (?, ?, ?)", rows[1000:])
    con.close()
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    got = con.execute("select id, payload, digest from t order by id").fetchall()
    assert got == rows
    with con:
        con.execute("delete from t where id % 2 = 0")
    con.execute("vacuum")
    assert con.execute("select count(*) from t").fetchone() == (1000,)
    con.close()
    # The warm tier holds a valid database too: another node could open it.
    con = sqlite3.connect(mount.warm / "data.db")
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    assert con.execute("select count(*) from t").fetchone() == (1000,)
    con.close()
