"""The hot capacity the cache can really use.

``hot_capacity`` is resolved once, at mount, against the hot disk's size ("50%" of a 252 GiB
disk is 126 GiB); other files on that disk may leave less room than that. What the cache can
still grow to is what it holds now plus the disk's free space, so that, not the configured
figure, is the ceiling a user should be shown when it is the lower one.
"""

from __future__ import annotations


def usable_capacity(capacity: int, cached: int, disk_free: int) -> int:
    """The capacity the cache can reach: the configured one, or less when the disk's free
    space (plus the bytes the cache already holds there) is smaller."""
    return max(0, min(capacity, cached + max(0, disk_free)))
