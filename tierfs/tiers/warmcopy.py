"""Publishing onto the warm tier: the data copied into a temp file beside its target and
renamed over it, or written in place for a hard-linked file, with the owner, mode, extended
attributes and times of the file it replaces. The calls of ``WarmTier`` that do it (blocking,
as all of its methods)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tierfs.objects.base import BucketURI
from tierfs.stubs import StubError, parse_stub
from tierfs.tiers.beneath import join, open_dir_beneath, open_file, parent_of, split
from tierfs.tiers.copying import copy_fd, copy_to_new
from tierfs.tiers.xattrs import XattrCalls, proc_path


class LinkedMeanwhile(OSError):
    """The file a publish was about to rename a new file over is hard-linked (the link count
    was checked at another path: the file was renamed while the publish copied). A rename
    would split its links; nothing was changed, and it must be written in place. Looked for
    only when a rename came since the check (``Reapply`` is given then): links made through
    the mount wait for the publish."""

    def __init__(self, rel: bytes) -> None:
        super().__init__(errno.EMLINK, "hard-linked meanwhile", rel)


class Reapply(NamedTuple):
    """A publish copies the owner, mode, extended attributes and times of the file it replaces
    onto the new file before it renames it into place; a change of them that comes between
    the two would be undone by the rename. The rename step, serialised with such changes,
    then takes them again: the mode from ``mode`` if given (a stub's symlink has none worth
    copying), the times from ``times`` (they are the staged data's)."""

    mode: int | None
    times: tuple[int, int]


def unlink_held(dfd: int, name: bytes) -> None:
    """Remove a temp file from a directory held by a descriptor. Gone already is no error:
    its directory emptied by an rmdir or a rename over it here (ENOENT), or removed by
    another NFS client, whose handle of it is stale then (ESTALE)."""
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ESTALE):
            raise


