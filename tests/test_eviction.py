"""Eviction policies on access traces: the scan-resistance the block cache relies on.

A trace is replayed against a policy and a byte budget exactly as the cache uses them (record
every access; on a miss, weigh the newcomer against victims until it fits, then insert it or
drop it), and the hit ratio is measured.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

from hypothesis import given
from hypothesis import strategies as st

from tierfs.cache.eviction import LRU, TinyLFU, make_policy

CACHE = 400


def replay(name: str, capacity: int, trace: Sequence[Hashable],
           size: dict[Hashable, int] | None = None) -> list[bool]:
    policy = make_policy(name, capacity)
    used = 0
    sizes: dict[Hashable, int] = {}
    hits = []
    for key in trace:
        policy.record(key)
        if key in policy:
            policy.hit(key)
            hits.append(True)
            continue
        hits.append(False)
        need = 1 if size is None else size[key]
        admitted = True
        while used + need > capacity:
            victim = policy.victim()
            assert victim is not None
            if not policy.admits(key, victim):
                admitted = False
                break
            policy.remove(victim)
            used -= sizes.pop(victim)
        if admitted:
            sizes[key] = need
            used += need
            policy.insert(key, need)
        assert used <= capacity
    return hits


def ratio(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits)


def epochs(n: int, count: int, shuffled: bool, seed: int = 7) -> list[list[int]]:
    rng = random.Random(seed)
    keys = list(range(n))
    out = []
    for _ in range(count):
        if shuffled:
            rng.shuffle(keys)
        out.append(list(keys))
    return out


def per_epoch(name: str, eps: list[list[int]]) -> list[float]:
    hits = replay(name, CACHE, [k for ep in eps for k in ep])
    n = len(eps[0])
    return [ratio(hits[i * n:(i + 1) * n]) for i in range(len(eps))]


def test_cyclic_epochs_over_twice_the_cache_keep_a_stable_half() -> None:
    eps = epochs(2 * CACHE, 5, shuffled=False)
    tiny = per_epoch("tinylfu", eps)
    lru = per_epoch("lru", eps)
    assert all(r >= 0.4 for r in tiny[1:]), tiny
    assert all(r <= 0.5 for r in tiny), tiny  # cannot beat the optimum
    assert all(r < 0.05 for r in lru), lru  # what the default protects against


def test_shuffled_epochs_at_least_as_good_as_lru() -> None:
    eps = epochs(2 * CACHE, 6, shuffled=True)
    tiny = per_epoch("tinylfu", eps)
    lru = per_epoch("lru", eps)
    assert sum(tiny[1:]) >= sum(lru[1:]), (tiny, lru)


def test_zipf_at_least_as_good_as_lru() -> None:
    rng = random.Random(3)
    n = 20 * CACHE
    weights = [1 / (i + 1) for i in range(n)]
    trace = rng.choices(range(n), weights=weights, k=60 * CACHE)
    warm = 10 * CACHE
    tiny = ratio(replay("tinylfu", CACHE, trace)[warm:])
    lru = ratio(replay("lru", CACHE, trace)[warm:])
    assert tiny >= lru, (tiny, lru)


def test_a_full_scan_between_uses_leaves_the_hot_set_cached() -> None:
    hot = [f"hot{i}" for i in range(CACHE // 4)]
    scan = [f"scan{i}" for i in range(5 * CACHE)]
    trace = hot * 3 + scan + hot
    hits = replay("tinylfu", CACHE, trace)
    assert all(hits[-len(hot):])
    lru_hits = replay("lru", CACHE, trace)
    assert not any(lru_hits[-len(hot):])  # LRU loses it all


def test_weighted_blocks_never_pass_the_capacity() -> None:
    rng = random.Random(5)
    keys = list(range(300))
    size = {k: rng.randint(1, 50) for k in keys}
    trace = [rng.choice(keys) for _ in range(5000)]
    for name in ("tinylfu", "lru"):
        hits = replay(name, 1000, trace, size)  # replay asserts the budget after every step
        assert 0 < ratio(hits) < 1


@given(st.lists(st.tuples(st.sampled_from(["insert", "hit", "remove", "evict", "record"]),
                          st.integers(0, 20), st.integers(1, 9)), max_size=200),
       st.sampled_from([LRU, TinyLFU]))
def test_policy_bookkeeping(ops: list[tuple[str, int, int]], cls: type) -> None:
    """Whatever the operations, a policy holds exactly the keys inserted and not yet removed,
    and offers only those as victims."""
    policy = cls(40)
    held: set[int] = set()
    for op, key, size in ops:
        if op == "insert" and key not in held:
            policy.insert(key, size)
            held.add(key)
        elif op == "hit" and key in held:
            policy.hit(key)
        elif op == "remove":
            policy.remove(key)
            held.discard(key)
        elif op == "record":
            policy.record(key)
        elif op == "evict":
            victim = policy.victim()
            if held:
                assert victim in held
                policy.remove(victim)
                held.discard(victim)
            else:
                assert victim is None
        assert len(policy) == len(held)
        assert all(k in policy for k in held)
    while held:
        victim = policy.victim()
        held.remove(victim)
        policy.remove(victim)
    assert policy.victim() is None


def test_read_ahead_follows_interleaved_streams_in_one_handle() -> None:
    """Two processes reading one file through one descriptor, in turns: each stream is
    recognised as sequential and its window grows; a random reader gets none."""
    from tierfs.cache.reader import ReadAhead

    ra = ReadAhead(max_window=8)
    windows_a, windows_b = [], []
    for step in range(5):
        windows_a.append(len(ra.advance(step, step)))            # stream A from block 0
        windows_b.append(len(ra.advance(100 + step, 100 + step)))  # stream B from block 100
    assert windows_a == [1, 2, 4, 8, 8]
    assert windows_b[-1] >= 4 and windows_b == sorted(windows_b)
    random_reader = ReadAhead(max_window=8)
    assert [len(random_reader.advance(b, b)) for b in (50, 7, 93, 21)] == [0, 0, 0, 0]
