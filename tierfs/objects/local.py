"""A local folder as an object store: the zero-config cold tier on a laptop, and a store for
tests of very large files (moto reads a whole object for every ranged GET).

Objects are plain files at ``<folder>/<key>``, written whole (temp name, fsync, rename), so an
object never appears half-written. Metadata lives in one extended attribute. The ETag names a
version of the file (inode, mtime, size), and every put makes a new inode, so it changes
whenever the object does. A key is a path here: a name longer than the folder's NAME_MAX
cannot be one (``fit_key`` cuts it), and an object cannot also be a folder of other objects
(``head``, a put or a completion then says which object is in the way, ``KeyInTheWay``, or
that the key is a folder; an unfinished upload is not bound to its key, so it can still
complete at another one). Folders exist only for the objects in them: deleting an object
removes the folders it leaves empty.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from tierfs.objects.base import (BucketURI, KeyInTheWay, NoSuchObject, ObjectChanged, ObjectInfo,
                                 ObjectStore, ObjectStoreError, UploadGone)

METADATA_XATTR = "user.tierfs.metadata"
#: Unfinished multipart uploads and temp files; never listed as objects.
WORK_DIR = ".tierfs-uploads"
#: Modes of the files and folders the store makes: a user's cold data is theirs alone, even
#: where the daemon runs with umask 0 (as it does, see tierfs/fuse/session.py).
FILE_MODE = 0o600
FOLDER_MODE = 0o700
#: Times a put makes its key's folders again when a delete pruned them under it.
FOLDER_RACES = 8
#: Temp files of object writes in the work folder are named with this prefix.
PUT_PREFIX = "put-"
#: Age in seconds past which such a temp file is taken for one a crash left.
STALE_PUT = 24 * 3600


def make_folders(path: Path) -> None:
    """``path`` and every missing folder above it, each made 0700 (``mkdir -p`` makes those
    above with the default mode, 0777 under umask 0). Raises FileExistsError where a file
    stands in the way, as ``mkdir -p`` does."""
    missing = []
    while not path.is_dir() and path.parent != path:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            try:  # one look: a folder pruned and made again between two looks is a folder
                in_the_way = not stat.S_ISDIR(os.lstat(folder).st_mode)
            except FileNotFoundError:
                in_the_way = False
            if in_the_way:  # (a file in the way)
                raise
            # (gone again, pruned by a delete: the next mkdir or the caller's rename
            # fails with FileNotFoundError, and the caller makes the folders again)


def _new_file(path: Path) -> BinaryIO:
    """A new file at ``path``, mode 0600, open for writing."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             FILE_MODE), "wb")


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalStore(ObjectStore):
    def __init__(self, uri: BucketURI) -> None:
        super().__init__(uri)
        self.root = Path(uri.bucket)
        self.work = self.root / WORK_DIR
        try:
            self.max_name_bytes = os.pathconf(self.root, "PC_NAME_MAX")
        except OSError:
            self.max_name_bytes = 255  # (a missing folder fails check() at mount)

    def _path(self, key: str) -> Path:
        if not self.uri.contains(key) or key.startswith(WORK_DIR):
            raise ObjectStoreError(f"invalid object key {key!r}")
        return self.root / key

    def _info(self, key: str, st: os.stat_result, path: Path | int) -> ObjectInfo:
        try:
            metadata = json.loads(os.getxattr(path, METADATA_XATTR))
        except OSError:
            metadata = {}
        return ObjectInfo(key, st.st_size, _etag(st), st.st_mtime_ns, metadata)

    def check(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreError(f"folder {self.root} does not exist")
        if not os.access(self.root, os.W_OK):
            raise ObjectStoreError(f"folder {self.root} is not writable")
        make_folders(self.work)
        if stat.S_IMODE(self.work.stat().st_mode) != FOLDER_MODE:  # (made by an older tierfs)
            os.chmod(self.work, FOLDER_MODE)
        self._purge_old_puts()
        self._check_metadata()

    def _purge_old_puts(self) -> None:
        """Remove the temp files of writes a crash cut short. Only old ones: another mount
        sharing the folder may be writing its own now."""
        limit = time.time() - STALE_PUT
        with os.scandir(self.work) as it:
            for entry in it:
                if not entry.name.startswith(PUT_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < limit:
                        os.unlink(entry.path)

    def _check_metadata(self) -> None:
        """Objects keep their metadata (mode, mtime, the upload's token) in an extended
        attribute: on a file system without them every upload would fail, at the first
        large file, so the mount fails instead."""
        probe = self.work / f"probe-{uuid.uuid4().hex}"
        try:
            _new_file(probe).close()
        except OSError as e:
            raise ObjectStoreError(f"cannot write in {self.work}: {e}") from None
        try:
            os.setxattr(probe, METADATA_XATTR, b"{}")
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            raise ObjectStoreError(f"folder {self.root} is on a file system without extended "
                                   "attributes (user.*), where objects keep their metadata; "
                                   "choose a folder on ext4, XFS or tmpfs") from None
        finally:
            probe.unlink()

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            return self._info(key, path.stat(), path)
        except FileNotFoundError:
            raise NoSuchObject(key) from None
        except NotADirectoryError:
            raise KeyInTheWay(key, self._object_above(key)) from None

    def _object_above(self, key: str) -> str:
        """The object whose file stands where a folder of ``key`` would be."""
        names = key.split("/")
        for i in range(1, len(names)):
            above = "/".join(names[:i])
            if not (self.root / above).is_dir():
                return above
        raise ObjectStoreError(f"{key}: a folder above it is not a folder")

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchObject(key) from None
        try:
            if etag is not None and _etag(os.fstat(fd)) != etag:
                raise ObjectChanged(key)
            return os.pread(fd, max(0, length), start)
        finally:
            os.close(fd)

    def _write_new(self, key: str, chunks: Iterator[bytes] | list[bytes],
                   metadata: Mapping[str, str] | None) -> ObjectInfo:
        path = self._path(key)
        make_folders(self.work)
        tmp = self.work / f"{PUT_PREFIX}{uuid.uuid4().hex}"
        try:
            with _new_file(tmp) as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.setxattr(f.fileno(), METADATA_XATTR,
                            json.dumps(dict(metadata or {})).encode())
                os.fsync(f.fileno())
            for attempt in range(FOLDER_RACES):
                try:  # (a delete may prune the folder as soon as it is made: make it again)
                    make_folders(path.parent)
                    os.rename(tmp, path)
                    break
                except FileNotFoundError:
                    if attempt == FOLDER_RACES - 1:
                        raise
                except (FileExistsError, NotADirectoryError):
                    # An object took the name of one of the key's folders since the key was
                    # chosen (free when an upload started, say): callers catch this, never
                    # the OS's error, and choose another key (``objects.keys``).
                    raise KeyInTheWay(key, self._object_above(key)) from None
                except IsADirectoryError:  # (objects made the key a folder meanwhile)
                    raise KeyInTheWay(key, key) from None
        except BaseException:
            # (A full folder, say: each try of the caller's would leave a whole copy.)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self.head(key)

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
            ) -> ObjectInfo:
        return self._write_new(key, [data], metadata)

    def replace_metadata(self, key: str, etag: str, metadata: Mapping[str, str]) -> ObjectInfo:
        # An extended attribute changes the ctime only: the ETag (inode, mtime, size) stays.
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchObject(key) from None
        try:
            if _etag(os.fstat(fd)) != etag:
                raise ObjectChanged(key)
            os.setxattr(fd, METADATA_XATTR, json.dumps(dict(metadata)).encode())
            os.fsync(fd)
            return self._info(key, os.fstat(fd), fd)
        finally:
            os.close(fd)

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and WORK_DIR in dirnames:
                dirnames.remove(WORK_DIR)
            for name in filenames:
                key = os.path.relpath(os.path.join(dirpath, name), self.root)
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            try:
                yield self.head(key)
            except NoSuchObject:
                continue

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._prune(path.parent)

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and the folders above it (not the root) while they are empty: a
        bucket has no folders of its own, so deleting a folder's last object leaves none
        behind (checkpoints pruned by a trainer would otherwise leave a trail of empty ones
        in the bucket folder). A put racing with it makes its folders again."""
        while folder != self.root and self.root in folder.parents:
            try:
                os.rmdir(folder)
            except OSError:  # not empty (or gone already): nothing more to prune
                return
            folder = folder.parent

    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id.isalnum():
            raise ObjectStoreError(f"invalid upload id {upload_id!r}")
        return self.work / upload_id

    def create_multipart(self, key: str, metadata: Mapping[str, str] | None = None,
                         checksum: str | None = None) -> str:
        self._path(key)
        upload_id = uuid.uuid4().hex
        d = self._upload_dir(upload_id)
        make_folders(self.work)
        os.mkdir(d, FOLDER_MODE)
        with _new_file(d / "upload.json") as f:
            f.write(json.dumps({"key": key, "metadata": dict(metadata or {})}).encode())
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    checksum: str | None = None) -> str:
        d = self._upload_dir(upload_id)
        part = d / f"part-{number:05d}"
        tmp = d / f"tmp-{uuid.uuid4().hex}"
        try:  # (the folder may go between a check and the open: the open is the check)
            f = _new_file(tmp)
        except FileNotFoundError:
            raise UploadGone(f"no such upload {upload_id}") from None
        with f:
            f.write(data)
            os.fsync(f.fileno())
        os.rename(tmp, part)
        return _etag(part.stat())

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]
                           ) -> ObjectInfo:
        d = self._upload_dir(upload_id)
        try:
            upload = json.loads((d / "upload.json").read_text())
        except FileNotFoundError:
            raise UploadGone(f"no such upload {upload_id}") from None
        for number, etag in parts:
            try:
                found = _etag((d / f"part-{number:05d}").stat())
            except FileNotFoundError:
                found = None
            if found != etag:  # (S3's InvalidPart)
                raise ObjectStoreError(f"part {number} of upload {upload_id} does not match")

        def chunks() -> Iterator[bytes]:
            for number, _ in parts:
                with open(d / f"part-{number:05d}", "rb") as f:
                    while block := f.read(8 * 1024 * 1024):
                        yield block

        info = self._write_new(key, chunks(), upload["metadata"])
        shutil.rmtree(d, ignore_errors=True)
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)

    def has_parts(self, key: str, upload_id: str) -> bool:
        try:
            return any(n.startswith("part-") for n in os.listdir(self._upload_dir(upload_id)))
        except FileNotFoundError:
            return False

    def list_multipart(self, prefix: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if not self.work.is_dir():
            return found
        for d in sorted(self.work.iterdir()):
            try:
                key = json.loads((d / "upload.json").read_text())["key"]
            except (OSError, ValueError, KeyError):
                continue
            if key.startswith(prefix):
                found.append((key, d.name))
        return found

