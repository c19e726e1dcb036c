"""``tierfs where`` and ``tierfs stats PATH`` of a file written through the mount and not
home yet (write-back, before its publish): they read the warm tier alone, where its name
holds an empty file until then, and said 0 bytes where ``stat`` said 500 KiB."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import make_mount, running, tierfs

KIB = 1024


def test_where_and_stats_of_a_file_waiting_for_its_publish(tmp_path: Path) -> None:
    with running(make_mount(tmp_path, "--durability", "writeback", "--cache-warm", "true")
                 ) as m:
        f = m.path / "f"
        data = os.urandom(500 * KIB)
        with open(f, "wb") as h:  # (open: not published before its close)
            h.write(data)
            h.flush()
            where = json.loads(tierfs("where", "--json", str(f)).stdout)[0]
            stats = json.loads(tierfs("stats", "--json", str(f)).stdout)
            assert os.stat(f).st_size == 500 * KIB
            assert (m.warm / "f").stat().st_size == 0
        assert where["size"] == where["hot"] == 500 * KIB and where["tier"] == "warm"
        assert stats["size"] == 500 * KIB and stats["to_fetch"] == 0
        tierfs("flush", str(m.path))
        assert json.loads(tierfs("where", "--json", str(f)).stdout)[0]["size"] == 500 * KIB
        assert f.read_bytes() == data
