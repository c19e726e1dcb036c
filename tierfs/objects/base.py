"""One interface for every object store tierfs can use as its cold tier.

Objects are whole, plain objects (no chunking): ``<prefix>/<path>``, readable by any tool of
that store. Every method blocks; the filesystem reaches a store only from the cold tier's worker
threads. Errors are mapped to the few exceptions below where they arise, so the
callers above never see boto3's or the OS's own exception types.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from tierfs.errors import ConfigError

#: S3's limits on multipart uploads (GCS's S3 interface has the same ones).
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000
#: The largest object S3 copies in one request (and so can give new metadata in place).
MAX_COPY_SIZE = 5 * 1024**3
#: The longest key S3 and GCS take, in bytes of UTF-8.
MAX_KEY_BYTES = 1024


class ObjectStoreError(Exception):
    """A store request failed for good (after retries, where retrying made sense)."""


class NoSuchObject(ObjectStoreError):
    pass


class ObjectChanged(ObjectStoreError):
    """The object's ETag is no longer the one asked for: never mix old and new bytes."""


class UploadGone(ObjectStoreError):
    """The multipart upload no longer exists: completed already, or aborted by someone else
    (a bucket lifecycle rule that aborts incomplete uploads after some days, say).

    Every store raises it, and only it, for an upload id it does not know (S3's and GCS's
    ``NoSuchUpload``; a local folder without the upload's folder) from ``upload_part`` and
    ``complete_multipart``: callers catch this class, never a store's error text.
    ``abort_multipart`` of such an upload succeeds instead: the upload is gone either way."""


class KeyInTheWay(ObjectStoreError):
    """(A local folder, where a key is a path.) An object's key, ``at``, is a folder that
    ``key`` needs, or (``at == key``) ``key`` is a folder of other objects: S3 can hold both,
    a folder cannot. Either way a key past ``at`` (``objects.keys``) is free of it.

    ``head`` raises it for a key chosen now; ``put`` and ``complete_multipart`` for one chosen
    before an object took the name of one of its folders, or objects made it a folder (a
    directory renamed while a file in it streamed, and a file written under the directory's
    old name; or the other way round). The upload is left whole, and a local folder's is not
    bound to its key: it completes at another one (``transfer.streaming``). An S3 upload is
    bound to its key, but S3 never raises this."""

    def __init__(self, key: str, at: str) -> None:
        why = ("it is a folder of other objects" if at == key
               else f"the object {at} is where a folder would have to be")
        super().__init__(f"{key}: {why}")
        self.key, self.at = key, at


class MetadataFixed(ObjectStoreError):
    """The store cannot replace this object's metadata in place (S3 copies an object onto
    itself, which it does in one request only up to ``MAX_COPY_SIZE``)."""


class TransientError(ObjectStoreError):
    """A failure worth retrying (server busy, connection reset); raised after the last try."""


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    mtime_ns: int
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


#: The metadata under which an object copied onto itself (to change its metadata) names the
#: version it was copied from (lower case: S3 gives user metadata keys back so).
COPIED_FROM = "tierfs-copied-from"


def is_copy_of(now: ObjectInfo, etag: str, size: int) -> bool:
    """Whether the object ``now`` is version ``etag`` (of ``size`` bytes) copied onto itself
    with new metadata: the same bytes, perhaps under another ETag (a multipart object's)."""
    return now.metadata.get(COPIED_FROM) == etag and now.size == size


@dataclasses.dataclass(frozen=True)
class BucketURI:
    scheme: str  # "s3", "gs" or "file"
    bucket: str  # the bucket name, or the folder for file://
    prefix: str  # without leading or trailing slashes; "" for the whole bucket

    def __str__(self) -> str:
        if self.scheme == "file":
            base = f"file://{self.bucket}"
        else:
            base = f"{self.scheme}://{self.bucket}"
        return f"{base}/{self.prefix}" if self.prefix else base

    def key(self, path: str) -> str:
        """The object key for a path relative to the prefix."""
        path = path.strip("/")
        return f"{self.prefix}/{path}" if self.prefix else path

    def uri_of(self, key: str) -> str:
        if self.scheme == "file":
            return f"file://{self.bucket}/{key}"
        return f"{self.scheme}://{self.bucket}/{key}"

    def contains(self, key: str) -> bool:
        """Whether ``key`` lies under the prefix (``..`` and empty parts never do)."""
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            return False
        return not self.prefix or key.startswith(self.prefix + "/")


def key_text(path: bytes) -> str:
    """A namespace path as the text of an object key. Keys are UTF-8; a name that is not
    (bytes from a Latin-1 system, say) keeps its other bytes as ``\\xNN`` escapes. Such a key
    may meet a real name written that way: keys already taken get a suffix of their own."""
    return path.decode("utf-8", "backslashreplace")


def parse_bucket_uri(uri: str) -> BucketURI:
    """``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``file:///absolute/folder``."""
    parts = urlsplit(uri)
    if "@" in parts.netloc:  # (not shown: it may hold a password)
        raise ConfigError(f"a bucket URI ({parts.scheme}://...) must not hold credentials "
                          "(user:password@): they come from the environment, a profile or "
                          "an instance role")
    if parts.scheme in ("s3", "gs"):
        if not parts.netloc:
            raise ConfigError(f"bucket URI {uri!r} has no bucket name")
        if parts.query or parts.fragment:
            raise ConfigError(f"bucket URI {uri!r} must not have a query or fragment")
        return BucketURI(parts.scheme, parts.netloc, parts.path.strip("/"))
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(f"bucket URI {uri!r}: use file:///absolute/path")
        return BucketURI("file", parts.path.rstrip("/") or "/", "")
    raise ConfigError(f"bucket URI {uri!r}: expected s3://, gs:// or file://")


