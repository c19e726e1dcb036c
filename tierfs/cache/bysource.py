"""A mapping of block keys that also finds the keys of one source.

A block key is its source's id followed by the block's number. Whatever is done to a whole
source (how much of it is hot, pin, evict) must cost what the cache holds of it: a stub on the
shared warm tree may claim any size, and walking block numbers up to it would hold the event
loop for as long as the claim is large.
"""

from __future__ import annotations

from typing import Any, TypeVar

V = TypeVar("V")


class BySource(dict[bytes, V]):
    """A dict whose keys start with a source id of ``id_bytes`` bytes, indexed by that id.
    Every way of changing it keeps the index (lookups are a plain dict's, at its speed)."""

    def __init__(self, id_bytes: int) -> None:
        super().__init__()
        self._id_bytes = id_bytes
        self._by_source: dict[bytes, set[bytes]] = {}

    def of_source(self, source_id: bytes) -> list[bytes]:
        """The keys of a source, in order (block order, numbers being big-endian)."""
        return sorted(self._by_source.get(source_id, ()))

    def __setitem__(self, key: bytes, value: V) -> None:
        super().__setitem__(key, value)
        self._by_source.setdefault(key[:self._id_bytes], set()).add(key)

    def __delitem__(self, key: bytes) -> None:
        super().__delitem__(key)
        self._unindex(key)

    def pop(self, key: bytes, *default: V | None) -> V | None:  # type: ignore[override]
        if key in self:
            self._unindex(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[bytes, V]:
        key, value = super().popitem()
        self._unindex(key)
        return key, value

    def setdefault(self, key: bytes, default: V) -> V:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: V) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> BySource[V]:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        super().clear()
        self._by_source.clear()

    def _unindex(self, key: bytes) -> None:
        source_id = key[:self._id_bytes]
        keys = self._by_source.get(source_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_source[source_id]
