"""Named roots without a mount: slots that stay with their names, numbers that carry them,
and each root's share of the configuration."""

from __future__ import annotations

from pathlib import Path

from tierfs.config import build_config
from tierfs.vfs.roots import TOP_INODE, TOP_SLOT, assign_slots, inner, outer, root_config


def test_slots_stay_with_their_names(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    assert assign_slots(tmp_path, ["a", "b", "c"]) == {"a": 0, "b": 1, "c": 2}
    # Reordered, one gone, one new: the known keep theirs, the new takes a free one.
    assert assign_slots(tmp_path, ["c", "new", "a"]) == {"c": 2, "new": 3, "a": 0}
    assert assign_slots(tmp_path, ["b"]) == {"b": 1}


def test_numbers_carry_the_slot_and_never_meet_the_top() -> None:
    for slot in (0, 5, TOP_SLOT - 1):
        for number in (1, 2, 12345, 2**50):
            assert inner(outer(slot, number)) == (slot, number)
            assert outer(slot, number) != TOP_INODE


def test_each_root_gets_its_prefix_and_a_share_of_the_cache() -> None:
    config = build_config({}, {"warm": ("a=/srv/a", "b=/srv/b"), "hot": "/srv/hot",
                               "bucket": "s3://bkt/pre", "hot_capacity": "40%",
                               "read_memory": "256MiB"})
    a = root_config(config, "a", Path("/srv/a"))
    assert (str(a.bucket), a.warm, a.hot, a.hot_capacity, a.roots) == \
        ("s3://bkt/pre/a", Path("/srv/a"), Path("/srv/hot/roots/a"), "20.0%", ())
    assert a.read_memory == 128 * 1024 * 1024
    sized = build_config({}, {"warm": ("a=/x", "b=/y", "c=/z"), "hot_capacity": "3GiB",
                              "bucket": "file:///srv/cold"})
    c = root_config(sized, "c", Path("/z"))
    assert int(c.hot_capacity) == 1024**3
    assert c.bucket.key("f") == "c/f" and str(c.bucket) == "file:///srv/cold/c"


def test_slots_of_roots_no_longer_mounted_are_given_away_when_all_were_used(
        tmp_path: Path) -> None:
    """Each name ever mounted kept its slot for good: the name after the last free slot was
    used failed the mount (StopIteration)."""
    for i in range(TOP_SLOT):
        assert assign_slots(tmp_path, [f"r{i}"]) == {f"r{i}": i}
    slots = assign_slots(tmp_path, ["r5", "new", "r7"])
    assert slots["r5"] == 5 and slots["r7"] == 7
    assert slots["new"] not in (5, 7) and 0 <= slots["new"] < TOP_SLOT
    again = assign_slots(tmp_path, ["new", "other"])
    assert again["new"] == slots["new"] and again["other"] != again["new"]
