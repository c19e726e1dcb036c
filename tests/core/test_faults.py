"""The fault-injecting store itself: each fault does what the other tests rely on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tierfs.objects.base import (NoSuchObject, ObjectStoreError, TransientError, UploadGone,
                                 parse_bucket_uri)
from tierfs.objects.local import LocalStore

from .faults import FaultStore


@pytest.fixture
def store(tmp_path: Path) -> FaultStore:
    (tmp_path / "cold").mkdir()
    inner = LocalStore(parse_bucket_uri(f"file://{tmp_path / 'cold'}"))
    inner.check()
    return FaultStore(inner)


def test_calls_are_counted_per_method_and_delegated(store: FaultStore, tmp_path: Path) -> None:
    info = store.put("a/b", b"hello")
    assert (tmp_path / "cold" / "a" / "b").read_bytes() == b"hello"
    assert store.head("a/b").etag == info.etag
    assert store.get_range("a/b", 1, 3) == b"ell"
    with pytest.raises(NoSuchObject):
        store.head("missing")
    assert store.calls["put"] == 1 and store.calls["head"] == 2
    assert store.calls["get_range"] == 1
    assert [m for m, _, _ in store.log] == ["put", "head", "get_range", "head"]
    assert store.gets_at("a/b", 1) == 1 and store.gets_at("a/b", 0) == 0


def test_fail_nth_fails_only_that_call(store: FaultStore) -> None:
    store.put("k", b"x")
    store.fail_nth("get_range", 2)
    assert store.get_range("k", 0, 1) == b"x"
    with pytest.raises(TransientError, match="get_range"):
        store.get_range("k", 0, 1)
    assert store.get_range("k", 0, 1) == b"x"
    store.fail_nth("delete", 1, NoSuchObject("injected"))
    with pytest.raises(NoSuchObject):
        store.delete("k")
    assert store.head("k").size == 1  # the failed delete did not reach the folder


def test_fail_always_until_healed(store: FaultStore) -> None:
    store.fail_always("put", ObjectStoreError("down"))
    for _ in range(3):
        with pytest.raises(ObjectStoreError, match="down"):
            store.put("k", b"x")
    with pytest.raises(NoSuchObject):
        store.head("k")
    store.heal("put")
    store.put("k", b"x")
    assert store.head("k").size == 1 and store.calls["put"] == 4


def test_drop_upload_before_a_part_makes_it_gone(store: FaultStore) -> None:
    uid = store.create_multipart("big")
    first = store.upload_part("big", uid, 1, b"a" * 10)
    store.drop_upload_before("upload_part", 1)
    with pytest.raises(UploadGone):
        store.upload_part("big", uid, 2, b"b")
    with pytest.raises(UploadGone):
        store.complete_multipart("big", uid, [(1, first)])
    assert store.list_multipart("") == []


def test_drop_upload_before_complete_and_drop_uploads(store: FaultStore) -> None:
    uid = store.create_multipart("one")
    part = store.upload_part("one", uid, 1, b"data")
    store.drop_upload_before("complete_multipart")
    with pytest.raises(UploadGone):
        store.complete_multipart("one", uid, [(1, part)])
    store.create_multipart("two")
    store.create_multipart("three")
    assert store.drop_uploads() == 2
    assert store.list_multipart("") == []


def test_wrong_head_size_only_after_completion(store: FaultStore) -> None:
    store.put("plain", b"12345")
    uid = store.create_multipart("multi")
    part = store.upload_part("multi", uid, 1, b"123")
    store.wrong_head_size(7)
    info = store.complete_multipart("multi", uid, [(1, part)])
    assert info.size == 10  # the completion answers with a HEAD, as S3's does
    assert store.head("multi").size == 10
    assert store.head("plain").size == 5
    store.heal()
    assert store.head("multi").size == 3


def test_delay_holds_the_call_in_its_thread(store: FaultStore) -> None:
    store.put("k", b"x")
    store.delay("get_range", 0.2)
    done = []
    t = threading.Thread(target=lambda: done.append(store.get_range("k", 0, 1)))
    start = time.monotonic()
    t.start()
    time.sleep(0.05)
    assert done == []  # still sleeping
    t.join()
    assert done == [b"x"] and time.monotonic() - start >= 0.2


def test_unknown_method_is_refused(store: FaultStore) -> None:
    with pytest.raises(ValueError):
        store.fail_nth("get", 1)
    with pytest.raises(ValueError):
        store.drop_upload_before("head")


def test_lose_reply_takes_effect_then_fails(store: FaultStore) -> None:
    uid = store.create_multipart("k")
    part = store.upload_part("k", uid, 1, b"xyz")
    store.lose_reply("complete_multipart")
    with pytest.raises(TransientError, match="lost"):
        store.complete_multipart("k", uid, [(1, part)])
    assert store.head("k").size == 3  # the object was made all the same
    store.wrong_head_size(2)
    assert store.head("k").size == 5  # a completion whose reply was lost counts too
    with pytest.raises(UploadGone):  # and a second completion finds the upload done
        store.complete_multipart("k", uid, [(1, part)])
