"""Paths as text for people: log lines and messages name ``ckpt/small.npz``, not the bytes
repr ``b'ckpt/small.npz'``.

Names on the warm tier are bytes and come from other users: they need not be UTF-8 and may hold
a newline or an escape sequence. Shown as they are, those would break a log line in two or
drive the terminal reading it, and a lone surrogate (what ``os.fsdecode`` makes of a byte that
is not UTF-8) cannot be written to a UTF-8 log at all. So bytes that are not UTF-8 appear as
``\\xNN`` and control characters as their escapes; every other character as itself.
"""

from __future__ import annotations

import os


def show(path: bytes | str | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """``path`` as one line of printable text (reversible only for ordinary names)."""
    raw = os.fsencode(path)
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
