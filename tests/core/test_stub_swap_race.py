"""A stub is made under a temp name beside the file it replaces, given the file's owner, and
renamed over it. In a directory others may write to (a shared project directory without the
sticky bit), another user can rename a file of theirs onto the temp name at any moment: the
owner used to be given by name, so a mount run as root gave the planted file the victim's
owner and put it in the victim's place (a demotion then reported success). The owner is now
given through a descriptor of the symlink made, and the name checked after the rename."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tierfs.tiers.warm import WarmTier

from .conftest import core_test, open_core
from .test_demote import DATA

VICTIM, ATTACKER = 1111, 2222
EVIL = b"evil" * 1000


def shared_dir(root: Path) -> tuple[Path, Path]:
    """A directory everyone may write to, the victim's file in it, and the attacker's."""
    shared = root / "shared"
    shared.mkdir(parents=True)
    os.chmod(shared, 0o777)
    victim = shared / "model.bin"
    victim.write_bytes(DATA)
    os.chown(victim, VICTIM, VICTIM)
    planted = shared / "planted"
    planted.write_bytes(EVIL)
    os.chown(planted, ATTACKER, ATTACKER)
    return victim, planted


def plant_after_symlink(monkeypatch: pytest.MonkeyPatch, planted: Path) -> list[bytes]:
    """The attacker's step, just after tierfs made its temp symlink: their file renamed onto
    the temp name (its name is in the directory's listing)."""
    symlink, taken = os.symlink, []

    def racing(target: object, name: object, *args: object, **kwargs: object) -> None:
        symlink(target, name, *args, **kwargs)  # type: ignore[arg-type]
        if isinstance(name, bytes) and name.startswith(b".tierfs-") and not taken:
            taken.append(name)
            os.rename(planted, planted.parent / os.fsdecode(name))

    monkeypatch.setattr(os, "symlink", racing)
    return taken


def untouched(victim: Path) -> None:
    st = os.lstat(victim)
    assert victim.read_bytes() == DATA and (st.st_uid, st.st_gid) == (VICTIM, VICTIM)
    assert not any(os.lstat(p).st_uid == VICTIM and p.read_bytes() == EVIL
                   for p in victim.parent.iterdir() if p.is_file())


@core_test
async def test_a_demotion_never_gives_a_planted_file_the_owner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim, planted = shared_dir(tmp_path / "warm")
    async with open_core(tmp_path) as c:
        assert c.fs.core.as_root
        taken = plant_after_symlink(monkeypatch, planted)
        try:
            outcome = await c.fs.demoter.demote(b"shared/model.bin")
        except OSError:
            pass
        else:
            assert not outcome.done
        monkeypatch.undo()
        assert taken
        untouched(victim)
        assert (await c.fs.demoter.demote(b"shared/model.bin")).done  # (once left alone)
        assert await c.read_file(b"shared/model.bin") == DATA


def test_a_stub_put_over_a_file_never_gives_a_planted_file_the_owner(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim, planted = shared_dir(tmp_path)
    warm = WarmTier(tmp_path, 1)
    taken = plant_after_symlink(monkeypatch, planted)
    with pytest.raises(OSError) as raised:
        warm.stub_over(b"shared/model.bin", b"tierfs:any")
    monkeypatch.undo()
    assert taken and raised.value.errno == errno.ESTALE
    untouched(victim)
