"""A file unlinked through the mount while its upload to the bucket completes: its object is
no file's and is deleted, but a handle still open reads what was written, as any file
unlinked while open (staging is kept until the last handle goes), never the file that was
at the name before (the handle fell back to it once the completion was answered)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import S3Server, make_mount, running
from s3proxy import FaultProxy


def test_an_open_handle_reads_what_was_written_after_an_unlink_during_completion(
        tmp_path: Path, proxy: FaultProxy, bucket: str, s3_server: S3Server) -> None:
    m = make_mount(tmp_path, "--bucket", f"s3://{bucket}/t", "--endpoint-url", proxy.endpoint,
                   "--addressing-style", "path", "--large-file-threshold", "4KiB",
                   "--durability", "writeback", "--block-size", "64KiB")
    old = b"o" * 100
    new = b"N" * (100 * 1024)
    with running(m):
        (m.warm / "f").write_bytes(old)
        path = m.path / "f"
        r = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(r, 200, 0) == old
            proxy.delay = 3.0
            proxy.fail("POST", "pass", 1)  # the upload's start
            proxy.fail("POST", "delay", 1)  # its completion, answered late
            w = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.write(w, new)
            os.close(w)  # (write-back: the upload completes in the background)
            time.sleep(1.0)
            os.unlink(path)
            os.posix_fadvise(r, 0, 0, os.POSIX_FADV_DONTNEED)  # (so tierfs answers)
            assert os.pread(r, len(new) + 10, 0) == new
            time.sleep(4.0)  # the completion answered meanwhile
            os.posix_fadvise(r, 0, 0, os.POSIX_FADV_DONTNEED)
            got = os.pread(r, len(new) + 10, 0)
            assert got == new, (len(got), got[:8])
            assert os.fstat(r).st_size == len(new)
        finally:
            os.close(r)
        time.sleep(0.5)
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)
                .get("Contents", [])]
        assert keys == [], keys  # (the object of a file nobody names)
        assert not (m.warm / "f").exists()
        assert not any((m.hot / "staging").iterdir())  # (staging went with the handle)
