"""Stubs on the shared warm tree are anyone's to write (docs/stubs.md, "Safety"): what one says
must not reach another file, nor fail anything but its own file, and a stub tierfs would never
write is refused.

- A cold file's cached blocks are named by the size its stub claims as well as by key and
  ETag: a stub naming the same object with a smaller size caches a short last block, which a
  reader of the real stub must never be served (a read cut short, zeros through the kernel).
- A key holding a NUL byte (no path can hold one, so tierfs never writes it) is refused by
  the parser; taken, a local-folder bucket raised ValueError (not OSError) for it, which
  escaped the errno handling of an open, a promotion (the whole command) and a ``warm``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tierfs.stubs import StubError, parse_stub
from tierfs.vfs.residency import Residency

from .conftest import Stub, core_test, open_core

KIB = 1024
HOSTILE = 65534
DATA = bytes(range(256)) * 400  # 102,400 bytes: a block of 64 KiB and one of 36 KiB


@core_test
async def test_a_stub_claiming_less_does_not_cut_the_reads_of_the_real_one(
        tmp_path: Path) -> None:
    """An imported object (no recorded owner: any stub may read it, docs/stubs.md, "The
    limits"). A hostile user's copy of its stub claiming 70 KiB is read first; the real stub
    must still read the whole object."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        info = core.store.inner.put("data/shared.bin", DATA, {})
        core.put_stub(b"short", Stub("data/shared.bin", 70 * KIB, info.etag, 0o644, 1))
        core.put_stub(b"real", Stub("data/shared.bin", len(DATA), info.etag, 0o644, 1))
        assert await core.read_file(b"short") == DATA[:70 * KIB]
        got = await core.read_file(b"real")
        assert len(got) == len(DATA) and got == DATA


@core_test
async def test_warming_a_planted_short_stub_does_not_cut_its_owners_reads(
        tmp_path: Path) -> None:
    """The object records its owner, so the hostile's own link is refused when opened; but
    ``tierfs warm`` of a directory holding it (the mount's user warming a shared tree) fetches
    its blocks unchecked, the last one cut to the claimed size, and the owner's reads of the
    real file are then served that block."""
    async with open_core(tmp_path, large_file_threshold="64KiB") as core:
        info = core.store.inner.put(
            "data/mine.bin", DATA,
            {"uid": str(os.getuid()), "gid": str(os.getgid()), "mode": "0644"})
        core.put_stub(b"real", Stub("data/mine.bin", len(DATA), info.etag, 0o644, 1))
        os.mkdir(core.warm / "planted")
        core.put_stub(b"planted/copy", Stub("data/mine.bin", 70 * KIB, info.etag, 0o644, 1))
        os.lchown(core.warm_path(b"planted/copy"), HOSTILE, HOSTILE)
        residency = Residency(core.fs)
        await residency.warm(await residency.files(b"planted"), lambda n: None)
        got = await core.read_file(b"real")
        assert len(got) == len(DATA) and got == DATA


def test_a_key_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    """No path holds a NUL byte, so no stub tierfs writes names such a key ("a stub tierfs
    reads is always one it would write itself")."""
    from tierfs.objects.base import parse_bucket_uri

    bucket = parse_bucket_uri(f"file://{tmp_path}")
    target = Stub("a\x00b", 10, "etag", 0o644, 1).encode(bucket)
    with pytest.raises(StubError):
        parse_stub(target, bucket)


@core_test
async def test_opening_a_stub_whose_key_holds_a_nul_fails_with_an_errno(
        tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.put_stub(b"evil", Stub("a\x00b", 10, "etag", 0o644, 1))
        with pytest.raises(OSError) as failed:  # (was: ValueError, embedded null byte)
            await core.open(b"evil")
        assert failed.value.errno in (errno.EIO, errno.EACCES)


@core_test
async def test_promoting_a_stub_whose_key_holds_a_nul_is_refused_alone(
        tmp_path: Path) -> None:
    """``tierfs promote DIR`` runs ``Demoter.promote`` for each file and catches nothing
    else: a ValueError out of one ended the command, the files after it not promoted."""
    async with open_core(tmp_path) as core:
        core.put_stub(b"evil", Stub("a\x00b", 10, "etag", 0o644, 1))
        outcome = await core.fs.demoter.promote(b"evil")  # (was: ValueError)
        assert not outcome.done
        assert core.warm_path(b"evil").is_symlink()


@core_test
async def test_warming_a_directory_with_a_nul_key_stub_fails_with_an_errno(
        tmp_path: Path) -> None:
    """``tierfs warm`` catches OSError per block; a ValueError ended the request with an
    internal error (a traceback in the mount's log)."""
    async with open_core(tmp_path) as core:
        os.mkdir(core.warm / "d")
        core.put_stub(b"d/evil", Stub("a\x00b", 10, "etag", 0o644, 1))
        residency = Residency(core.fs)
        states = await residency.files(b"d")
        try:
            await residency.warm(states, lambda n: None)
        except OSError:
            pass  # (an errno for the command to report: fine)
