"""A demotion whose swap is discarded (a writer won) while the bucket cannot delete the
upload's object: the record kept for the next mount to delete it says first that the swap did
not happen (phase "upload" again). Before, it stayed in its "swap" phase, and the next mount,
finding another file at the path (why the swap was discarded), kept the object "which may be
garbage" and dropped the record: the object was never deleted."""

from __future__ import annotations

from pathlib import Path

from .conftest import core_test, open_core
from .test_demote import DATA, put_warm


@core_test
async def test_a_discarded_demotion_whose_delete_failed_is_cleaned_up_next_mount(
        tmp_path: Path) -> None:
    path = put_warm(tmp_path, "big.bin", DATA)
    async with open_core(tmp_path) as c:
        async def writer_wins(step: str) -> None:
            if step == "swap":  # another node writes the file just before the swap
                with open(path, "r+b") as f:
                    f.write(b"changed")
                c.store.fail_always("delete")  # and the bucket refuses deletes for a while

        c.fs.demoter.at_step = writer_wins
        outcome = await c.fs.demoter.demote(b"big.bin")
        assert not outcome.done and "changed" in outcome.why
        assert len(c.objects()) == 1  # kept for the next mount to delete
        store = c.store
    store.heal()
    async with open_core(tmp_path, store=store) as c:
        await c.recover()
        assert path.read_bytes() == b"changed" + DATA[7:]
        # The swap was known not to have happened: the object is the discarded upload's.
        assert c.objects() == {}, "the discarded demotion's object was kept for ever"
