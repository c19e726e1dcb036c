"""What recovery puts in place from a journal entry, after tierfs stopped and after the whole
system restarted (when staged bytes never flushed to disk cannot be trusted)."""

from __future__ import annotations

import pytest

from tierfs.vfs.journal import Entry, Upload
from tierfs.vfs.recovery import publishable


def upload() -> Upload:
    return Upload(key="k", since=0.0, first_part=5 << 20, upload_id="u")


@pytest.mark.parametrize("entry, after_crash, after_restart", [
    # Closed, never flushed: fine after a crash of tierfs, untrusted after a restart.
    (Entry(b"a", closed=True, size=10), 10, None),
    # Closed and flushed (a publish had failed): trusted either way.
    (Entry(b"a", closed=True, size=10, synced=10), 10, 10),
    # Flushed, then written again and closed: only a crash of tierfs keeps the new bytes.
    (Entry(b"a", closed=True, size=12, synced=10), 12, None),
    # Still open: nothing, whatever happened.
    (Entry(b"a", size=10), None, None),
    # Streaming, fsynced at 8 and still open: the fsynced prefix either way.
    (Entry(b"a", size=10, upload=upload(), synced=8), 8, 8),
    # Streaming, fsynced at 8, then closed at 10 without a flush: after a restart, the
    # fsynced prefix is what is known to be whole.
    (Entry(b"a", closed=True, size=10, upload=upload(), synced=8), 10, 8),
    # Streaming, closed, never fsynced: untrusted after a restart.
    (Entry(b"a", closed=True, size=10, upload=upload()), 10, None),
    # No path (unreadable entry): nothing.
    (Entry(b"", closed=True, size=10, synced=10), None, None),
])
def test_what_recovery_publishes(entry: Entry, after_crash: int | None,
                                 after_restart: int | None) -> None:
    assert publishable(entry, rebooted=False) == after_crash
    assert publishable(entry, rebooted=True) == after_restart