class PublishCalls(XattrCalls):
    """The publishing calls of ``WarmTier``, over its path calls."""

    #: The owner (uid, gid) the tier gave the last file this node made (``new_perms``).
    _made_as: tuple[int, int] | None
    #: The bucket this tier's stubs point into (``_mode_like``); None where nothing is
    #: published (``tierfs doctor``, ``scan`` without a mount).
    bucket: BucketURI | None

    if TYPE_CHECKING:
        def lstat(self, rel: bytes) -> os.stat_result: ...
        def readlink(self, rel: bytes) -> bytes: ...
        def open(self, rel: bytes, flags: int, mode: int = 0o600) -> int: ...
        def rename(self, rel: bytes, new_rel: bytes, flags: int = 0) -> None: ...
        def unlink(self, rel: bytes) -> None: ...
        def _temp_name(self) -> bytes: ...

    def publish_copy(self, rel: bytes, src_fd: int, size: int, times: tuple[int, int],
                     mode: int | None = None, expect: tuple[int, int] | None = None,
                     known: os.stat_result | None = None
                     ) -> tuple[bytes | None, os.stat_result]:
        """The copying half of publishing: a fsynced temp file to rename over ``rel`` (returned
        with its attributes), or, for a hard-linked file, the data written in place (None and
        the file's attributes). ``mode`` overrides the mode copied from ``rel`` (a stub's
        symlink has none worth copying). ``expect``: the (device, inode) of the file being
        published; a hard-linked file found at ``rel`` that is another one (renamed there
        meanwhile) is not written: FileNotFoundError, as for a file that is gone. ``known``:
        the file's attributes as this node last had them, for a file gone from ``rel``."""
        try:
            st = self.lstat(rel)
        except FileNotFoundError:
            st = None
        if st is None and known is not None:
            return self.write_temp(split(rel)[0], src_fd, size, rel, times, mode, known)
        if st is not None and st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            if expect is not None and (st.st_dev, st.st_ino) != expect:
                raise FileNotFoundError(errno.ENOENT, "another file is there now", rel)
            self.write_in_place(rel, src_fd, size, times, st)
            return None, self.lstat(rel)
        # (Its attributes from its descriptor: a rename of its directory meanwhile moved it.)
        return self.write_temp(split(rel)[0], src_fd, size, None if st is None else rel, times,
                               mode, st)

    def replace(self, tmp: bytes, rel: bytes, made: os.stat_result,
                again: Reapply | None = None, tmp_dir: int | None = None
                ) -> tuple[os.stat_result, os.stat_result | None]:
        """The renaming half of publishing; returns the attributes of the published file and
        of its directory (None if they could not be read). Once the rename is made it does
        not fail: an error would make the caller publish again, and bring back a name another
        node removed just after. ``made``: the temp file's, as it was finished. ``again``: see
        ``Reapply``; with it, LinkedMeanwhile (and the temp file removed) if ``rel`` is
        hard-linked. ``tmp_dir``: the descriptor of the directory the temp file was made in
        (``open_temp_in``), ``tmp`` its name there: renamed from wherever that directory is
        now, which its path made then may no longer reach."""
        if again is not None:
            try:
                self._refuse_hard_linked(rel)
            except LinkedMeanwhile:
                self._unlink_temp(tmp, tmp_dir)
                raise
            if tmp_dir is None:
                fd = self.open(tmp, os.O_RDONLY)
            else:
                fd = open_file(tmp_dir, tmp, os.O_RDONLY)
            try:
                self._reapply(fd, rel, again)
            finally:
                os.close(fd)
        if tmp_dir is None:
            self.rename(tmp, rel)
        else:
            with parent_of(self.fd, rel) as (dfd, name):
                os.rename(tmp, name, src_dir_fd=tmp_dir, dst_dir_fd=dfd)
        try:
            st = self.lstat(rel)
        except OSError:
            return made, None  # (removed just after, say: the next look at the name tells)
        if st.st_ino != made.st_ino:
            # Another node's file took the name just after: this publish's version is not
            # there to be read, and its attributes must not become the other file's (whose
            # bytes would then be taken for these). The next look at the name finds it new.
            st = made
        try:
            return st, self.lstat(split(rel)[0])
        except OSError:
            return st, None

    def write_temp(self, parent: bytes, src_fd: int, size: int, like: bytes | None,
                   times: tuple[int, int] | None, mode: int | None = None,
                   like_st: os.stat_result | None = None) -> tuple[bytes, os.stat_result]:
        """Copy staged data into a fresh temp file beside its target and fsync it; its path
        and attributes.

        The temp file takes the owner, mode and extended attributes of ``like`` (the file it
        will replace; ``like_st``, its attributes if the caller has just read them) so that
        publishing by rename changes nothing but the content. Each attribute is set only
        where the new file lacks it: on a network file system every call is a round trip.
        """
        if like is not None and like_st is None:
            try:
                like_st = self.lstat(like)
            except FileNotFoundError:
                like = None
        perms = 0o600
        if like_st is not None:
            perms = self.new_perms((like_st.st_uid, like_st.st_gid),
                                   self._mode_like(like, like_st, mode))
        tmp, fd = self.open_temp(parent, perms)
        try:
            # (From the create's reply: a network file system's client has it at hand.)
            made = os.fstat(fd)
            self.made(made)
            copy_to_new(src_fd, fd, size)
        except BaseException:
            self.drop_temp(tmp, fd)
            raise
        return tmp, self.finish_temp(tmp, fd, size, like, times, mode, like_st, made)

    def new_perms(self, owner: tuple[int, int], mode: int) -> int:
        """The permissions to create a file with that is to have ``owner`` and ``mode``: its
        final ones where the tier will most likely make it with that owner (as it made the
        last file, ``made``: then neither a chown nor a chmod is needed), else 0600 until
        its owner is set, so that it is never open to more users than it will be. Never
        set-id bits (a chown would clear them; the chmod after it sets them)."""
        if owner != self._made_as:
            return 0o600
        return stat.S_IMODE(mode) & 0o777

    def made(self, st: os.stat_result) -> None:
        """Note the owner the tier gave a file this node just made (``new_perms``)."""
        self._made_as = (st.st_uid, st.st_gid)

    def open_temp(self, parent: bytes, perms: int = 0o600) -> tuple[bytes, int]:
        """A new, empty temp file in ``parent``, to be renamed over its target when whole.
        (The daemon's umask is 0: ``perms`` are the file's.)"""
        tmp = join(parent, self._temp_name())
        return tmp, self.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, perms)

    def open_temp_in(self, parent: bytes) -> tuple[int, bytes, int]:
        """``open_temp`` (0600) for a temp file that lives long (a head start, filled while
        its file is written): with a descriptor of ``parent``, reached as every path is
        (beneath the root, no symlink followed), which the caller keeps and closes. Whoever
        moves the directory meanwhile, the temp file is still in the directory it holds, and
        can be renamed into place or removed from there (``tmp_dir``): by its path, once the
        directory was renamed, it could not even be found. (directory, name, file)."""
        dfd = open_dir_beneath(self.fd, parent)
        try:
            tmp = self._temp_name()
            return dfd, tmp, open_file(dfd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except BaseException:
            os.close(dfd)
            raise

    def _unlink_temp(self, tmp: bytes, tmp_dir: int | None) -> None:
        if tmp_dir is None:
            self.unlink(tmp)
        else:
            unlink_held(tmp_dir, tmp)

    def drop_temp(self, tmp: bytes, fd: int, tmp_dir: int | None = None) -> None:
        """Remove a temp file and close it. ``tmp_dir``: as for ``replace``; a temp file gone
        from there already (its directory emptied by an rmdir or a rename over it) is no
        error."""
        if tmp_dir is not None:
            try:
                unlink_held(tmp_dir, tmp)
            finally:
                os.close(fd)
            return
        try:
            self.unlink(tmp)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise
            # Moved with its directory (renamed meanwhile): it is where its descriptor
            # says, reached beneath the root as any path (a symlink is not followed), and
            # removed if it is still that file there. Otherwise left to the purge of this
            # node's temp files at its next mount.
            self._unlink_moved(tmp, fd)
        finally:
            os.close(fd)

    def _unlink_moved(self, tmp: bytes, fd: int) -> None:
        try:
            root = os.fsencode(os.readlink(proc_path(self.fd))).rstrip(b"/") + b"/"
            where = os.fsencode(os.readlink(proc_path(fd)))
        except OSError:  # (ENAMETOOLONG: a path past PATH_MAX from /)
            return
        if not where.startswith(root) or split(where)[1] != split(tmp)[1]:
            return  # (outside the root, or deleted: "<path> (deleted)")
        rel = where[len(root):]
        st = os.fstat(fd)
        try:
            there = self.lstat(rel)
            if (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
                self.unlink(rel)
        except OSError:
            pass

    def finish_temp(self, tmp: bytes, fd: int, size: int, like: bytes | None,
                    times: tuple[int, int] | None, mode: int | None = None,
                    like_st: os.stat_result | None = None, made: os.stat_result | None = None,
                    tmp_dir: int | None = None) -> os.stat_result:
        """Size, owner, mode, xattrs (from ``like``) and times; fsync; close. Returns its
        attributes. On failure the temp file is removed. ``made``: the temp file's attributes
        as made, and its size then already ``size`` (``write_temp``); ``like_st``: those of
        ``like``, just read; ``tmp_dir``: as for ``replace``."""
        try:
            self._settle(fd, size, like, times, mode, like_st, made)
            st = os.fstat(fd)
            # The close is where a network file system reports write errors; after it, the
            # temp file is found only by its path, which a rename of its directory meanwhile
            # has made wrong: a copy of the descriptor finds it where it is (``drop_temp``).
            spare = os.dup(fd)
        except BaseException:
            self.drop_temp(tmp, fd, tmp_dir)
            raise
        try:
            os.close(fd)
        except BaseException:
            self.drop_temp(tmp, spare, tmp_dir)
            raise
        os.close(spare)
        return st

    def _settle(self, fd: int, size: int, like: bytes | None, times: tuple[int, int] | None,
                mode: int | None, like_st: os.stat_result | None = None,
                made: os.stat_result | None = None) -> None:
        """Make a finished file ready to be renamed over ``like``: the same size, owner, mode,
        extended attributes and times it will be published with, and on disk. ``made``: the
        file's attributes as made, its size already ``size``."""
        if made is None:
            os.ftruncate(fd, size)
        if like is not None:
            self._copy_attributes(like, fd, like_st, made, mode)
        elif mode is not None:
            os.fchmod(fd, stat.S_IMODE(mode))
        if times is not None:
            os.utime(fd, ns=times)
        os.fsync(fd)

    def settle_staged(self, rel: bytes, fd: int, size: int, times: tuple[int, int],
                      mode: int | None = None, known: os.stat_result | None = None) -> bool:
        """Prepare a staging file on this file system to be renamed over ``rel`` (``adopt``):
        False, and nothing done, if ``rel`` is hard-linked (it is then published in place,
        since a rename would split the links). ``known``: as for ``publish_copy``."""
        try:
            st = self.lstat(rel)
        except FileNotFoundError:
            st = known
        if st is not None and st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            return False
        self._settle(fd, size, rel, times, mode, st)
        return True

    def adopt(self, src: Path, fd: int, rel: bytes, retire: int | None,
              again: Reapply | None = None) -> tuple[os.stat_result, os.stat_result | None]:
        """Rename a file from outside the tree (a staging file, on the same file system; ``fd``
        open on it) over ``rel``, then close ``retire`` (the descriptor of the file it
        replaced); returns the attributes of the published file (from ``fd``: another node
        may have put its own file at ``rel`` just after) and of its directory (None if they
        could not be read: the directory renamed or removed by another node meanwhile). EXDEV
        if it is on another file system (nothing is closed then). ``again``: what to take
        from ``rel`` again (``Reapply``); with it, LinkedMeanwhile if ``rel`` is hard-linked.
        Once renamed, the file is published: ``retire`` is closed only after the last call
        that could fail first (the caller keeps it while this raises), and the directory's
        attributes failing fails nothing."""
        if again is not None:
            self._refuse_hard_linked(rel)
            self._reapply(fd, rel, again)
        with parent_of(self.fd, rel) as (dfd, name):
            os.rename(src, name, dst_dir_fd=dfd)
        st = os.fstat(fd)
        if retire is not None:
            os.close(retire)
        try:
            return st, self.lstat(split(rel)[0])
        except OSError:
            return st, None

    def write_in_place(self, rel: bytes, src_fd: int, size: int,
                       times: tuple[int, int] | None, expect: os.stat_result | None = None
                       ) -> None:
        """Publish into the existing inode: used for hard-linked files, which a rename would
        split into two different files. ``expect``: the file found at ``rel`` before; if
        another one is there now (renamed meanwhile), FileNotFoundError, and nothing is
        written (the caller looks for the file at its new path)."""
        fd = self.open(rel, os.O_WRONLY)
        try:
            if expect is not None:
                now = os.fstat(fd)
                if (now.st_dev, now.st_ino) != (expect.st_dev, expect.st_ino):
                    raise FileNotFoundError(errno.ENOENT, "renamed meanwhile", rel)
            self._fill(fd, src_fd, size, times)
        finally:
            os.close(fd)

    def write_through(self, fd: int, src_fd: int, size: int, times: tuple[int, int]
                      ) -> os.stat_result:
        """``write_in_place`` into the file a descriptor holds open, which has no name this
        mount knows any more (its other names were made elsewhere): opened again for
        writing through ``/proc``, which reaches the file itself, not a path."""
        wfd = os.open(proc_path(fd), os.O_WRONLY | os.O_CLOEXEC)
        try:
            self._fill(wfd, src_fd, size, times)
            return os.fstat(wfd)
        finally:
            os.close(wfd)

    @staticmethod
    def _fill(fd: int, src_fd: int, size: int, times: tuple[int, int] | None) -> None:
        copy_fd(src_fd, fd, size)
        os.ftruncate(fd, size)
        if times is not None:
            os.utime(fd, ns=times)
        os.fsync(fd)

    def _copy_attributes(self, like: bytes, fd: int, st: os.stat_result | None = None,
                         made: os.stat_result | None = None, mode: int | None = None
                         ) -> None:
        """Give ``fd`` the owner, mode (``mode`` if given, else that of ``like``) and extended
        attributes of ``like`` (``st``: its attributes, if just read). ``made``: ``fd``'s
        attributes as it was made, known not to have changed since; with it, the owner and
        mode are set only where they differ. A ``like`` gone meanwhile gives what it had
        until then: a rename through the mount makes the publish take them all again at its
        rename (``Reapply``), so failing here would only waste the copy."""
        if st is None:
            try:
                st = self.lstat(like)
            except FileNotFoundError:
                if mode is not None:
                    os.fchmod(fd, stat.S_IMODE(mode))
                return
        want = stat.S_IMODE(self._mode_like(like, st, mode))
        chown = made is None or (made.st_uid, made.st_gid) != (st.st_uid, st.st_gid)
        if chown:
            os.fchown(fd, st.st_uid, st.st_gid)
        if chown or stat.S_IMODE(made.st_mode) != want:  # type: ignore[union-attr]
            os.fchmod(fd, want)  # after chown, which clears set-id bits
        if stat.S_ISLNK(st.st_mode) or st.st_dev in self._no_xattrs:
            return
        with contextlib.ExitStack() as stack:
            try:
                src, is_link = stack.enter_context(self._path_fd(like))
            except FileNotFoundError:
                return  # gone since its lstat (above)
            if is_link:
                return
            try:
                names = os.listxattr(proc_path(src))
            except OSError as e:
                self.note_xattrs_failed(st.st_dev, e)
                if self.lacks_xattrs(st.st_dev):
                    return
                raise
            for name in names:
                try:
                    os.setxattr(fd, name, os.getxattr(proc_path(src), name))
                except OSError as e:
                    if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise

    def _mode_like(self, like: bytes, st: os.stat_result, mode: int | None) -> int:
        """The mode of a file to take ``like``'s place (``st``: its attributes): ``mode`` if
        given, else ``like``'s. A symbolic link's own mode (0777) is no file's: where another
        node demoted the file since this node last looked, the stub at its name holds the
        file's mode; anything else there gives owner-only, never more."""
        if mode is not None:
            return mode
        if not stat.S_ISLNK(st.st_mode):
            return st.st_mode
        if self.bucket is not None:
            try:
                return parse_stub(self.readlink(like), self.bucket).mode
            except (OSError, StubError):
                pass
        return 0o600

    def _refuse_hard_linked(self, rel: bytes) -> None:
        try:
            st = self.lstat(rel)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise LinkedMeanwhile(rel)

    def _reapply(self, fd: int, like: bytes, again: Reapply) -> None:
        """Take the attributes of ``like`` once more, dropping extended attributes it no longer
        has (``security.*`` ones are the system's and stay)."""
        try:
            names = os.listxattr(fd)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            names = []
        for name in names:
            if name.startswith("security."):
                continue
            try:
                os.removexattr(fd, name)
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
        self._copy_attributes(like, fd)
        if again.mode is not None:
            os.fchmod(fd, stat.S_IMODE(again.mode))
        os.utime(fd, ns=again.times)
