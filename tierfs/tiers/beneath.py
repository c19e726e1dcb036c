"""Paths on the shared warm tree resolved beneath its root, without following a symlink.

The warm tree is shared, and anyone on the cluster may replace a directory this mount has
looked up by a symlink to anywhere. A call made with a path of several components relative to
the root's descriptor (``d/name``) would follow that symlink: ``O_NOFOLLOW`` and
``follow_symlinks=False`` only cover the last component. So every call on the tree resolves the
directory part here, refusing any symlink (ELOOP) and any way out of the root, and makes its
own call on the last name, relative to that directory's descriptor. tierfs never needs to
follow a symlink itself: its paths are built from the directories it looked up, and the symlinks
the tree holds (a user's, or a stub) are only ever the last component.

``openat2`` with ``RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`` (Linux 5.6) does it in one system
call; elsewhere each component is opened in turn with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine)
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
#: The warm root itself, as a path relative to its descriptor.
ROOT = b"."
#: Directories are opened for their path alone: no open reaches the file system's server.
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_have_openat2 = _SYS_OPENAT2 is not None


def _openat2(dirfd: int, path: bytes) -> int:
    how = _OpenHow(_DIR_FLAGS, 0, _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return fd


def _walk(dirfd: int, path: bytes) -> int:
    fd = dirfd
    try:
        for name in path.split(b"/"):
            if name in (b"", b".", b".."):
                if name == b"..":
                    raise OSError(errno.EXDEV, "a path out of the warm root", path)
                continue
            # (O_DIRECTORY with O_NOFOLLOW: a symlink is ENOTDIR, never followed)
            fd, parent = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd), fd
            if parent != dirfd:
                os.close(parent)
    except BaseException:
        if fd != dirfd:
            os.close(fd)
        raise
    if fd == dirfd:
        return os.open(b".", _DIR_FLAGS, dir_fd=dirfd)
    return fd


def open_dir_beneath(root_fd: int, rel: bytes) -> int:
    """A path-only descriptor (``O_PATH``) of the directory ``rel`` under ``root_fd``,
    reached through directories alone."""
    global _have_openat2
    if _have_openat2:
        try:
            return _openat2(root_fd, rel)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM):  # (EPERM: a seccomp filter)
                raise
            _have_openat2 = False
    return _walk(root_fd, rel)


@contextlib.contextmanager
def parent_of(root_fd: int, rel: bytes) -> Iterator[tuple[int, bytes]]:
    """(descriptor of ``rel``'s directory, last name), the directory reached as
    ``open_dir_beneath`` does; for a name in the root itself, the root's descriptor."""
    parent, _, name = rel.rpartition(b"/")
    if not parent:
        yield root_fd, rel
        return
    fd = open_dir_beneath(root_fd, parent)
    try:
        yield fd, name
    finally:
        os.close(fd)


def join(parent: bytes, name: bytes) -> bytes:
    return name if parent == ROOT else parent + b"/" + name


def split(rel: bytes) -> tuple[bytes, bytes]:
    parent, _, name = rel.rpartition(b"/")
    return (parent or ROOT), name
