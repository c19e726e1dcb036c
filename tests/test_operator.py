"""The operator's commands against real mounts: stats, where, pin, evict, flush, status,
doctor, the control socket's access rules, the Prometheus endpoint, and no secrets in output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Mount, S3Server, make_mount, running, tierfs, tmpfs
from s3proxy import FaultProxy
from test_cache import cold_mount, publish, read_uncached, served_once
from test_durability import set_immutable
from tierfs.control.registry import mount_for

MIB = 1024 * 1024


def stats(target: Path) -> dict:
    return json.loads(tierfs("stats", "--json", str(target)).stdout)


@pytest.fixture
def cold(tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server
         ) -> Iterator[Mount]:
    m = cold_mount(tmp_path, proxy, bucket, "--hot-capacity", "64MiB", "--block-size", "4MiB",
                   "--read-memory", "16MiB", "--prometheus-port", str(_free_port()))
    with running(m):
        yield m


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_counters_match_a_known_workload_and_the_schema(cold: Mount, s3_server: S3Server
                                                        ) -> None:
    data = os.urandom(10 * MIB + 3)  # 3 blocks of 4 MiB, the last one short
    publish(cold, s3_server, {"x.bin": data})
    before = stats(cold.path)
    assert before["schema"] == 1 and before["live"] is True
    assert before["mountpoint"] == str(cold.path)
    assert set(before["tiers"]) == {"hot", "warm", "cold"}
    for key in ("used", "capacity", "blocks", "pinned", "staged_files", "staged_bytes",
                "hit_ratio", "hits", "misses", "bytes_served", "evictions", "disk_free"):
        assert key in before["tiers"]["hot"], key
    for key in ("pending_uploads", "pending_bytes", "upload_errors", "bytes_served"):
        assert key in before["tiers"]["cold"], key
    assert before["tiers"]["hot"]["capacity"] == 64 * MIB
    assert read_uncached(cold.path / "data" / "x.bin") == data
    time.sleep(1.5)  # counters are snapshotted once a second
    first = stats(cold.path)
    assert served_once(first["tiers"]["cold"]["bytes_served"]
                       - before["tiers"]["cold"]["bytes_served"], len(data))
    assert first["tiers"]["hot"]["misses"] - before["tiers"]["hot"]["misses"] == 3
    assert first["rates"] is not None and first["rates"]["cold"] > 0
    assert read_uncached(cold.path / "data" / "x.bin") == data
    time.sleep(1.5)
    second = stats(cold.path)
    assert served_once(second["tiers"]["hot"]["bytes_served"]
                       - first["tiers"]["hot"]["bytes_served"], len(data))
    assert second["tiers"]["cold"]["bytes_served"] == first["tiers"]["cold"]["bytes_served"]
    assert second["tiers"]["hot"]["hits"] - first["tiers"]["hot"]["hits"] == 3
    # Prometheus, over 127.0.0.1: the same counters.
    port = cold.extra[cold.extra.index("--prometheus-port") + 1]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    metrics = {line.split()[0]: float(line.split()[1]) for line in text.decode().splitlines()
               if line.startswith("tierfs_")}
    assert metrics["tierfs_bytes_cold_total"] >= second["tiers"]["cold"]["bytes_served"]
    assert metrics["tierfs_hot_capacity_bytes"] == 64 * MIB
    # Nothing mounted: the last saved figures, from the hot tier's index.
    cold.stop()
    saved = json.loads(tierfs("stats", "--json", "--hot", str(cold.hot), "--warm",
                              str(cold.warm), *cold.extra[:2]).stdout)[0]
    assert saved["live"] is False and saved["mountpoint"] is None
    assert saved["tiers"]["hot"]["bytes_served"] == second["tiers"]["hot"]["bytes_served"]
    cold.start()


def test_the_stats_view_prints_each_tiers_place_whole(tmp_path: Path) -> None:
    """Paths and bucket URIs head their tier's table on a line of their own, never cut."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "m"
    (deep / "cold").mkdir(parents=True)
    # (The control socket under this hot tier is past a Unix socket address's 107 bytes.)
    m = make_mount(deep, "--bucket", f"file://{deep}/cold")
    with running(m):
        lines = tierfs("stats", str(m.path)).stdout.splitlines()
        config = json.loads(tierfs("stats", "--json", str(m.path)).stdout)
    bucket = config["tiers"]["cold"]["bucket"]
    assert len(bucket) > 100
    assert f"hot  {m.hot}" in lines and f"warm  {m.warm}" in lines
    assert f"cold  {bucket}" in lines
    assert any(line.split() == ["hit", "ratio", "-", "(0", "hits,", "0", "misses)"]
               for line in lines)


