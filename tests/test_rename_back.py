"""fsync of an open file while another process renames the file's directory away and back
(``mv d e; mv e d``) through the mount. The publish's first warm call is made on the file's
path without the namespace lock (``WarmPublisher.at_path``) and is made again when a rename
took the path away under it. It looked for the rename by the path alone, which is the same
again after the rename back, and by a count of renames taken after the warm rename returned
(the call failed before): the ENOENT reached fsync(2), for a file that was under its name the
whole time. Fails within seconds on the code before the fix."""

from __future__ import annotations

import os
import threading
import time

from conftest import Mount


def test_fsync_while_the_directory_is_renamed_away_and_back(mount: Mount) -> None:
    base = mount.path
    (base / "d").mkdir()
    fd = os.open(base / "d" / "f", os.O_RDWR | os.O_CREAT, 0o644)
    stop = threading.Event()

    def away_and_back() -> None:
        while not stop.is_set():
            os.rename(base / "d", base / "e")
            os.rename(base / "e", base / "d")
            time.sleep(0.0002)

    t = threading.Thread(target=away_and_back)
    t.start()
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 8
        i = 0
        while time.monotonic() < deadline and not errors:
            os.pwrite(fd, b"x" * 100, i * 100)
            try:
                os.fsync(fd)
            except OSError as e:
                errors.append(f"fsync #{i}: {e!r}")
            i += 1
    finally:
        stop.set()
        t.join()
        os.close(fd)
    assert not errors, errors
    assert (base / "d" / "f").read_bytes() == b"x" * 100 * i
