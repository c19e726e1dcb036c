"""The operator's walks of the shared warm tree (``tierfs warm``, ``where``, ``pin``, ``evict``,
a prefetch plan naming a directory: ``vfs.residency``) against what anyone may put under the
directory walked. A subdirectory the mount cannot read (another user's, mode 0700: a mount not
run as root, or run as root over NFS with root squashed) must be left out alone, as
``write.warmscan.walk`` (``tierfs scan``, the quota, ``doctor``) counts it unreadable and goes
on and ``tierfs import`` reports it "not searched"; any other error (a failing tier) ends
the command.

The mount's user is played by uid 1000 (the effective uid of this process, for the walk
alone)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tierfs.vfs.residency import Residency
from tierfs.write.warmscan import walk

from .conftest import core_test, open_core

USER = 1000
HOSTILE = 65534


@contextlib.contextmanager
def as_user() -> Iterator[None]:
    os.setegid(USER)
    os.seteuid(USER)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def plant_private_dir(warm: Path) -> None:
    private = warm / "d" / "private"
    private.mkdir()
    (private / "f").write_bytes(b"theirs")
    os.chown(private / "f", HOSTILE, HOSTILE)
    os.chown(private, HOSTILE, HOSTILE)
    os.chmod(private, 0o700)


@core_test
async def test_where_of_a_directory_leaves_out_another_users_private_subdirectory(
        tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    async with open_core(tmp_path) as core:
        (core.warm / "d").mkdir()
        await core.write_file(b"d/good", b"good data")
        plant_private_dir(core.warm)
        with as_user():
            # The quota's walk goes on past it (counted unreadable) ...
            seen = walk(core.fs.warm, 1, b"d")
            # ... and so should the operator's (was: PermissionError for the whole of d).
            try:  # (the blocking walk itself, called in this thread while as_user holds)
                walked = Residency(core.fs)._walk(b"d")
            except PermissionError as e:
                walked = e  # type: ignore[assignment]
        assert seen.files == 1 and seen.unreadable == 1
        assert not isinstance(walked, Exception), f"the whole walk failed: {walked!r}"
        assert [rel for rel, _, _ in walked] == [b"d/good"]


@core_test
async def test_a_plan_naming_another_users_private_directory_fails_that_path_alone(
        tmp_path: Path) -> None:
    """A prefetch plan or a round of pins following paths (``Residency.resolve``) names many
    paths in one call: one the mount may not read is left out, the others resolved."""
    os.chmod(tmp_path, 0o755)
    async with open_core(tmp_path) as core:
        (core.warm / "d").mkdir()
        await core.write_file(b"d/good", b"good data")
        plant_private_dir(core.warm)
        residency = Residency(core.fs)
        with as_user():
            found = await residency.resolve([b"d/private", b"d/good"])
        assert found[0] is None
        assert found[1] is not None and [s.path for s in found[1]] == ["d/good"]