def test_a_runtime_directory_others_could_write_to_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mount records name the sockets commands connect to: in a directory another user made
    (the /tmp fallback) or can write to, they are not trusted."""
    from tierfs.control import registry
    from tierfs.errors import TierfsError

    runtime = tmp_path / "runtime"
    monkeypatch.setattr(registry, "runtime_dir", lambda: runtime)
    registry.prepare()
    assert registry.mounts() == []
    os.chmod(runtime, 0o777)
    with pytest.raises(TierfsError, match="others cannot write to"):
        registry.mounts()
    os.chmod(runtime, 0o700)
    os.chown(runtime, 4242, 4242)
    with pytest.raises(TierfsError, match="others cannot write to"):
        registry.prepare()


def test_stats_for_a_named_hot_tier_ignore_other_mounts(cold: Mount, tmp_path: Path) -> None:
    other = make_mount(tmp_path / "other")
    with running(other):
        (other.path / "f").write_bytes(b"x" * 1000)
        assert {d["mountpoint"] for d in json.loads(tierfs("stats", "--json").stdout)} \
            >= {str(cold.path), str(other.path)}
        named = json.loads(tierfs("stats", "--json", "--hot", str(other.hot)).stdout)
        assert [d["mountpoint"] for d in named] == [str(other.path)]
        other.stop()
        saved = json.loads(tierfs("stats", "--json", "--hot", str(other.hot), "--warm",
                                  str(other.warm)).stdout)
        assert len(saved) == 1 and saved[0]["live"] is False
        assert saved[0]["tiers"]["hot"]["path"] == str(other.hot)
        assert saved[0]["tiers"]["warm"]["bytes_served"] == \
            named[0]["tiers"]["warm"]["bytes_served"]
        other.start()


def test_pin_survives_eviction_and_evict_empties_the_cache(cold: Mount, proxy: FaultProxy,
                                                           s3_server: S3Server) -> None:
    m = cold
    files = {"pinned.bin": os.urandom(8 * MIB)}
    files.update({f"f{i:02}.bin": os.urandom(16 * MIB) for i in range(12)})  # 3x the cache
    publish(m, s3_server, files)
    tierfs("pin", str(m.path / "data" / "pinned.bin"))
    where = json.loads(tierfs("where", "--json", str(m.path / "data" / "pinned.bin")).stdout)
    assert where[0]["pinned"] is True and where[0]["hot"] == 8 * MIB
    for _ in range(2):  # an eviction pass: the rest is read twice, in turn...
        for name in list(files)[1:]:
            read_uncached(m.path / "data" / name)
    for _ in range(3):  # ...and the last file more often than what is cached
        read_uncached(m.path / "data" / "f11.bin")
    gets = proxy.requests["GET"]
    assert read_uncached(m.path / "data" / "pinned.bin") == files["pinned.bin"]
    assert proxy.requests["GET"] == gets  # still hot
    time.sleep(1.5)
    assert stats(m.path)["tiers"]["hot"]["evictions"] > 0
    summary = json.loads(tierfs("stats", "--json", str(m.path / "data")).stdout)
    assert summary["pinned"] == 8 * MIB and summary["hot"] >= 8 * MIB
    # evict: the path's blocks leave the hot tier.
    tierfs("unpin", str(m.path / "data" / "pinned.bin"))
    tierfs("evict", str(m.path / "data"))
    summary = json.loads(tierfs("stats", "--json", str(m.path / "data")).stdout)
    assert summary["hot"] == 0 and summary["to_fetch"] == summary["size"]
    time.sleep(1.5)
    assert stats(m.path)["tiers"]["hot"]["used"] == 0
    blocks = [p for p in (m.hot / "cache" / "v1").rglob("*")
              if p.is_file() and p.parent.name != "tmp"]
    assert blocks == []


def test_flush_leaves_no_pending_upload(tmp_path: Path, proxy: FaultProxy, bucket: str,
                                        s3_server: S3Server) -> None:
    m = cold_mount(tmp_path, proxy, bucket, "--durability", "writeback",
                   "--large-file-threshold", "8MiB", "--part-size", "5MiB")
    data = {f"c{i}.bin": os.urandom(12 * MIB) for i in range(2)}
    with running(m):
        proxy.fail("PUT", "delay")  # a slow bucket: uploads stay pending a while
        proxy.fail("POST", "delay")
        for name, content in data.items():
            (m.path / name).write_bytes(content)
        assert stats(m.path)["tiers"]["cold"]["pending_uploads"] > 0
        out = tierfs("flush", str(m.path), timeout=120).stdout
        assert "0 pending" in out
        assert stats(m.path)["tiers"]["cold"]["pending_uploads"] == 0
        for name, content in data.items():
            body = s3_server.client().get_object(Bucket=bucket, Key=f"tierfs/{name}")["Body"]
            assert body.read() == content


def test_status_lists_the_mount_and_its_tiers(mount: Mount) -> None:
    out = json.loads(tierfs("status", "--json").stdout)
    mine = [m for m in out if m["mountpoint"] == str(mount.path)]
    assert len(mine) == 1
    assert mine[0]["pid"] in mount.pids
    assert {t: h["ok"] for t, h in mine[0]["health"].items()} == \
        {"hot": True, "warm": True, "cold": True}
    assert str(mount.path) in tierfs("status").stdout


def test_stats_of_every_mount_shows_those_that_answer(mount: Mount, tmp_path: Path) -> None:
    """A mount that does not answer (its control socket gone, here) made ``tierfs stats``
    of every mount fail with nothing shown."""
    other = make_mount(tmp_path / "other")
    with running(other):
        found = mount_for(str(other.path))
        assert found is not None
        os.unlink(found[0].socket)
        result = tierfs("stats", "--json", check=False)
        assert result.returncode == 1
        shown = {d["mountpoint"] for d in json.loads(result.stdout)}
        assert str(mount.path) in shown and str(other.path) not in shown
        assert f"cannot reach the mount on {other.path}" in result.stderr


#: Another user, with no group in common with root (a root group would use the group bits).
NOBODY = {"user": 65534, "group": 65534, "extra_groups": []}


def test_the_control_socket_refuses_other_users(mount: Mount) -> None:
    found = mount_for(str(mount.path))
    assert found is not None
    sock = found[0].socket
    assert os.stat(sock).st_mode & 0o777 == 0o600
    probe = ("import json, socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n"
             "    s.connect(sys.argv[1])\n"
             "except PermissionError:\n"
             "    print('refused by the file system'); sys.exit(0)\n"
             "try:\n"
             "    s.sendall(b'{\"cmd\": \"stats\"}\\n')\n"
             "except BrokenPipeError:\n"
             "    pass  # the daemon answered and hung up before reading\n"
             "print(s.makefile().readline())\n")
    python = "/usr/bin/python3"  # the venv's interpreter lives under /root
    # Let another user reach the socket's directory; the socket itself stays 0600.
    ancestors = [p for p in Path(sock).parents if p != Path("/")]
    modes = {p: p.stat().st_mode & 0o7777 for p in ancestors}
    try:
        for path in ancestors:
            os.chmod(path, modes[path] | 0o001)
        as_nobody = subprocess.run([python, "-c", probe, sock], capture_output=True,
                                   text=True, timeout=30, **NOBODY)
        assert "refused by the file system" in as_nobody.stdout, as_nobody
        # Even with the socket opened up, the daemon checks who is calling.
        os.chmod(sock, 0o666)
        as_nobody = subprocess.run([python, "-c", probe, sock], capture_output=True,
                                   text=True, timeout=30, **NOBODY)
    finally:
        os.chmod(sock, 0o600)
        for path, mode in modes.items():
            os.chmod(path, mode)
    assert as_nobody.stdout.strip().startswith("{"), as_nobody
    answer = json.loads(as_nobody.stdout)
    assert answer["ok"] is False and "permission denied" in answer["error"]


def test_doctor_finds_a_tier_that_is_not_writable(tmp_path: Path) -> None:
    hot, warm = tmp_path / "hot", tmp_path / "warm"
    hot.mkdir()
    warm.mkdir()
    args = ("doctor", "--hot", str(hot), "--warm", str(warm), "--bucket",
            f"file://{tmp_path / 'cold'}")
    (tmp_path / "cold").mkdir()
    healthy = tierfs(*args, check=False)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    set_immutable(warm, True)
    try:
        sick = tierfs(*args, check=False)
    finally:
        set_immutable(warm, False)
    assert sick.returncode == 1
    assert f"warm tier {warm}: not writable" in sick.stdout
    assert "fix: give this user write access" in sick.stdout
    missing = tierfs("doctor", "--hot", str(hot), "--warm", str(tmp_path / "nope"),
                     "--bucket", f"file://{tmp_path / 'cold'}", check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stdout
    (hot / "lost+found").mkdir()
    (hot / "lost+found" / "abc").write_bytes(b"staged")
    (hot / "lost+found" / "abc.txt").write_bytes(b'{"path": "d/x"}')
    aside = tierfs(*args, check=False)
    assert aside.returncode == 1
    assert "set-aside data: 1 staged file(s)" in aside.stdout and "fix: read each note" in \
        aside.stdout


def test_no_credentials_in_logs_stats_or_errors(tmp_path: Path, s3_server: S3Server,
                                                bucket: str) -> None:
    secret = "tierfs-test-secret-0123456789abcdef"
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret}
    base = ["--bucket", f"s3://{bucket}/t", "--endpoint-url", s3_server.endpoint,
            "--addressing-style", "path", "--large-file-threshold", "4KiB"]
    m = make_mount(tmp_path, *base, "--log-level", "debug")
    outputs = []
    old = os.environ.get("AWS_SECRET_ACCESS_KEY")
    os.environ["AWS_SECRET_ACCESS_KEY"] = secret  # the daemon inherits it
    try:
        with running(m):
            (m.path / "f.bin").write_bytes(os.urandom(100_000))
            assert (m.path / "f.bin").read_bytes()
            outputs.append(tierfs("stats", "--json", str(m.path)).stdout)
            outputs.append(tierfs("status", "--json").stdout)
        bad = subprocess.run([sys.executable, "-m", "tierfs", "mount", str(m.path), "--hot",
                              str(m.hot), "--warm", str(m.warm), *base[:-2], "--bucket",
                              "s3://no-such-bucket-here/t"], capture_output=True, text=True,
                             env=env, timeout=120)
        assert bad.returncode == 1
        outputs += [bad.stdout, bad.stderr]
    finally:
        if old is None:
            del os.environ["AWS_SECRET_ACCESS_KEY"]
        else:
            os.environ["AWS_SECRET_ACCESS_KEY"] = old
    outputs.append(m.log())
    assert "DEBUG" in outputs[-1]  # the log level took effect
    for text in outputs:
        assert secret not in text


def test_stats_show_the_capacity_the_hot_disk_leaves_room_for(tmp_path: Path) -> None:
    """hot_capacity is 50% of the disk's size; with other files filling the disk, the cache
    can only grow to what it holds plus the disk's free space, and stats say so."""
    (tmp_path / "cold").mkdir()
    with tmpfs(tmp_path / "smallhot", "160m") as hot:
        m = make_mount(tmp_path, "--bucket", f"file://{tmp_path}/cold")
        m.hot = hot
        with running(m):
            # Someone else's 120 MiB on the hot disk: about 40 MiB stay free, 80 MiB are
            # configured (50% of 160 MiB).
            with open(hot / "ballast", "wb") as f:
                f.write(b"\0" * 120 * MIB)
            doc = stats(m.path)
            table = tierfs("stats", str(m.path)).stdout
    h = doc["tiers"]["hot"]
    assert h["capacity"] == 80 * MIB
    assert h["disk_free"] < 40 * MIB
    assert h["usable_capacity"] == min(h["capacity"], h["used"] + h["disk_free"])
    assert h["usable_capacity"] < h["capacity"]
    row = next(line for line in table.splitlines() if line.strip().startswith("used /"))
    assert "used / usable capacity" in row and "disk free limits it" in row, table


