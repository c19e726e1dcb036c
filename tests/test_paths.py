"""Paths shown as text in log lines and messages (tierfs.paths.show)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from tierfs.paths import show


def test_a_path_is_shown_as_text_not_a_bytes_repr() -> None:
    assert show(b"ckpt/small.npz") == "ckpt/small.npz"
    assert show("ckpt/small.npz") == "ckpt/small.npz"
    assert show(Path("a b/c.bin")) == "a b/c.bin"
    assert show("données/été.bin".encode()) == "données/été.bin"


def test_names_from_other_users_stay_on_one_printable_line() -> None:
    assert show(b"bad\xff.bin") == "bad\\xff.bin"
    assert show(b"two\nlines") == "two\\x0alines"
    assert show(b"\x1b[31mred") == "\\x1b[31mred"
    assert show(b"tab\there") == "tab\\x09here"
    # What a log line with it looks like, written to a UTF-8 stream.
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tierfs.test_paths")
    log.addHandler(handler)
    try:
        log.warning("refusing stub %s", show(b"ckpt/\xfe\nx"))
    finally:
        log.removeHandler(handler)
    stream.flush()
    assert stream.buffer.getvalue() == b"refusing stub ckpt/\\xfe\\x0ax\n"
