"""Stubs: how the warm tier names a file whose data lives in the bucket.

A stub is a symbolic link whose target is ``tierfs:v1?uri=...&size=...&etag=...&mode=...&
mtime_ns=...`` (URL-encoded). A symlink is created and renamed atomically on NFS, one
``readlink`` reads it, readdir's d_type finds candidates without opening files, and ``ls -l`` on
the NFS side shows where the data went. Its owner is the file's owner.

A stub on a shared NFS tree may have been written by anyone, so parsing is strict: a stub is
taken only in exactly the form tierfs writes it (``Stub.encode``), with every field in range and
its URI inside the configured bucket and prefix; anything else is refused (never followed).
What a stub says reaches the kernel (a size, a time, a mode) and sizes the work done for the
file, so a number out of range is as bad as one that does not parse.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote_plus, urlencode

from tierfs.objects.base import MAX_KEY_BYTES, BucketURI, ObjectInfo

PREFIX = b"tierfs:"
VERSION_PREFIX = b"tierfs:v1?"
_FIELDS = ("uri", "size", "etag", "mode", "mtime_ns")
#: The largest object S3 and GCS hold (5 TiB): no stub stands for a larger file.
MAX_SIZE = 5 * 1024**4
#: Times are a signed 64-bit count of nanoseconds (years 1677 to 2262): what ``stat`` and the
#: kernel's file times carry, and what the mount's attribute replies take.
MIN_MTIME_NS = -(2**63)
MAX_MTIME_NS = 2**63 - 1
#: Longer than any store's ETag (S3's are 34 characters at most, quotes dropped).
MAX_ETAG = 256
#: Permission bits only: no set-user-ID, set-group-ID or sticky bit comes from a stub.
PERMISSIONS = 0o777

# Numbers as ``Stub.encode`` writes them: plain ASCII digits, no sign but a time's minus, no
# leading zero, no more digits than the largest value has (so ``int`` never sees a long one).
_SIZE = re.compile(r"0|[1-9][0-9]{0,12}")
_MTIME = re.compile(r"0|-?[1-9][0-9]{0,18}")
_MODE = re.compile(r"0[0-7]{3}")
#: Printable ASCII without spaces or double quotes (a read sends it in an If-Match header).
_ETAG = re.compile(r"[!#-~]{1,%d}" % MAX_ETAG)


class StubError(ValueError):
    """A malformed stub, or one that points outside the configured bucket."""


@dataclasses.dataclass(frozen=True)
class Stub:
    """What a stub says. A stub made here is one ``parse_stub`` takes back: the mode keeps its
    permission bits only (a chmod to a set-user-ID mode keeps the rest) and a time outside
    ``MIN_MTIME_NS``..``MAX_MTIME_NS`` is clamped to it, as a file system clamps times to
    those it can store; otherwise the file would vanish from its directory once written."""

    key: str
    size: int
    etag: str
    mode: int  # permission bits only
    mtime_ns: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", self.mode & PERMISSIONS)
        object.__setattr__(self, "mtime_ns",
                           min(max(self.mtime_ns, MIN_MTIME_NS), MAX_MTIME_NS))

    def encode(self, bucket: BucketURI) -> bytes:
        query = urlencode([("uri", bucket.uri_of(self.key)), ("size", str(self.size)),
                           ("etag", self.etag), ("mode", f"{self.mode:04o}"),
                           ("mtime_ns", str(self.mtime_ns))])
        return VERSION_PREFIX + query.encode()


def looks_like_stub(target: bytes) -> bool:
    """Whether a symlink target would be read as a stub (so users may not create one)."""
    return target.startswith(PREFIX)


def parse_stub(target: bytes, bucket: BucketURI) -> Stub:
    """The stub a symlink target stands for; raises StubError unless the target is exactly
    what ``Stub.encode`` writes for a stub inside ``bucket`` with every field in range."""
    if not target.startswith(VERSION_PREFIX):
        raise StubError("unknown stub version")
    try:
        query = target[len(VERSION_PREFIX):].decode("ascii")
    except UnicodeDecodeError:
        raise StubError("stub is not ASCII") from None
    pairs = [pair.partition("=") for pair in query.split("&")]
    if [(name, eq) for name, eq, _ in pairs] != [(name, "=") for name in _FIELDS]:
        raise StubError(f"stub fields must be exactly {', '.join(_FIELDS)}, in that order")
    try:
        fields = {name: unquote_plus(value, errors="strict") for name, _, value in pairs}
    except UnicodeDecodeError:
        raise StubError("stub field is not UTF-8") from None
    base = bucket.uri_of("")
    uri = fields["uri"]
    if not uri.startswith(base):
        raise StubError(f"stub points outside the bucket ({uri!r})")
    key = uri[len(base):]
    if not bucket.contains(key):
        raise StubError(f"stub points outside the bucket prefix ({uri!r})")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise StubError(f"stub key is longer than {MAX_KEY_BYTES} bytes")
    if "\0" in key:  # (no path holds one: tierfs never names an object so)
        raise StubError("stub key holds a NUL byte")
    size, mode, mtime_ns, etag = (fields["size"], fields["mode"], fields["mtime_ns"],
                                  fields["etag"])
    if not _SIZE.fullmatch(size) or int(size) > MAX_SIZE:
        raise StubError(f"stub size is not a number from 0 to {MAX_SIZE} ({size!r})")
    if not _MODE.fullmatch(mode):
        raise StubError(f"stub mode is not four octal digits of permission bits ({mode!r})")
    if not _MTIME.fullmatch(mtime_ns) or not MIN_MTIME_NS <= int(mtime_ns) <= MAX_MTIME_NS:
        raise StubError(f"stub mtime_ns is not a 64-bit count of nanoseconds ({mtime_ns!r})")
    if not _ETAG.fullmatch(etag):
        raise StubError(f"stub etag is empty, too long or not printable ASCII ({etag!r})")
    stub = Stub(key, int(size), etag, int(mode, 8), int(mtime_ns))
    if stub.encode(bucket) != target:  # another quoting of the same fields
        raise StubError("stub is not in the form tierfs writes")
    return stub


def stub_for(info: ObjectInfo) -> Stub:
    """A stub for an object, taking mode and mtime from tierfs's metadata when present."""
    try:
        mode = int(info.metadata.get("mode", "644"), 8) & 0o7777
    except ValueError:
        mode = 0o644
    try:
        mtime_ns = int(info.metadata.get("mtime-ns", info.mtime_ns))
    except ValueError:
        mtime_ns = info.mtime_ns
    return Stub(info.key, info.size, info.etag, mode, mtime_ns)
