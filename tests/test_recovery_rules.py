"""What recovery puts in place from a journal entry, after tierfs stopped and after the whole
system restarted (when staged bytes never flushed to disk cannot be trusted), and that an
entry reads back from the index as it was written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfs.write.entries import Entry, Upload
from tierfs.write.recovery import publishable


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


names = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b)
uploads = st.builds(Upload, key=st.text(max_size=20), since=st.floats(0, 2e9),
                    first_part=st.integers(1, 1 << 30),
                    upload_id=st.none() | st.text(max_size=20),
                    parts=st.dictionaries(st.integers(1, 10_000), st.text(max_size=10)),
                    checksum=st.none() | st.just("CRC32"))
entries = st.builds(Entry, path=names, closed=st.booleans(), size=st.integers(0, 1 << 50),
                    atime_ns=st.integers(0, 1 << 62), mtime_ns=st.integers(0, 1 << 62),
                    upload=st.none() | uploads, replaces=st.none() | st.text(max_size=20),
                    synced=st.none() | st.integers(0, 1 << 50))


@given(entries)
def test_a_journal_entry_reads_back_as_written(entry: Entry) -> None:
    assert Entry.decode(entry.encode()) == entry


def test_an_entry_journaled_before_uploads_kept_checksums_reads_as_one_without() -> None:
    """An upload created without a checksum is completed without one after an upgrade."""
    raw = (b'{"path": "a", "closed": true, "size": 10, "atime_ns": 0, "mtime_ns": 0, '
           b'"replaces": null, "synced": null, "upload": {"key": "k", "since": 0.0, '
           b'"first_part": 5242880, "upload_id": "u", "token": "t", "parts": {"1": "e1"}}}')
    entry = Entry.decode(raw)
    assert entry.upload is not None
    assert entry.upload.checksum is None and entry.upload.parts == {1: "e1"}