class ObjectStore(abc.ABC):
    """A bucket (and prefix) that tierfs reads and writes."""

    #: The longest name between two slashes that the store takes (a folder's NAME_MAX), in
    #: bytes; None for no limit but the key's.
    max_name_bytes: int | None = None

    def __init__(self, uri: BucketURI) -> None:
        self.uri = uri

    def fit_key(self, key: str) -> str:
        """``key``, or, where the store would refuse it (longer than ``MAX_KEY_BYTES``, or a
        name longer than ``max_name_bytes``), a key cut to fit that ends in ``~`` and 12 hex
        digits of the whole key's hash. The prefix stays whole; the file's name keeps up to
        255 bytes, and its folders the rest, cut from their end. A path deep in the namespace
        (4096 bytes) or a name that is not UTF-8 (each byte escaped as four characters) would
        otherwise fail its upload."""
        limit = self.max_name_bytes
        if len(key.encode()) <= MAX_KEY_BYTES and (
                limit is None or all(len(n.encode()) <= limit for n in key.split("/"))):
            return key
        mark = "~" + hashlib.sha256(key.encode()).hexdigest()[:12]
        head = self.uri.prefix
        rest = key[len(head) + 1:] if head and key.startswith(head + "/") else key
        dirs, _, name = rest.rpartition("/")
        taken = len(head.encode()) + 1 if head else 0
        room = min(255 if limit is None else limit, MAX_KEY_BYTES - taken) - len(mark)
        name = _cut(name, room) + mark
        if limit is not None:
            dirs = "/".join(_fit_name(d, limit) for d in dirs.split("/"))
        dirs = _cut(dirs, MAX_KEY_BYTES - taken - len(name.encode()) - 1)
        names = [n for n in dirs.split("/") if n not in ("", ".", "..")]
        return "/".join([*([head] if head else []), *names, name])

    @abc.abstractmethod
    def check(self) -> None:
        """Fail now, with a one-line reason, if the bucket is missing or unreachable or the
        credentials are refused (raises ObjectStoreError)."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        """Bytes ``[start, start+length)``; raises ObjectChanged if ``etag`` no longer matches."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
            ) -> ObjectInfo: ...

    @abc.abstractmethod
    def replace_metadata(self, key: str, etag: str, metadata: Mapping[str, str]) -> ObjectInfo:
        """Give the object ``metadata`` (all of it: nothing of the old is kept), keeping its
        content. The object's owner and mode live there, and a chmod through the mount that
        widens a cold file's mode must widen them too. Raises ObjectChanged if the object is
        no longer version ``etag``, MetadataFixed where the store cannot do it in place. The
        ETag may change (S3 copies the object): the returned one names it from then on."""

    @abc.abstractmethod
    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete; deleting a missing object is not an error."""

    #: The checksum new multipart uploads ask the store to keep for each part (and check as
    #: it arrives), or None. An upload is completed with the checksums it was created for,
    #: so the journal records each upload's own, and a resumed upload keeps it.
    part_checksum: str | None = None

    @abc.abstractmethod
    def create_multipart(self, key: str, metadata: Mapping[str, str] | None = None,
                         checksum: str | None = None) -> str:
        """Start an upload; returns its id. ``checksum``: ``part_checksum`` or None."""

    @abc.abstractmethod
    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    checksum: str | None = None) -> str:
        """Upload part ``number`` (from 1) of an upload created with ``checksum``; returns
        the part's receipt for ``complete_multipart`` (its ETag, and its checksum if any).
        Raises UploadGone for an upload the store does not know."""

    @abc.abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]
                           ) -> ObjectInfo:
        """Make the object from ``parts``: (number, receipt) in order. Raises UploadGone
        for an upload the store does not know (completed already, perhaps: the caller may
        find its object by the upload's token), and KeyInTheWay where a local folder can no
        longer make ``key``: then ``key`` may be another than the upload was created with."""

    @abc.abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort an upload; aborting one the store no longer knows is not an error (as for
        ``delete``): recovery and a failed upload abort whatever they may have left."""

    @abc.abstractmethod
    def list_multipart(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of unfinished multipart uploads under ``prefix``."""

    @abc.abstractmethod
    def has_parts(self, key: str, upload_id: str) -> bool:
        """Whether an unfinished upload holds any part (False for one the store no longer
        knows)."""


def _cut(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` bytes of UTF-8, at a character's end."""
    return text.encode()[:max(0, size)].decode("utf-8", "ignore")


def _fit_name(name: str, limit: int) -> str:
    """A folder's name, cut to ``limit`` bytes with its own hash mark if longer: a plain cut
    could give back the name of another folder, or of the object a suffix was moving past."""
    if len(name.encode()) <= limit:
        return name
    return _cut(name, limit - 13) + "~" + hashlib.sha256(name.encode()).hexdigest()[:12]


def part_size_for(expected_size: int, minimum: int = MIN_PART_SIZE) -> int:
    """A part size that keeps ``expected_size`` within MAX_PARTS parts (a 5 TiB file fits)."""
    size = max(minimum, -(-expected_size // MAX_PARTS))
    mib = 1024 * 1024
    return min(MAX_PART_SIZE, -(-size // mib) * mib)
