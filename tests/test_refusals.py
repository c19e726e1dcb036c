"""Configurations that must be refused before anything is mounted, each with one line that
names the flag or key at fault."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_mount, running, tierfs
from tierfs.config import build_config, load_config
from tierfs.errors import ConfigError

HUGE = "99999999999999999999999999EiB"


def _refused(flags: dict[str, object], file_values: dict[str, object] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(file_values or {}, flags)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_bucket_at_the_root_folder_is_refused() -> None:
    message = _refused({"bucket": "file:///"})
    assert message.startswith("--bucket:") and "root" in message
    message = _refused({}, {"bucket": "file:///"})
    assert "key 'bucket'" in message


@pytest.mark.parametrize("place", ["warm", "warm/cold", "hot", "hot/cold", "."])
def test_a_local_bucket_must_be_apart_from_the_hot_and_warm_tiers(tmp_path: Path,
                                                                   place: str) -> None:
    """An object stored inside the warm tier would show up in the namespace as a file of its
    own (and one in the hot tier among the cache's blocks); a tier inside the bucket folder
    would be listed as objects by an import."""
    flags = {"hot": str(tmp_path / "hot"), "warm": str(tmp_path / "warm"),
             "bucket": f"file://{(tmp_path / place).resolve()}"}
    message = _refused(flags)
    assert message.startswith("--bucket:"), message
    assert str((tmp_path / place).resolve()) in message


def test_a_local_bucket_beside_the_tiers_is_accepted(tmp_path: Path) -> None:
    config = build_config({}, {"hot": str(tmp_path / "hot"), "warm": str(tmp_path / "warm"),
                               "bucket": f"file://{tmp_path / 'warm-cold'}"})
    assert config.bucket.bucket == str(tmp_path / "warm-cold")


def test_a_tier_moved_into_the_default_bucket_folder_blames_the_tier(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bucket was left to its default: the error names the flag the user gave."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("ANYSCALE_ARTIFACT_STORAGE", raising=False)
    message = _refused({"hot": str(tmp_path / "hot"),
                        "warm": str(tmp_path / "data" / "tierfs" / "cold" / "w")})
    assert message.startswith("--warm:"), message


@pytest.mark.parametrize("key, bound", [
    ("large_file_threshold", "5TiB"), ("stream_after", "5TiB"), ("part_size", "1GiB"),
    ("hot_capacity", "1EiB"), ("read_memory", "1EiB")])
def test_sizes_past_a_sane_bound_are_refused(key: str, bound: str) -> None:
    flag = "--" + key.replace("_", "-")
    message = _refused({key: HUGE})
    assert message.startswith(flag + ":") and bound in message, message
    message = _refused({}, {key: 2**62})  # a TOML integer (4EiB)
    assert f"key '{key}'" in message and bound in message, message


def test_sizes_at_the_bounds_are_accepted() -> None:
    config = build_config({}, {"large_file_threshold": "5TiB", "stream_after": "5TiB",
                               "hot_capacity": "1EiB"})
    assert config.large_file_threshold == 5 * 1024**4
    assert config.hot_capacity == str(1024**6)


def test_an_error_about_a_default_does_not_blame_a_missing_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The low watermark keeps its default here; the flag that clashes with it is at fault,
    and the config file (which does not exist) is not mentioned."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("TIERFS_CONFIG", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(None, {"cache_high_watermark": "0.5"})
    message = str(info.value)
    assert "config.toml" not in message and str(tmp_path) not in message, message
    assert message.startswith("--cache-high-watermark:"), message
    assert "0.85" in message


def test_a_watermark_clash_in_a_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("cache_low_watermark = 0.9\ncache_high_watermark = 0.8\n")
    with pytest.raises(ConfigError, match=f"^{f}: key 'cache_low_watermark'"):
        load_config(f, {})


def test_mounting_over_a_non_empty_directory_needs_nonempty(tmp_path: Path) -> None:
    """Files under the mount point would vanish from view while tierfs is mounted there."""
    m = make_mount(tmp_path)
    (m.path / "notes.txt").write_text("mine")
    try:
        result = tierfs("mount", str(m.path), "--hot", str(m.hot), "--warm", str(m.warm),
                        check=False)
    finally:
        m.force_cleanup()  # (should a mount have started after all)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not empty" in lines[0] and "--nonempty" in lines[0], lines
    assert not os.path.ismount(m.path)
    m.extra.append("--nonempty")
    with running(m):
        assert os.path.ismount(m.path)
        assert not (m.path / "notes.txt").exists()
    assert (m.path / "notes.txt").read_text() == "mine"
