"""pyfuse3 operations: translate FUSE requests to ``FileSystem`` calls and results back.

No policy lives here. Every handler is wrapped by ``to_fuse_errors`` so an exception becomes an
errno (or EIO with a logged traceback) and never reaches pyfuse3's main loop.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

import pyfuse3
import trio

from tierfs.fuse.errors import to_fuse_errors
from tierfs.vfs.filesystem import BLOCK_SIZE, Attrs, FileSystem, SetAttr

#: Extended attribute names are limited to 255 bytes by the kernel's xattr interface.
XATTR_NAME_MAX = 255


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, fs: FileSystem, entry_timeout: float, attr_timeout: float) -> None:
        super().__init__()
        self.fs = fs
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        #: Set once the kernel's INIT request is answered (settings made earlier are reset).
        self.initialized = trio.Event()

    def init(self) -> None:
        self.initialized.set()

    def _entry(self, attrs: Attrs) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attrs.ino
        entry.generation = 0
        if attrs.fresh_for is None:
            entry.entry_timeout = self.entry_timeout
            entry.attr_timeout = self.attr_timeout
        else:
            entry.entry_timeout = min(self.entry_timeout, attrs.fresh_for)
            entry.attr_timeout = min(self.attr_timeout, attrs.fresh_for)
        entry.st_mode = attrs.mode
        entry.st_nlink = attrs.nlink
        entry.st_uid = attrs.uid
        entry.st_gid = attrs.gid
        entry.st_rdev = attrs.rdev
        entry.st_size = attrs.size
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = attrs.blocks
        entry.st_atime_ns = attrs.atime_ns
        entry.st_mtime_ns = attrs.mtime_ns
        entry.st_ctime_ns = attrs.ctime_ns
        return entry

    # -- namespace --------------------------------------------------------------------------

    @to_fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> pyfuse3.EntryAttributes:
        _, attrs = await self.fs.lookup(parent_inode, name)
        return self._entry(attrs)

    @to_fuse_errors
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        await self.fs.forget(inode_list)

    @to_fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(await self.fs.getattr(inode))

    @to_fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        changes = SetAttr(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self._entry(await self.fs.setattr(inode, changes))

    @to_fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.fs.readlink(inode)

    @to_fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _, attrs = await self.fs.mknod(parent_inode, name, mode, rdev, ctx.uid, ctx.gid)
        return self._entry(attrs)

    @to_fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _, attrs = await self.fs.mkdir(parent_inode, name, mode, ctx.uid, ctx.gid)
        return self._entry(attrs)

    @to_fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.unlink(parent_inode, name)

    @to_fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.rmdir(parent_inode, name)

    @to_fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _, attrs = await self.fs.symlink(parent_inode, name, target, ctx.uid, ctx.gid)
        return self._entry(attrs)

    @to_fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @to_fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _, attrs = await self.fs.link(inode, new_parent_inode, new_name)
        return self._entry(attrs)

    # -- files ------------------------------------------------------------------------------

    @to_fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fh, keep_cache, direct = await self.fs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache, direct_io=direct)

    @to_fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, direct, _, attrs = await self.fs.create(parent_inode, name, mode, flags, ctx.uid,
                                                    ctx.gid)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=direct), self._entry(attrs)

    @to_fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]  # noqa: E501
        return await self.fs.read(fh, off, size)

    @to_fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @to_fuse_errors
    async def flush(self, fh: int) -> None:
        await self.fs.flush(fh)

    @to_fuse_errors
    async def release(self, fh: int) -> None:
        await self.fs.release(fh)

    @to_fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh)

    # -- directories ------------------------------------------------------------------------

    @to_fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.fs.opendir(inode)

    @to_fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for offset, entry in await self.fs.readdir(fh, start_id):
            inode, attrs = self.fs.dir_entry(fh, entry)
            sent = pyfuse3.readdir_reply(token, entry.name, self._entry(attrs), offset)
            self.fs.count_lookup(inode, sent)
            if not sent:
                break

    @to_fuse_errors
    async def releasedir(self, fh: int) -> None:
        await self.fs.releasedir(fh)

    @to_fuse_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.fs.fsyncdir(fh)

    # -- file system ------------------------------------------------------------------------

    @to_fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = await self.fs.statfs()
        data = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail", "f_namemax"):
            setattr(data, field, getattr(st, field))
        return data

    @to_fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        if len(name) > XATTR_NAME_MAX:
            raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
        await self.fs.setxattr(inode, name, value)

    @to_fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.fs.getxattr(inode, name)

    @to_fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return await self.fs.listxattr(inode)

    @to_fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.fs.removexattr(inode, name)
