"""Stubs read from the shared warm tree: the parser takes only what tierfs writes, with every
field in range (anything it takes writes back to the very same bytes), and a refused stub is
refused alone: the rest of its directory lists and stats as usual through a real mount."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import make_mount, running
from tierfs.objects.base import MAX_KEY_BYTES, parse_bucket_uri
from tierfs.stubs import MAX_MTIME_NS, MAX_SIZE, MIN_MTIME_NS, Stub, StubError, parse_stub

BUCKET = parse_bucket_uri("s3://bucket/prefix")
GOOD = Stub("prefix/data/ckpt 1.pt", 10737418240, "6f1e0a-640", 0o644, 1795670229392293012)


def target(**fields: str) -> bytes:
    """GOOD's stub with some fields' text replaced as given (already encoded)."""
    encoded = {"uri": quote_plus(BUCKET.uri_of(GOOD.key)), "size": str(GOOD.size),
               "etag": GOOD.etag, "mode": f"{GOOD.mode:04o}", "mtime_ns": str(GOOD.mtime_ns)}
    encoded.update(fields)
    return ("tierfs:v1?" + "&".join(f"{k}={v}" for k, v in encoded.items())).encode()


def test_the_good_stub_is_what_encode_writes() -> None:
    assert target() == GOOD.encode(BUCKET)
    assert parse_stub(target(), BUCKET) == GOOD


@pytest.mark.parametrize("fields", [
    # numbers Python's int() takes but tierfs never writes
    {"size": "+13"}, {"size": "1_3"}, {"size": "%2013"}, {"size": "13+"}, {"size": "013"},
    {"size": "-1"}, {"size": "0x10"}, {"size": "1e3"}, {"size": "%D9%A1%D9%A3"}, {"size": ""},
    {"mode": "0o644"}, {"mode": "644"}, {"mode": "00644"}, {"mode": "+644"}, {"mode": "0_644"},
    {"mtime_ns": "-0"}, {"mtime_ns": "+1"}, {"mtime_ns": "01"}, {"mtime_ns": "1+"},
    {"mtime_ns": "1_000"}, {"mtime_ns": "--1"},
    # out of range
    {"size": str(MAX_SIZE + 1)}, {"size": str(2**62)}, {"size": str(2**47 * 10**6)},
    {"mtime_ns": str(10**30)}, {"mtime_ns": str(MAX_MTIME_NS + 1)},
    {"mtime_ns": str(MIN_MTIME_NS - 1)}, {"mtime_ns": "9" * 5000},
    {"mode": "4755"}, {"mode": "2755"}, {"mode": "1777"}, {"mode": "7777"}, {"mode": "0800"},
    {"etag": ""}, {"etag": "a" * 257}, {"etag": "a+b"}, {"etag": "a%22b"}, {"etag": "a%0Ab"},
    {"etag": "%C3%A9"},
    {"uri": quote_plus(BUCKET.uri_of("prefix/" + "k" * MAX_KEY_BYTES))},
    # quoted otherwise than tierfs quotes
    {"uri": quote(BUCKET.uri_of(GOOD.key), safe="")},  # %20 for the space
    {"uri": quote_plus(BUCKET.uri_of(GOOD.key)).lower()},
    {"uri": quote_plus(BUCKET.uri_of(GOOD.key), safe="/:")},
    {"uri": quote_plus(BUCKET.uri_of("prefix/caf")) + "%E9"},  # not UTF-8
])
def test_malformed_and_out_of_range_fields_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(StubError):
        parse_stub(target(**fields), BUCKET)


@pytest.mark.parametrize("text", [
    target().replace(b"&size=", b"&size=1&size="),  # a field twice
    target() + b"&size=1",
    target() + b"&owner=root",  # a field tierfs does not know
    target().replace(b"&etag=", b"&owner=root&etag="),
    target().replace(b"&mode=0644", b""),  # a field missing
    target().replace(b"mode=0644&mtime_ns=", b"mtime_ns=").replace(b"293012", b"293012&mode=0644"),
    target() + b"&",
    target().replace(b"&", b";"),
    target().replace(b"mode=", b"mode"),
    target().replace(b"tierfs:v1?", b"tierfs:v1? "),
    target() + b" ",
    target() + b"\n",
    target().replace(b"uri=", b"%75ri="),  # a quoted field name
    b"tierfs:v1?",
    b"tierfs:v2?" + target()[len(b"tierfs:v1?"):],
    target().replace(b"ckpt", "ckpt\u00e9".encode()),  # not ASCII
])
def test_malformed_stubs_are_refused(text: bytes) -> None:
    with pytest.raises(StubError):
        parse_stub(text, BUCKET)


@pytest.mark.parametrize("fields", [
    {"size": "0"}, {"size": str(MAX_SIZE)}, {"mode": "0000"}, {"mode": "0777"},
    {"mtime_ns": "0"}, {"mtime_ns": str(MIN_MTIME_NS)}, {"mtime_ns": str(MAX_MTIME_NS)},
    {"mtime_ns": "-1"}, {"etag": "e" * 256},
    {"etag": quote_plus("!#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~")},
])
def test_fields_at_the_ends_of_their_ranges_are_taken(fields: dict[str, str]) -> None:
    text = target(**fields)
    assert parse_stub(text, BUCKET).encode(BUCKET) == text


def test_a_stub_made_by_tierfs_is_always_one_it_reads() -> None:
    """What tierfs writes (a chmod to a set-user-ID mode, a utime far in the future, an
    import of an object whose metadata says anything) is never refused when read back."""
    made = Stub(GOOD.key, 1, "x", 0o4755, 10**30)
    assert (made.mode, made.mtime_ns) == (0o755, MAX_MTIME_NS)
    assert Stub(GOOD.key, 1, "x", 0o1777, -(10**30)).mtime_ns == MIN_MTIME_NS
    assert parse_stub(made.encode(BUCKET), BUCKET) == made


key_parts = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1,
                    max_size=12).filter(lambda p: p not in (".", ".."))
stubs = st.builds(
    Stub, st.lists(key_parts, min_size=1, max_size=4).map(lambda ps: "/".join(["prefix", *ps])),
    st.integers(0, MAX_SIZE), st.from_regex(r"[!#-~]{1,40}", fullmatch=True),
    st.integers(0, 0o777), st.integers(MIN_MTIME_NS, MAX_MTIME_NS))


@given(stubs)
def test_every_stub_reads_back_as_written(stub: Stub) -> None:
    assert parse_stub(stub.encode(BUCKET), BUCKET) == stub


numbers = st.one_of(
    st.integers(0, 10**6).map(str), st.integers(-(2**70), 2**70).map(str),
    st.from_regex(r"[-+ _0-9oxe\u0663]{0,24}", fullmatch=True),
    st.sampled_from(["+13", "1_3", " 13", "13 ", "013", "-0", "0o644", "0644", "4755", "١٣"]))
values = st.one_of(numbers, st.text(max_size=20),
                   st.sampled_from([BUCKET.uri_of(GOOD.key), BUCKET.uri_of("other/key"),
                                    BUCKET.uri_of("prefix/a b/%41")]))
quotings = st.sampled_from([quote_plus, quote_plus, quote_plus, lambda v: quote(v, safe=""),
                            lambda v: quote_plus(v).lower(), lambda v: v])
names = st.one_of(st.sampled_from(["uri", "size", "etag", "mode", "mtime_ns"]),
                  st.text(max_size=6))
CANONICAL = [("uri", BUCKET.uri_of(GOOD.key)), ("size", "5"), ("etag", "e"), ("mode", "0644"),
             ("mtime_ns", "7")]


@st.composite
def stub_texts(draw: st.DrawFn) -> bytes:
    """Stub-like text: the five fields in order, then changed a few times at random (a value,
    its quoting, a name, a field dropped, doubled or moved), or any fields at all."""
    if draw(st.booleans()):
        fields = draw(st.lists(st.tuples(names, values), max_size=7))
    else:
        fields = list(CANONICAL)
        for _ in range(draw(st.integers(0, 3))):
            i = draw(st.integers(0, len(fields) - 1)) if fields else 0
            change = draw(st.sampled_from(["value", "value", "value", "name", "drop", "double",
                                           "move", "add"]))
            if not fields or change == "add":
                fields.insert(i, (draw(names), draw(values)))
            elif change == "value":  # for a number, often one that looks like a number
                fields[i] = (fields[i][0], draw(numbers if i in (1, 3, 4) else values))
            elif change == "name":
                fields[i] = (draw(names), fields[i][1])
            elif change == "drop":
                del fields[i]
            elif change == "double":
                fields.insert(draw(st.integers(0, len(fields))), fields[i])
            else:
                fields.insert(draw(st.integers(0, len(fields) - 1)), fields.pop(i))
    quote_value = draw(quotings)
    return ("tierfs:v1?" + "&".join(f"{quote_plus(n)}={quote_value(v)}" for n, v in fields)
            ).encode()


@settings(max_examples=500)
@given(stub_texts())
@example(b"tierfs:v1?uri=s3%3A%2F%2Fbucket%2Fprefix%2Fx&size=%2B13&etag=e&mode=0644&mtime_ns=1")
def test_whatever_the_parser_takes_writes_back_to_itself(text: bytes) -> None:
    """Any text the parser takes is exactly what encoding its stub writes, and its fields
    are in range: there is no second spelling of a stub to slip past a check."""
    try:
        stub = parse_stub(text, BUCKET)
    except StubError:
        return
    assert stub.encode(BUCKET) == text
    assert 0 <= stub.size <= MAX_SIZE and 0 <= stub.mode <= 0o777
    assert MIN_MTIME_NS <= stub.mtime_ns <= MAX_MTIME_NS


# -- through a mount ----------------------------------------------------------------------------

LOCAL_BAD = {
    "far-future": {"mtime_ns": str(10**30)},
    "huge": {"size": str(2**62)},
    "python-octal": {"mode": "0o644"},
    "setuid": {"mode": "4755"},
    "plus-size": {"size": "+13"},
}


def test_a_refused_stub_leaves_its_directory_listable(tmp_path: Path) -> None:
    cold = tmp_path / "cold"
    cold.mkdir()
    bucket = parse_bucket_uri(f"file://{cold}")
    m = make_mount(tmp_path, "--bucket", str(bucket), "--attr-timeout", "0",
                   "--entry-timeout", "0")
    good = Stub("d/good.bin", 12345, "abc-1", 0o640, 1_600_000_000_123_456_789)
    d = m.warm / "d"
    d.mkdir()
    os.symlink(good.encode(bucket), d / "good.bin")
    (d / "plain.txt").write_bytes(b"warm")
    for name, fields in LOCAL_BAD.items():
        text = good.encode(bucket).decode()
        for field, value in fields.items():
            old = next(p for p in text.split("?", 1)[1].split("&") if p.startswith(field + "="))
            text = text.replace(old, f"{field}={value}")
        os.symlink(text, d / name)
    with running(m):
        listed = os.listdir(m.path / "d")
        assert sorted(listed) == ["good.bin", "plain.txt"]
        st_good = os.stat(m.path / "d" / "good.bin")
        assert (st_good.st_size, stat.S_IMODE(st_good.st_mode), st_good.st_mtime_ns) == \
            (12345, 0o640, good.mtime_ns)
        assert stat.S_ISREG(st_good.st_mode)
        with os.scandir(m.path / "d") as entries:  # as ls -l does: list, then stat each
            sizes = {e.name: e.stat(follow_symlinks=False).st_size for e in entries}
        assert sizes == {"good.bin": 12345, "plain.txt": 4}
        os.stat(m.path / "d")
        for name in LOCAL_BAD:
            with pytest.raises(OSError) as info:
                os.stat(m.path / "d" / name)
            assert info.value.errno == errno.EIO, name
        assert sorted(os.listdir(m.path / "d")) == ["good.bin", "plain.txt"]  # still fine
    assert "refusing stub" in m.log()
