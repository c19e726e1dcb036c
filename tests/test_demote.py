"""Demotion, promotion and the warm quota through real mounts: ``tierfs demote``, ``promote``
and ``scan`` against a local-folder bucket and moto's S3, the quota demoting in the
background, and the daemon killed (SIGKILL) at each step of a demotion."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Mount, S3Server, make_mount, running, tierfs
from s3proxy import FaultProxy
from test_durability import bucket_keys, kill_daemon, s3_mount, stub_keys

MIB = 1024 * 1024


def local_mount(base: Path, *extra: str) -> Mount:
    (base / "cold").mkdir(exist_ok=True)
    return make_mount(base, "--bucket", f"file://{base / 'cold'}", "--large-file-threshold",
                      "1MiB", "--part-size", "5MiB", "--attr-timeout", "0",
                      "--entry-timeout", "0", *extra)


def is_stub(path: Path) -> bool:
    return path.is_symlink() and os.readlink(path).startswith("tierfs:")


def warm_counters(m: Mount) -> dict:
    return json.loads(tierfs("stats", "--json", str(m.path)).stdout)["tiers"]["warm"]



def demoted_key(key: str) -> str:
    """A demotion's key without its suffix, which it always has (``<path>~<12 hex digits>``:
    two nodes may demote one file at once)."""
    path, sep, suffix = key.rpartition("~")
    assert sep and re.fullmatch("[0-9a-f]{12}", suffix), key
    return path

def test_scan_lists_large_plain_files_and_demote_moves_them(tmp_path: Path) -> None:
    m = local_mount(tmp_path)
    big, small = os.urandom(3 * MIB + 5), os.urandom(200_000)
    (m.warm / "data").mkdir(parents=True)
    (m.warm / "data" / "big.bin").write_bytes(big)  # written before tierfs
    (m.warm / "data" / "small.bin").write_bytes(small)
    with running(m):
        out = tierfs("scan", str(m.path)).stdout
        assert "data/big.bin" in out and "small.bin" not in out
        assert "1 file(s) over 1 MiB" in out
        listed = json.loads(tierfs("scan", "--json", str(m.path)).stdout)
        assert listed["count"] == 1 and listed["bytes"] == len(big)
        ino = os.stat(m.path / "data" / "big.bin").st_ino
        tierfs("scan", "--demote", str(m.path))
        assert is_stub(m.warm / "data" / "big.bin")
        assert os.stat(m.path / "data" / "big.bin").st_ino == ino
        assert not is_stub(m.warm / "data" / "small.bin")
        assert (m.path / "data" / "big.bin").read_bytes() == big
        assert json.loads(tierfs("scan", "--json", str(m.path)).stdout)["count"] == 0
        # On demand, a small file too; and back with promote (under the threshold).
        tierfs("demote", str(m.path / "data" / "small.bin"))
        assert is_stub(m.warm / "data" / "small.bin")
        assert (m.path / "data" / "small.bin").read_bytes() == small
        tierfs("promote", str(m.path / "data"))  # a directory: its cold files
        assert not is_stub(m.warm / "data" / "small.bin")
        assert (m.warm / "data" / "small.bin").read_bytes() == small
        assert is_stub(m.warm / "data" / "big.bin")  # past the threshold: stays cold
        warm = warm_counters(m)
        assert warm["demotions"] == 2 and warm["bytes_demoted"] == len(big) + len(small)
        assert warm["promotions"] == 1 and warm["bytes_promoted"] == len(small)
        assert "demoted" in tierfs("stats", str(m.path)).stdout
        m.stop()
        m.start()  # and from the bucket after a remount
        assert (m.path / "data" / "big.bin").read_bytes() == big
        assert (m.path / "data" / "small.bin").read_bytes() == small


def test_scan_demote_moves_every_large_file_past_one_walk(tmp_path: Path) -> None:
    """More large files than one walk hands back (``warmscan.KEEP``): all are demoted, a page
    at a time, as by ``tierfs demote`` of a directory (only the first 1,000 were)."""
    m = local_mount(tmp_path, "--large-file-threshold", "4KiB")
    d = m.warm / "many"
    d.mkdir(parents=True)
    files = {f"f{i:05d}": os.urandom(8192 + i) for i in range(1010)}
    for name, data in files.items():
        (d / name).write_bytes(data)
    (d / "small").write_bytes(b"x" * 100)
    with running(m):
        assert json.loads(tierfs("scan", "--json", str(m.path)).stdout)["count"] == len(files)
        tierfs("scan", "--demote", str(m.path), timeout=600)
        left = [p.name for p in d.iterdir() if not is_stub(p)]
        assert left == ["small"], f"{len(left)} plain files left after scan --demote"
        assert json.loads(tierfs("scan", "--json", str(m.path)).stdout)["count"] == 0
        for name in ("f00000", "f00500", "f01009"):
            assert (m.path / "many" / name).read_bytes() == files[name]


def test_scan_and_doctor_without_a_mount(tmp_path: Path) -> None:
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "big.bin").write_bytes(os.urandom(2 * MIB))
    out = tierfs("scan", str(warm), "--large-file-threshold", "1MiB").stdout
    assert "big.bin" in out and "1 file(s)" in out
    refused = tierfs("scan", "--demote", str(warm), check=False)
    assert refused.returncode != 0 and "running mount" in refused.stderr
    doctor = tierfs("doctor", "--warm", str(warm), "--hot", str(tmp_path / "hot"),
                    "--large-file-threshold", "1MiB", check=False).stdout
    assert "large files on the warm tier" in doctor and "1 plain file(s), 2 MiB" in doctor


def test_the_warm_quota_demotes_the_least_recently_used_in_the_background(
        tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    m = s3_mount(tmp_path, s3_server.endpoint, bucket, "--warm-quota", "7MiB",
                 "--demote-min-size", "1MiB", "--demote-interval", "0.2")
    files = {f"f{i}.bin": os.urandom(3 * MIB) for i in range(3)}  # under the 8 MiB threshold
    with running(m):
        for i, (name, data) in enumerate(files.items()):
            (m.path / name).write_bytes(data)
            t = time.time_ns() - (10 - i) * 10**9 * 100  # f0 the oldest
            os.utime(m.warm / name, ns=(t, t))
        deadline = time.monotonic() + 20
        while not is_stub(m.warm / "f0.bin"):
            assert time.monotonic() < deadline, "the quota demoted nothing"
            time.sleep(0.1)
        time.sleep(1)  # (passes after this one find the quota kept)
        assert not is_stub(m.warm / "f1.bin") and not is_stub(m.warm / "f2.bin")
        assert [demoted_key(k) for k in stub_keys(m)] == ["t/f0.bin"]
        for name, data in files.items():
            assert (m.path / name).read_bytes() == data
        assert warm_counters(m)["demotions"] == 1


# -- the daemon killed at each step of a demotion --------------------------------------------

#: Where the kill comes: while the upload is created (the demotion recorded, nothing in the
#: bucket), while a part uploads, once the object is complete but before the swap, and just
#: after the swap (the record of the demotion perhaps not yet dropped).
KILL_POINTS = ["create", "part", "completed", "swapped"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_each_step_of_a_demotion_loses_nothing(tmp_path: Path, proxy: FaultProxy,
                                                         bucket: str, s3_server: S3Server,
                                                         point: str) -> None:
    m = s3_mount(tmp_path, proxy.endpoint, bucket)
    data = os.urandom(12 * MIB + 7)  # three parts of 5 MiB
    (m.warm / "d").mkdir(parents=True)
    (m.warm / "d" / "ckpt.bin").write_bytes(data)
    with running(m):
        if point == "create":
            proxy.fail("POST", "hold", 1)
        elif point == "part":
            proxy.fail("PUT", "hold")
        elif point == "completed":
            proxy.fail("POST", "pass", 1)
            proxy.fail("POST", "hold-after", 1)
        command = subprocess.Popen([sys.executable, "-m", "tierfs", "demote",
                                    str(m.path / "d" / "ckpt.bin")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (is_stub(m.warm / "d" / "ckpt.bin") if point == "swapped" else proxy.held):
            assert time.monotonic() < deadline, f"the demotion never reached {point}"
            time.sleep(0.005)
        kill_daemon(m)
        command.wait(timeout=30)
        proxy.release()
        proxy.heal()
        time.sleep(0.2)  # (held requests answered: none reaches the bucket after this)
        if point == "completed":
            # complete, unused
            assert {demoted_key(k) for k in bucket_keys(s3_server, bucket)} == {"t/d/ckpt.bin"}
        m.start()
        assert (m.path / "d" / "ckpt.bin").read_bytes() == data
        uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert uploads == []
        if point == "swapped":
            assert [demoted_key(k) for k in stub_keys(m)] == ["t/d/ckpt.bin"]
            assert bucket_keys(s3_server, bucket) == set(stub_keys(m))
        else:
            assert not is_stub(m.warm / "d" / "ckpt.bin")
            assert (m.warm / "d" / "ckpt.bin").read_bytes() == data
            assert bucket_keys(s3_server, bucket) == set()  # the undone demotion's object
        deadline = time.monotonic() + 20
        while any(m.warm.rglob(".tierfs-*.tmp")):
            assert time.monotonic() < deadline, "temp files left on the warm tier"
            time.sleep(0.2)
        # And the file can be demoted (again) once everything is healthy.
        again = tierfs("demote", str(m.path / "d" / "ckpt.bin"), check=point != "swapped")
        if point == "swapped":
            assert "already in the bucket" in again.stdout
        assert is_stub(m.warm / "d" / "ckpt.bin")
        assert (m.path / "d" / "ckpt.bin").read_bytes() == data



def test_demote_promote_and_scan_in_a_mount_of_named_roots(tmp_path: Path) -> None:
    from conftest import make_roots_mount

    m = make_roots_mount(tmp_path, ("cluster", "user"), "--large-file-threshold", "1MiB",
                         "--part-size", "5MiB", "--attr-timeout", "0", "--entry-timeout", "0")
    big, small = os.urandom(3 * MIB + 5), os.urandom(200_000)
    (m.roots["user"] / "big.bin").write_bytes(big)  # written before tierfs
    (m.roots["cluster"] / "small.bin").write_bytes(small)
    with running(m):
        listed = json.loads(tierfs("scan", "--json", str(m.path)).stdout)
        assert listed["count"] == 1 and [f["path"] for f in listed["files"]] == ["user/big.bin"]
        tierfs("scan", "--demote", str(m.path / "user"))
        assert is_stub(m.roots["user"] / "big.bin")
        assert (m.path / "user" / "big.bin").read_bytes() == big
        tierfs("demote", str(m.path / "cluster" / "small.bin"))
        assert is_stub(m.roots["cluster"] / "small.bin")
        # Each root's objects under its own prefix of the bucket.
        for root, name, data in (("cluster", "small.bin", small), ("user", "big.bin", big)):
            [object_path] = (tmp_path / "cold" / root).glob(name + "~*")
            assert demoted_key(object_path.name) == name and object_path.read_bytes() == data
        assert (m.path / "cluster" / "small.bin").read_bytes() == small
        tierfs("promote", str(m.path / "cluster"))
        assert not is_stub(m.roots["cluster"] / "small.bin")
        assert (m.roots["cluster"] / "small.bin").read_bytes() == small
