"""Stubs: how the warm tier names a file whose data lives in the bucket.

A stub is a symbolic link whose target is ``tierfs:v1?uri=...&size=...&etag=...&mode=...&
mtime_ns=...`` (URL-encoded). A symlink is created and renamed atomically on NFS, one
``readlink`` reads it, readdir's d_type finds candidates without opening files, and ``ls -l`` on
the NFS side shows where the data went. Its owner is the file's owner.

A stub on a shared NFS tree may have been written by anyone, so parsing is strict: a stub whose
URI is not inside the configured bucket and prefix, or that is malformed in any way, is refused
(never followed).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, urlencode

from tierfs.objects.base import BucketURI

PREFIX = b"tierfs:"
VERSION_PREFIX = b"tierfs:v1?"
_FIELDS = ("uri", "size", "etag", "mode", "mtime_ns")


class StubError(ValueError):
    """A malformed stub, or one that points outside the configured bucket."""


@dataclasses.dataclass(frozen=True)
class Stub:
    key: str
    size: int
    etag: str
    mode: int  # permission bits only
    mtime_ns: int

    def encode(self, bucket: BucketURI) -> bytes:
        query = urlencode([("uri", bucket.uri_of(self.key)), ("size", str(self.size)),
                           ("etag", self.etag), ("mode", f"{self.mode:04o}"),
                           ("mtime_ns", str(self.mtime_ns))])
        return VERSION_PREFIX + query.encode()


def looks_like_stub(target: bytes) -> bool:
    """Whether a symlink target would be read as a stub (so users may not create one)."""
    return target.startswith(PREFIX)


def parse_stub(target: bytes, bucket: BucketURI) -> Stub:
    if not target.startswith(VERSION_PREFIX):
        raise StubError("unknown stub version")
    try:
        pairs = parse_qsl(target[len(VERSION_PREFIX):].decode("ascii"), keep_blank_values=True,
                          strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise StubError("stub is not a valid query string") from None
    fields = dict(pairs)
    if len(pairs) != len(fields) or set(fields) != set(_FIELDS):
        raise StubError(f"stub fields must be exactly {', '.join(_FIELDS)}")
    base = bucket.uri_of("")
    uri = fields["uri"]
    if not uri.startswith(base):
        raise StubError(f"stub points outside the bucket ({uri})")
    key = uri[len(base):]
    if not bucket.contains(key):
        raise StubError(f"stub points outside the bucket prefix ({uri})")
    try:
        size = int(fields["size"])
        mode = int(fields["mode"], 8)
        mtime_ns = int(fields["mtime_ns"])
    except ValueError:
        raise StubError("stub size, mode or mtime is not a number") from None
    etag = fields["etag"]
    if size < 0 or not 0 <= mode <= 0o7777 or not etag or len(etag) > 256:
        raise StubError("stub size, mode or etag is out of range")
    return Stub(key, size, etag, mode, mtime_ns)