def test_stats_count_the_blocks_tierfs_evict_drops(cold: Mount, s3_server: S3Server) -> None:
    data = os.urandom(10 * MIB + 3)  # 3 blocks of 4 MiB
    publish(cold, s3_server, {"x.bin": data})
    assert read_uncached(cold.path / "data" / "x.bin") == data
    deadline = time.monotonic() + 30
    while stats(cold.path)["tiers"]["hot"]["blocks"] < 3:  # blocks are stored after the read
        assert time.monotonic() < deadline, "the blocks read were never cached"
        time.sleep(0.1)
    before = stats(cold.path)["tiers"]["hot"]
    out = tierfs("evict", str(cold.path / "data" / "x.bin")).stdout
    assert out.startswith("evicted ")
    after = stats(cold.path)["tiers"]["hot"]
    assert after["used"] == 0
    assert after["evictions"] - before["evictions"] == 3
    assert after["bytes_evicted"] - before["bytes_evicted"] == len(data)
    table = tierfs("stats", str(cold.path)).stdout
    row = next(line for line in table.splitlines() if line.strip().startswith("evictions"))
    assert row.split()[1] == str(after["evictions"]) and after["evictions"] >= 3


#: (No "/" can be in a name: U+2215 DIVISION SLASH looks the same on a terminal.)
FORGED = "\u2215mnt\u2215data\u2215ckpt.pt: cold, 1 GiB, 100% hot, pinned"


def test_where_does_not_print_hostile_names_raw(mount: Mount) -> None:
    shared = mount.warm / "shared"
    shared.mkdir()
    # Made straight on the warm tree, as another user of the cluster can.
    (shared / f"a\n{FORGED}").write_bytes(b"x")
    (shared / "b\x1b]2;owned\x07").write_bytes(b"y")
    out = tierfs("where", str(mount.path / "shared")).stdout
    lines = out.splitlines()
    assert len(lines) == 2, f"two files, {len(lines)} lines:\n{out}"
    assert FORGED not in lines, f"a forged line in the report:\n{out}"
    assert "\x1b" not in out, f"a raw escape sequence reaches the terminal: {out!r}"
