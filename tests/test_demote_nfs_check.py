"""A demotion over an NFS-like warm tier whose client caches attributes as an NFS client does
(tests/nfslike.py with sshfs's own cache off: the kernel's attribute cache alone, ten
seconds, like acregmin..acregmax). Another node appends to the file on the server while it
uploads: "a writer on any node wins" (docs/semantics.md, "Demotion and promotion"). The
check before the swap must ask the server, not the client's cache, or the stub is renamed
over the changed file and the other node's write is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_mount, running
from nfslike import missing_tools
from tierfs.objects.local import WORK_DIR
from tierfs.stubs import looks_like_stub

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason="no sshfs/sshd here")

MIB = 1024 * 1024
CACHE = 10.0


def is_stub(path: Path) -> bool:
    return path.is_symlink() and looks_like_stub(os.readlink(path).encode())


def parts(work: Path) -> list[Path]:
    return [p for d in work.iterdir() if d.is_dir() for p in d.iterdir()
            if p.name.startswith("part-")] if work.is_dir() else []


def test_another_nodes_append_during_the_upload_wins_on_nfs(tmp_path: Path) -> None:
    (tmp_path / "cold").mkdir()
    m = make_mount(tmp_path, "--bucket", f"file://{tmp_path / 'cold'}",
                   "--large-file-threshold", "1GiB", "--part-size", "5MiB",
                   "--attr-timeout", "0", "--entry-timeout", "0",
                   warm_nfs={"latency": 0.001, "max_conns": 1, "cache_timeout": CACHE,
                             "options": ["cache=no"]})
    data = os.urandom(96 * MIB)
    with running(m):
        assert m.nfs is not None
        server = m.nfs.export / "f.bin"
        server.write_bytes(data)
        os.stat(m.warm / "f.bin")  # (the client looks: its attributes are cached from now)
        (m.path / "f.bin").stat()
        command = subprocess.Popen([sys.executable, "-m", "tierfs", "demote",
                                    str(m.path / "f.bin")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        work = tmp_path / "cold" / WORK_DIR
        deadline = time.monotonic() + 60
        while not parts(work):
            assert time.monotonic() < deadline and command.poll() is None, \
                command.communicate()[0]
            time.sleep(0.002)
        if command.poll() is not None or server.is_symlink():
            pytest.skip("the demotion was over before the other node wrote")
        with open(server, "ab") as f:  # another node, on the server itself
            f.write(b"appended by another node")
        out, _ = command.communicate(timeout=120)
        time.sleep(CACHE + 0.5)  # (past the client's cache: what the server holds shows)
        assert not is_stub(server), f"the stub went over the other node's write: {out!r}"
        assert (m.path / "f.bin").read_bytes() == data + b"appended by another node"
