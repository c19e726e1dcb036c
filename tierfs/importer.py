"""``tierfs import``: stubs for objects already in the bucket, so an existing dataset appears in
the namespace without copying a byte.

Idempotent and resumable: an entry that already holds the same stub is left alone, so running
the import again after an interruption finishes the job. A real file or directory in the way is
never replaced (it is counted and reported), nor is a stub that names another object: that is
a live file (a checkpoint written where a renamed one was), not an old import. No object gets
a second stub, since removing either would delete the data the other still reads: before the
first new stub, one walk of the warm tree finds the objects stubs already name (``Owners``).
No directory on the warm tier is entered through a symbolic link: the tree is shared with
other users, and a link would put stubs (and the directories made for them) wherever it points.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from tierfs.config import Config
from tierfs.errors import ConfigError
from tierfs.objects.base import BucketURI, ObjectStore, parse_bucket_uri
from tierfs.paths import show
from tierfs.stubs import Stub, StubError, looks_like_stub, parse_stub, stub_for
from tierfs.tiers.beneath import new_symlink, placed
from tierfs.tiers.scan import TEMP_PREFIX, TEMP_SUFFIX, is_internal


@dataclasses.dataclass
class ImportResult:
    created: int = 0
    unchanged: int = 0
    updated: int = 0
    conflicts: list[str] = dataclasses.field(default_factory=list)
    #: Keys whose path the warm tier cannot hold (S3 takes names past the 255 bytes a file
    #: system does); the rest of the import goes on.
    too_long: list[str] = dataclasses.field(default_factory=list)
    #: (key, the stub that names it): objects that are already some file's data, given no
    #: second stub.
    owned: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: Directories of the warm tier the search for stubs could not read: a stub in one of them
    #: was not seen.
    unread: list[str] = dataclasses.field(default_factory=list)


def source_prefix(config: Config, uri_text: str) -> str:
    """The key prefix to import; it must lie inside the configured bucket and prefix, since
    tierfs refuses to follow stubs that point anywhere else."""
    src = parse_bucket_uri(uri_text)
    bucket = config.bucket
    folder = bucket.bucket.rstrip("/") + "/"
    if src.scheme == bucket.scheme == "file" and src.bucket.startswith(folder):
        # A local folder's prefix is a path below it (a named root's objects sit in the
        # folder NAME of the bucket's), written as part of the folder's own path.
        src = dataclasses.replace(src, bucket=bucket.bucket,
                                  prefix=src.bucket[len(folder):])
    if (src.scheme, src.bucket) != (bucket.scheme, bucket.bucket) or not (
            not bucket.prefix or src.prefix == bucket.prefix
            or src.prefix.startswith(bucket.prefix + "/")):
        raise ConfigError(f"{uri_text} is not inside the configured bucket {bucket}: tierfs only "
                          "follows stubs into its own bucket and prefix (see --bucket)")
    return src.prefix


class InTheWay(Exception):
    """A path component on the warm tier that is not a real directory (a symbolic link, or a
    file): the import never writes through it."""

    def __init__(self, depth: int, link: bool) -> None:
        super().__init__(depth, link)
        self.depth = depth  # index of the component in the parts walked
        self.link = link


def destination(config: Config, dest: str) -> list[str]:
    """DIR as path components in the namespace: relative to the warm root, or absolute inside
    it (compared as written, and against the root with its own links resolved)."""
    path = os.path.normpath(dest)
    if os.path.isabs(dest):
        for root in (os.path.abspath(config.warm), os.path.realpath(config.warm)):
            rel = os.path.relpath(path, root)
            if rel != ".." and not rel.startswith("../"):
                return [] if rel == "." else rel.split("/")
        raise ConfigError(f"{dest} is not inside the warm tier {config.warm}; give a path "
                          "in the namespace, such as datasets/imagenet")
    if ".." in Path(dest).parts:
        raise ConfigError(f"{dest} must not contain '..'")
    return [] if path == "." else path.split("/")


def open_dirs(start: int, parts: list[str]) -> int:
    """A new descriptor of the directory ``parts`` below ``start``, made where missing; no
    component is followed if it is a symbolic link (each is opened O_NOFOLLOW relative to
    the one before, as the mount walks the warm tier). Raises InTheWay naming the first
    component that is not a real directory."""
    fd = os.dup(start)
    try:
        for depth, part in enumerate(parts):
            try:
                nfd = _open_dir(part, fd, depth)
            except FileNotFoundError:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)  # the umask decides, as mkdir(1) does
                except FileExistsError:
                    pass  # made meanwhile: opened below like any other
                nfd = _open_dir(part, fd, depth)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_dir(part: str, fd: int, depth: int) -> int:
    try:
        return os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise InTheWay(depth, _is_link(part, fd)) from None


def _is_link(part: str, fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_destination(config: Config, parts: list[str]) -> int:
    """The destination directory's descriptor, made where missing; a symbolic link or a file
    on the way is refused with one line naming it."""
    root = os.open(config.warm, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return open_dirs(root, parts)
    except InTheWay as e:
        where = os.path.join(config.warm, *parts[:e.depth + 1])
        if e.link:
            raise ConfigError(f"{where} is a symbolic link: tierfs import does not follow "
                              "links on the warm tier; import into a real directory") from None
        raise ConfigError(f"{where} is in the way: it is not a directory") from None
    finally:
        os.close(root)


class Owners:
    """The objects under the import's prefix that stubs anywhere in the namespace already name,
    found by one walk of the whole warm tree, made the first time the import would create a
    stub (an import that only finds its stubs in place walks nothing).

    The whole tree, not only the destination: a rename through the mount moves a stub anywhere
    and leaves its key behind, and the same prefix may have been imported elsewhere before.
    Object metadata cannot tell instead: the upload token says a mount wrote the object, not
    that a stub still names it (rebuilding a lost namespace imports exactly such objects).
    Only keys under the prefix are kept, so memory follows the import, not the namespace. The
    walk reads each directory once and each symbolic link once, follows no link, and sees the
    tree as it was: a stub renamed while the walk runs may be missed, and directories it
    cannot read are reported."""

    def __init__(self, warm: Path, bucket: BucketURI, listing: str, result: ImportResult
                 ) -> None:
        self.warm = os.fsencode(warm)
        self.bucket = bucket
        self.listing = listing
        self.result = result
        self.keys: dict[str, bytes] | None = None  # key -> its stub, below the warm root

    def owner(self, key: str) -> str | None:
        """The stub, shown as a warm-tier path, that names ``key``; None if none does."""
        if self.keys is None:
            self.keys = {}
            root = os.open(self.warm, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self._walk(root)
            finally:
                os.close(root)
        rel = self.keys.get(key)
        return None if rel is None else show(os.path.join(self.warm, rel))

    def _walk(self, root: int) -> None:
        """Records the stubs below the directory ``root``, depth first, without recursion
        (depth is bounded only by PATH_MAX): only the directories on the way down are held
        open, each with the names of its subdirectories still to visit."""
        stack: list[tuple[int | None, bytes, list[bytes]]] = [
            (None, b"", self._scan(root, b""))]
        try:
            while stack:
                fd, rel, subdirs = stack[-1]
                if not subdirs:
                    stack.pop()
                    if fd is not None:
                        os.close(fd)
                    continue
                name = subdirs.pop()
                sub_rel = os.path.join(rel, name) if rel else name
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=root if fd is None else fd)
                except FileNotFoundError:
                    continue  # removed since it was listed
                except OSError as e:
                    parent = root if fd is None else fd
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced since it was listed
                        self._record(parent, name, sub_rel)  # (a stub, perhaps)
                    else:
                        self.result.unread.append(show(os.path.join(self.warm, sub_rel)))
                    continue
                stack.append((sub, sub_rel, []))  # (closed below, whatever the scan raises)
                stack[-1][2].extend(self._scan(sub, sub_rel))
        finally:
            for fd, _, _ in stack:
                if fd is not None:
                    os.close(fd)

    def _scan(self, fd: int, rel: bytes) -> list[bytes]:
        """Records the stubs in the directory ``fd``; the names of its subdirectories."""
        subdirs = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    name = os.fsencode(entry.name)
                    if entry.is_symlink():
                        self._record(fd, name, os.path.join(rel, name) if rel else name)
                    elif entry.is_dir(follow_symlinks=False):
                        subdirs.append(name)
        except OSError:
            self.result.unread.append(show(os.path.join(self.warm, rel)))
        return subdirs

    def _record(self, fd: int, name: bytes, rel: bytes) -> None:
        assert self.keys is not None
        try:
            target = os.readlink(name, dir_fd=fd)
        except OSError:
            return  # gone since it was listed
        if not looks_like_stub(target):
            return
        try:
            key = parse_stub(target, self.bucket).key
        except StubError:
            return  # names nothing tierfs would read
        if key.startswith(self.listing):
            self.keys.setdefault(key, rel)


class _Directories:
    """The directory of the last file placed, kept open: keys come in order, so the files of
    one directory share its descriptor and each directory is walked once."""

    def __init__(self, dest_fd: int) -> None:
        self.dest_fd = dest_fd
        self.parts: list[str] | None = None
        self.fd: int | None = None
        self.error: BaseException | None = None

    def get(self, parts: list[str]) -> int:
        """The descriptor of ``parts`` below the destination; raises InTheWay or OSError (the
        same for every file of that directory)."""
        if parts != self.parts:
            self.close()
            self.parts, self.error = parts, None
            try:
                self.fd = open_dirs(self.dest_fd, parts)
            except (InTheWay, OSError) as e:
                self.error = e
        if self.error is not None:
            raise self.error
        assert self.fd is not None
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.parts = None, None


def import_objects(config: Config, store: ObjectStore, prefix: str, dest: list[str],
                   advance: Callable[[int], None] = lambda n: None) -> ImportResult:
    """Stubs under the namespace directory ``dest`` (components below the warm root) for every
    object under ``prefix``."""
    result = ImportResult()
    listing = prefix + "/" if prefix else ""
    shown = Path(config.warm, *dest)
    dest_fd = open_destination(config, dest)
    directories = _Directories(dest_fd)
    owners = Owners(config.warm, config.bucket, listing, result)
    try:
        for info in store.list_objects(listing):
            rel = info.key[len(listing):]
            parts = rel.split("/")
            if not rel or any(p in ("", ".", "..") or is_internal(p.encode()) for p in parts):
                advance(1)  # directory markers and names tierfs cannot hold
                continue
            path = shown.joinpath(*parts)
            try:
                dir_fd = directories.get(parts[:-1])
                # Listings carry no user metadata: HEAD for the mode and mtime tierfs stores
                # there.
                _place(dir_fd, parts[-1], path, stub_for(store.head(info.key)), config.bucket,
                       owners, result)
            except InTheWay:
                result.conflicts.append(str(path))  # a link or a file where a directory goes
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    raise
                result.too_long.append(info.key)
            advance(1)
    finally:
        directories.close()
        os.close(dest_fd)
    return result


def _place(dir_fd: int, name: str, path: Path, stub: Stub, bucket: BucketURI, owners: Owners,
           result: ImportResult) -> None:
    target = stub.encode(bucket)
    try:
        current: bytes | None = os.readlink(os.fsencode(name), dir_fd=dir_fd)
    except FileNotFoundError:
        current = None
    except OSError as e:  # a real file or directory is there: never replace user data
        if e.errno == errno.ENAMETOOLONG:
            raise
        result.conflicts.append(str(path))
        return
    if current == target:
        result.unchanged += 1
        return
    if current is None:
        owner = owners.owner(stub.key)
        if owner is not None:
            result.owned.append((stub.key, owner))
            return
        try:  # made whole at once, and never over anything made since the readlink
            os.symlink(target, os.fsencode(name), dir_fd=dir_fd)
        except FileExistsError:
            result.conflicts.append(str(path))
            return
        result.created += 1
        return
    was = _stub_naming(current, stub.key, bucket)
    if was is None:
        # A user's own symlink, or a live file: the stub of another object (a checkpoint
        # written where a renamed one was, whose key was taken) or one tierfs cannot read.
        result.conflicts.append(str(path))
        return
    if (was.etag, was.size) == (stub.etag, stub.size):
        # The object it names, as it is: what the stub says beyond it (a mode narrowed
        # through the mount, the mtime of the file's last write) is the file's own.
        result.unchanged += 1
        return
    try:
        st = os.lstat(os.fsencode(name), dir_fd=dir_fd)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISLNK(st.st_mode):  # (changed since the readlink)
        result.conflicts.append(str(path))
        return
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        result.conflicts.append(str(path))  # another user's file: theirs to bring up to date
        return
    # The same object, changed in the bucket since the stub was written: the stub follows it,
    # keeping the file's mode and owner.
    target = dataclasses.replace(stub, mode=was.mode).encode(bucket)
    if not _swap(dir_fd, os.fsencode(name), target, (st.st_uid, st.st_gid)):
        result.conflicts.append(str(path))
        return
    result.updated += 1


def _swap(dir_fd: int, name: bytes, target: bytes, owner: tuple[int, int]) -> bool:
    """Rename a new stub (given ``owner``) over the one at ``name``: atomic, so a reader sees
    the old stub or the new one. False if the swap's check found another file there (ESTALE:
    another node renamed a file onto the name, or onto the temp name, meanwhile), or none
    (ENOENT: the new stub moved away just after the rename, or the temp name or the directory
    went meanwhile): another node's doing, left alone and
    counted as in the way like any other, and the import goes on; one file's race is no
    reason to leave the stubs after it out of date."""
    tmp = TEMP_PREFIX + uuid.uuid4().hex.encode() + TEMP_SUFFIX
    try:
        made = new_symlink(dir_fd, tmp, target, owner)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        placed(dir_fd, name, made)
    except BaseException as e:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass  # (renamed after all)
        if isinstance(e, OSError) and e.errno in (errno.ESTALE, errno.ENOENT):
            return False
        raise
    return True


def _stub_naming(target: bytes, key: str, bucket: BucketURI) -> Stub | None:
    """The stub the symlink ``target`` is, if tierfs reads it and it names ``key``."""
    if not looks_like_stub(target):
        return None
    try:
        found = parse_stub(target, bucket)
    except StubError:
        return None
    return found if found.key == key else None
