"""Copies between open files made in the kernel, with a sparse file's holes kept as holes:
the staging of a warm file, a publish by copy and a mirror all copy this way."""

from __future__ import annotations

import errno
import os


def copy_fd(src: int, dst: int, size: int, src_offset: int = 0, dst_offset: int = 0) -> int:
    """Copy ``size`` bytes between files in the kernel (reflink or server-side copy where the
    file system offers it), falling back to sendfile across file systems. Returns the bytes
    copied (fewer where the source is shorter)."""
    done = 0
    use_cfr = True
    while done < size:
        count = min(size - done, 1 << 30)
        if use_cfr:
            try:
                n = os.copy_file_range(src, dst, count, src_offset + done, dst_offset + done)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                use_cfr = False
                continue
        else:
            os.lseek(dst, dst_offset + done, os.SEEK_SET)
            n = os.sendfile(dst, src, src_offset + done, count)
        if n == 0:  # the source is shorter than expected: the rest stays a hole
            break
        done += n
    return done


def copy_to_new(src: int, dst: int, size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` into ``dst``, an empty file just created,
    leaving ``src``'s holes as holes, and give ``dst`` that size.

    In-kernel copies write a hole's zeros out as data (except where the file system clones
    extents), so a sparse disk image or a file extended by truncate would take its whole size
    on the hot disk when staged and on the warm tier when published. Only for an empty new
    file: it reads as zeros wherever nothing is copied, whereas a skipped hole in a file with
    data would leave that data showing. File systems without ``SEEK_DATA`` (and those that
    report a file as all data, as the generic kernel code does) get a plain copy, and so
    does a file with as many blocks as bytes: ``SEEK_DATA`` is asked only of files that hold
    holes, since some file systems have answered it wrongly for data not yet written back
    (OpenZFS before 2.2.2, whose bug made ``cp`` write zeros), and a plain copy is right
    whatever they say. ``src``'s file offset moves: its readers use positional reads only.
    The size is set only where the copy did not reach it (each call is a round trip on a
    network file system).
    """
    if os.fstat(src).st_blocks * 512 >= size:
        if copy_fd(src, dst, size) < size:
            os.ftruncate(dst, size)
        return
    offset = reached = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break  # nothing but a hole from here to the end of the file
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            start = offset  # SEEK_DATA not supported: copy the rest as it reads
            end = size
        else:
            if start >= size:
                break
            end = min(size, os.lseek(src, start, os.SEEK_HOLE))
        reached = max(reached, start + copy_fd(src, dst, end - start, start, start))
        offset = end
    if reached < size:
        os.ftruncate(dst, size)
