"""What names a cached block and what its index entry holds: source ids (a cold object's
URI and ETag, a warm file's version), block keys, and the entry packed into LMDB."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Awaitable, Callable

#: size, checksum (XXH3-64), segment, frequency, access sequence, pinned
_ENTRY = struct.Struct(">QQBIQB")
_BLOCK = struct.Struct(">I")
#: Source ids are this many bytes of a SHA-256; a block key is the id plus a 4-byte number.
ID_BYTES = 16


@dataclasses.dataclass
class Entry:
    size: int
    crc: int
    segment: int = 0
    freq: int = 0
    seq: int = 0
    pinned: bool = False

    def encode(self) -> bytes:
        return _ENTRY.pack(self.size, self.crc, self.segment, min(self.freq, 2**32 - 1),
                           self.seq, self.pinned)

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        size, crc, segment, freq, seq, pinned = _ENTRY.unpack(raw)
        return cls(size, crc, segment, freq, seq, bool(pinned))


class Unkept(bytearray):
    """A fetched block's bytes that are served to the readers waiting for them but never
    kept, in memory or on the hot tier: the source changed while they were read (another node
    rewrote the warm file in place), so they are not the bytes of the version the source
    names."""


def cold_source_id(bucket: str, key: str, etag: str, size: int) -> bytes:
    """Named by the size a stub claims as well as by the object's version: a block's length
    follows that size, so a stub copied with a smaller one (by anyone who can write the warm
    tree) must not leave cut blocks where the real stub's reads would find them."""
    return hashlib.sha256(f"cold\0{bucket}\0{key}\0{etag}\0{size}".encode()
                          ).digest()[:ID_BYTES]


def warm_source_id(warm_root: str, st_ino: int, size: int, mtime_ns: int, ctime_ns: int
                   ) -> bytes:
    return hashlib.sha256(f"warm\0{warm_root}\0{st_ino}\0{size}\0{mtime_ns}\0{ctime_ns}"
                          .encode()).digest()[:ID_BYTES]


def block_key(source_id: bytes, block: int) -> bytes:
    return source_id + _BLOCK.pack(block)


def block_number(key: bytes) -> int:
    return int(_BLOCK.unpack(key[ID_BYTES:])[0])


@dataclasses.dataclass(frozen=True)
class Source:
    """Something whose blocks can be cached: its id, size, home tier and how to fetch a range."""

    id: bytes
    size: int
    tier: str  # "cold" or "warm"
    fetch: Callable[[int, int], Awaitable[bytes]]

    def blocks(self, block_size: int) -> int:
        return (self.size + block_size - 1) // block_size
