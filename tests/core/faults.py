"""An object store that wraps another one and misbehaves on request, for tests of the core.

Every call is counted per method and then checked against the faults armed for that method:
fail the Nth call from now, fail every call until healed, drop the unfinished multipart upload
just before a call (the store then answers UploadGone by itself), delay, or, after a multipart
upload completes, report a wrong size from ``head`` for its key, or hold a call's reply after
it took effect until the test releases it. Errors raised are the store interface's own
(``TransientError`` by default), as the real stores raise them after retries.
Calls come from the cold tier's worker threads, so the bookkeeping is under a lock.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tierfs.objects.base import ObjectInfo, ObjectStore, TransientError

METHODS = ("check", "head", "get_range", "put", "list_objects", "delete", "create_multipart",
           "upload_part", "complete_multipart", "abort_multipart", "list_multipart",
           "has_parts", "replace_metadata")


class Hold:
    """A call held after it took effect in the store, before its reply goes back: ``reached``
    is set when it got there, and it goes on when ``release`` is called (or after
    ``timeout`` seconds, so that a failed test cannot leave a worker thread stuck)."""

    def __init__(self, timeout: float) -> None:
        self.reached = threading.Event()
        self._go = threading.Event()
        self._timeout = timeout

    def release(self) -> None:
        self._go.set()

    def wait(self) -> None:
        self.reached.set()
        self._go.wait(self._timeout)


@dataclasses.dataclass
class _Rule:
    """One armed fault of one method."""

    kind: str  # "nth", "always", "drop", "lose_reply"
    at: int = 0  # for "nth" and "drop": the call number (of that method) it fires on
    error: BaseException | None = None


class FaultStore(ObjectStore):
    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner.uri)
        self.inner = inner
        self.max_name_bytes = inner.max_name_bytes
        self.part_checksum = inner.part_checksum
        self.calls: collections.Counter[str] = collections.Counter()
        #: Every call in order: (method, key or prefix, offset of a ranged GET or number of a
        #: part, else None).
        self.log: list[tuple[str, Any, Any]] = []
        self._rules: dict[str, list[_Rule]] = collections.defaultdict(list)
        self._delays: dict[str, float] = {}
        #: Keys completed by a multipart upload whose ``head`` lies about the size, by this much.
        self._wrong_size: int = 0
        self._completed: set[str] = set()
        self._holds: dict[str, tuple[int, Hold]] = {}
        self._lock = threading.Lock()

    # -- arming -----------------------------------------------------------------------------

    def _check_name(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"no store method {method!r}")

    def fail_nth(self, method: str, n: int = 1, error: BaseException | None = None) -> None:
        """Fail the ``n``-th call of ``method`` from now (1: the next one)."""
        self._check_name(method)
        with self._lock:
            self._rules[method].append(_Rule("nth", self.calls[method] + n, error))

    def lose_reply(self, method: str, n: int = 1) -> None:
        """Let the ``n``-th call of ``method`` from now take effect in the store, then fail it
        as if its reply had been lost on the way back."""
        self._check_name(method)
        with self._lock:
            self._rules[method].append(_Rule("lose_reply", self.calls[method] + n))

    def fail_always(self, method: str, error: BaseException | None = None) -> None:
        """Fail every call of ``method`` until ``heal``."""
        self._check_name(method)
        with self._lock:
            self._rules[method].append(_Rule("always", 0, error))

    def heal(self, method: str | None = None) -> None:
        """Disarm the faults of one method, or of all."""
        with self._lock:
            if method is None:
                self._rules.clear()
                self._delays.clear()
                self._wrong_size = 0
                for _, hold in self._holds.values():
                    hold.release()
                self._holds.clear()
            else:
                held = self._holds.pop(method, None)
                if held is not None:
                    held[1].release()
                self._rules.pop(method, None)
                self._delays.pop(method, None)

    def drop_upload_before(self, method: str, n: int = 1) -> None:
        """Just before the ``n``-th call of ``method`` from now (``upload_part`` or
        ``complete_multipart``), abort that upload behind the caller's back, as a bucket
        lifecycle rule would: the call itself then finds it gone."""
        if method not in ("upload_part", "complete_multipart"):
            raise ValueError("only upload_part and complete_multipart name an upload")
        with self._lock:
            self._rules[method].append(_Rule("drop", self.calls[method] + n))

    def drop_uploads(self, prefix: str = "") -> int:
        """Abort every unfinished upload under ``prefix`` now; returns how many."""
        found = self.inner.list_multipart(prefix)
        for key, upload_id in found:
            self.inner.abort_multipart(key, upload_id)
        return len(found)

    def delay(self, method: str, seconds: float) -> None:
        """Make every call of ``method`` take ``seconds`` longer (in its worker thread)."""
        self._check_name(method)
        with self._lock:
            self._delays[method] = seconds

    def hold_after(self, method: str, n: int = 1, timeout: float = 20.0) -> Hold:
        """Let the ``n``-th call of ``method`` from now take effect in the store, then hold its
        reply until ``release`` (a reply slow to come back, with the change already made)."""
        self._check_name(method)
        hold = Hold(timeout)
        with self._lock:
            self._holds[method] = (self.calls[method] + n, hold)
        return hold

    def wrong_head_size(self, delta: int = 1) -> None:
        """From now on, ``head`` of a key completed by a multipart upload, and the completion
        itself, report its size off by ``delta`` (a store answering from a stale replica, or
        a proxy that answers HEAD with a wrong Content-Length)."""
        with self._lock:
            self._wrong_size = delta

    # -- the interface ----------------------------------------------------------------------

    def gets_at(self, key: str, offset: int) -> int:
        """Ranged GETs of ``key`` starting at ``offset`` so far."""
        with self._lock:
            return sum(1 for m, k, o in self.log if m == "get_range" and k == key and o == offset)

    def _enter(self, method: str, args: tuple[Any, ...]) -> tuple[_Rule | None, Hold | None]:
        """Count and log a call; sleep its delay; raise its fault, or return a fault that
        fires after the call, and the hold its reply waits on."""
        extra = args[1] if method == "get_range" else args[2] if method == "upload_part" \
            else None
        with self._lock:
            self.calls[method] += 1
            number = self.calls[method]
            self.log.append((method, args[0] if args else None, extra))
            delay = self._delays.get(method, 0.0)
            fire: _Rule | None = None
            for rule in self._rules.get(method, []):
                if rule.kind == "always" or rule.at == number:
                    fire = rule
                    break
            if fire is not None and fire.kind != "always":
                self._rules[method].remove(fire)
            hold: Hold | None = None
            if method in self._holds and self._holds[method][0] == number:
                hold = self._holds.pop(method)[1]
        if delay:
            time.sleep(delay)
        if fire is None or fire.kind == "lose_reply":
            return fire, hold
        if fire.kind == "drop":
            key, upload_id = args[0], args[1]
            self.inner.abort_multipart(key, upload_id)
            return None, hold
        raise fire.error if fire.error is not None else \
            TransientError(f"injected failure of {method} (call {number})")

    def _call(self, method: str, *args: Any) -> Any:
        after, hold = self._enter(method, args)
        result = getattr(self.inner, method)(*args)
        if method == "complete_multipart":
            with self._lock:
                self._completed.add(args[0])  # (whether its reply arrives or not)
        if hold is not None:
            hold.wait()
        if after is not None:
            raise TransientError(f"injected: the reply to {method} was lost")
        return result

    def check(self) -> None:
        self._call("check")

    def head(self, key: str) -> ObjectInfo:
        info: ObjectInfo = self._call("head", key)
        with self._lock:
            delta = self._wrong_size if key in self._completed else 0
        return dataclasses.replace(info, size=info.size + delta) if delta else info

    def get_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        data: bytes = self._call("get_range", key, start, length, etag)
        return data

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None
            ) -> ObjectInfo:
        info: ObjectInfo = self._call("put", key, data, metadata)
        return info

    def replace_metadata(self, key: str, etag: str, metadata: Mapping[str, str]) -> ObjectInfo:
        info: ObjectInfo = self._call("replace_metadata", key, etag, metadata)
        return info

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        self._enter("list_objects", (prefix,))
        return self.inner.list_objects(prefix)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def create_multipart(self, key: str, metadata: Mapping[str, str] | None = None,
                         checksum: str | None = None) -> str:
        upload_id: str = self._call("create_multipart", key, metadata, checksum)
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    checksum: str | None = None) -> str:
        receipt: str = self._call("upload_part", key, upload_id, number, data, checksum)
        return receipt

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]
                           ) -> ObjectInfo:
        info: ObjectInfo = self._call("complete_multipart", key, upload_id, parts)
        with self._lock:  # (S3's completion answers with a HEAD of the new object)
            delta = self._wrong_size
        return dataclasses.replace(info, size=info.size + delta) if delta else info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._call("abort_multipart", key, upload_id)

    def list_multipart(self, prefix: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = self._call("list_multipart", prefix)
        return found

    def has_parts(self, key: str, upload_id: str) -> bool:
        return bool(self._call("has_parts", key, upload_id))

