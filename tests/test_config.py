"""Configuration: defaults, file, flags, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tierfs.config import KEYS, build_config, load_config, parse_size
from tierfs.errors import ConfigError


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TIERFS_CONFIG", raising=False)
    config = load_config(None, {})
    if not Path("/mnt/user_storage").is_dir():
        assert config.warm == tmp_path / "data" / "tierfs" / "warm"
    if not Path("/mnt/local_storage").is_dir():
        assert config.hot == tmp_path / "cache" / "tierfs" / "hot"
    assert config.read_ahead == 8 * 1024 * 1024
    assert config.explicit == frozenset()


def test_file_then_flags_override(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('warm = "/srv/warm"\nattr_timeout = 5\nread_ahead = "16MiB"\n')
    config = load_config(f, {"attr_timeout": "2.5"})
    assert config.warm == Path("/srv/warm")
    assert config.attr_timeout == 2.5
    assert config.read_ahead == 16 * 1024 * 1024
    assert {"warm", "attr_timeout", "read_ahead"} <= config.explicit


def test_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('warm_dir = "/x"\n')
    with pytest.raises(ConfigError, match="unknown key 'warm_dir'"):
        load_config(f, {})


@pytest.mark.parametrize("key, value", [
    ("attr_timeout", "soon"), ("warm_threads", 0), ("read_ahead", "lots"),
    ("allow_other", "maybe"), ("log_level", "loud"), ("hot", 3),
    ("rules", ["ckpt/**=tape"]), ("rules", "ckpt=cold"), ("large_file_threshold", "1KiB"),
    # What TOML gives readily and once crashed the parsing, naming no key:
    ("warm_threads", float("inf")), ("hot_threads", float("-inf")), ("warm_threads", 1.5),
    ("upload_window", float("inf")), ("prometheus_port", float("inf")),
    ("eviction", []), ("eviction", {"policy": "lru"}), ("hot", "/tmp/a\0b"),
    ("warm", "/tmp/a\0b"), ("warm", {})])
def test_bad_value_names_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_config({key: value}, {})


def test_bad_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--warm-threads"):
        build_config({}, {"warm_threads": "many"})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("warm = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml", {})


def test_rules_from_file_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('rules = ["checkpoints/**=cold", "scratch/*=warm"]\n')
    assert load_config(f, {}).rules == (("checkpoints/**", "cold"), ("scratch/*", "warm"))
    assert load_config(f, {"rules": ("x/*=warm",)}).rules == (("x/*", "warm"),)
    assert load_config(f, {"rules": ()}).rules == (("checkpoints/**", "cold"),
                                                  ("scratch/*", "warm"))


def test_sizes() -> None:
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("10GB") == 10 * 1000**3
    assert parse_size("10 GiB") == 10 * 1024**3
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("ten")


def test_every_key_is_documented_and_round_trips() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for key in KEYS:
        assert f"`{key.name}`" in doc, key.name
        assert key.flag in doc, key.flag
    config = build_config({}, {})
    args = config.to_args()
    flags = {}
    it = iter(args)
    for arg in it:
        if arg.startswith("--no-"):
            flags[arg[5:].replace("-", "_")] = False
        elif arg == "--rules":
            flags.setdefault("rules", []).append(next(it))
        elif any(k.is_flag and k.flag == arg for k in KEYS):
            flags[arg[2:].replace("-", "_")] = True
        else:
            flags[arg[2:].replace("-", "_")] = next(it)
    again = build_config({}, flags)
    assert {k.name: getattr(again, k.name) for k in KEYS} == \
        {k.name: getattr(config, k.name) for k in KEYS}


@pytest.mark.parametrize("name,url", [
    ("endpoint_url", "http://minio:s3cr3t@127.0.0.1:9000"),
    ("endpoint_url", "https://AKIAEXAMPLE@storage.example.com"),
    ("bucket", "s3://AKIAEXAMPLE:s3cr3t@bucket/prefix"),
])
def test_credentials_in_a_url_are_refused_without_being_shown(tmp_path: Path, name: str,
                                                              url: str) -> None:
    """The daemon gets its configuration as flags, which every user sees in ``ps``: a URL
    with a password in it is refused, by flag or in the file, and the error names the key
    but not the secret."""
    with pytest.raises(ConfigError) as flag_error:
        build_config({}, {name: url})
    flag = "--" + name.replace("_", "-")
    assert str(flag_error.value).startswith(f"{flag}: ")
    f = tmp_path / "c.toml"
    f.write_text(f'{name} = "{url}"\n')
    with pytest.raises(ConfigError) as file_error:
        load_config(f, {})
    assert f"key '{name}'" in str(file_error.value)
    for error in (flag_error, file_error):
        assert "credentials" in str(error.value)
        assert "s3cr3t" not in str(error.value) and "AKIAEXAMPLE" not in str(error.value)


def test_credentials_in_the_default_bucket_are_refused(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setenv("ANYSCALE_ARTIFACT_STORAGE", "s3://AKIAEXAMPLE:s3cr3t@bucket/p")
    with pytest.raises(ConfigError, match="credentials") as error:
        build_config({}, {})
    assert "s3cr3t" not in str(error.value)



def test_named_warm_roots_from_flags_and_file(tmp_path: Path) -> None:
    config = build_config({}, {"warm": ("cluster=/srv/c", "user=/srv/u")})
    assert config.roots == (("cluster", Path("/srv/c")), ("user", Path("/srv/u")))
    assert config.warm == Path("/srv/c")
    plain = build_config({}, {"warm": ("/srv/a=b",)})  # a '/' first: a path, not NAME=DIR
    assert plain.roots == () and plain.warm == Path("/srv/a=b")
    f = tmp_path / "c.toml"
    f.write_text('[warm]\ncluster = "/srv/c"\nshared = "/srv/s"\n')
    assert load_config(f, {}).roots == (("cluster", Path("/srv/c")),
                                         ("shared", Path("/srv/s")))
    f.write_text('warm = ["cluster=/srv/c", "user=/srv/u"]\n')
    assert [n for n, _ in load_config(f, {}).roots] == ["cluster", "user"]
    args = config.to_args()
    assert args[args.index("--warm"):args.index("--warm") + 4] == \
        ["--warm", "cluster=/srv/c", "--warm", "user=/srv/u"]


@pytest.mark.parametrize("value", [
    ["a=/x", "a=/y"], ["a=/x", "/y"], [".=/x", "b=/y"], ["..=/x"], {"a/b": "/x"},
    {"": "/x"}, {"a": 3}, {".": "/x"}, [], ["a="], ["slots.json=/x"], ["slots.json.new=/x"]])
def test_bad_warm_roots_name_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match="'warm'"):
        build_config({"warm": value}, {})


def test_bad_warm_root_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--warm"):
        build_config({}, {"warm": ("a=/x", "a=/y")})


def test_read_memory_too_small_for_the_roots_names_the_key() -> None:
    """Each root reads from an equal share of read_memory; a share under 16 MiB used to be
    raised to 16 MiB, so the roots together held more than was configured."""
    roots = {"warm": ("a=/x", "b=/y", "c=/z")}
    with pytest.raises(ConfigError, match="--read-memory: .*3 warm roots need at least 48MiB"):
        build_config({}, {**roots, "read_memory": "32MiB"})
    with pytest.raises(ConfigError, match="'read_memory'"):
        build_config({"read_memory": "32MiB"}, roots)
    assert build_config({}, {**roots, "read_memory": "48MiB"}).read_memory == 48 * 2**20
    many = {"warm": tuple(f"r{i}=/x{i}" for i in range(20))}  # (the default: enough for all)
    assert build_config({}, many).read_memory == 20 * 16 * 2**20


def test_zero_config_default_mounts_three_roots(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFS_MOUNTS_BASE", str(tmp_path))
    monkeypatch.setenv("ANYSCALE_ARTIFACT_STORAGE", "s3://artifacts/org/")
    monkeypatch.delenv("TIERFS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    for folder in ("cluster_storage", "user_storage"):
        (tmp_path / folder).mkdir()
    assert build_config({}, {}).roots == ()  # all three, or today's single default
    (tmp_path / "shared_storage").mkdir()
    config = load_config(None, {})
    assert config.roots == tuple((name, tmp_path / f"{name}_storage" / "tierfs")
                                 for name in ("cluster", "user", "shared"))
    assert str(config.bucket) == "s3://artifacts/org/tierfs"
    assert build_config({}, {"warm": ("/srv/w",)}).roots == ()  # a given warm wins
