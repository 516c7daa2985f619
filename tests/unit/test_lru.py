"""core/lru.py: bounded by entries, by bytes with a weight, expiry and stale reads."""

from __future__ import annotations

import pytest

from core.lru import ENTRY_OVERHEAD, LRU, weigh_bytes


def test_entries_bound_forgets_the_least_recently_used():
    lru: LRU[int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the least recently used
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3
    assert (lru.hits, lru.misses) == (3, 1)


def test_bytes_bound_counts_weights_and_forgets_oldest_first():
    each = 100 + ENTRY_OVERHEAD
    lru: LRU[bytes] = LRU(1000, max_bytes=3 * each, weigh=weigh_bytes)
    for key in "abc":
        lru.put(key, b"x" * 100)
    assert lru.bytes == 3 * each and len(lru) == 3
    lru.put("d", b"x" * 100)
    assert lru.get("a") is None and len(lru) == 3 and lru.bytes == 3 * each
    lru.put("b", b"y" * 250)  # replaced: its old weight is given back, two older go
    assert lru.get("b") == b"y" * 250
    assert lru.bytes == sum(weigh_bytes(v) for v in (lru.get("d"), b"y" * 250) if v)
    assert lru.get("c") is None


def test_a_value_heavier_than_the_budget_is_not_kept():
    lru: LRU[bytes] = LRU(10, max_bytes=1000, weigh=weigh_bytes)
    lru.put("small", b"s")
    lru.put("small", b"x" * 5000)  # replacing with a giant drops the key altogether
    assert lru.get("small") is None and lru.bytes == 0 and len(lru) == 0
    nothing: LRU[bytes] = LRU(10, max_bytes=0, weigh=weigh_bytes)  # THUMBNAIL_CACHE_MB=0
    nothing.put("k", b"")
    assert nothing.get("k") is None


def test_discards_and_expiry_give_their_bytes_back():
    now = [0.0]
    lru: LRU[bytes] = LRU(10, ttl=1.0, clock=lambda: now[0], max_bytes=10**6, weigh=weigh_bytes)
    for key in ("s1", "s2", "t1"):
        lru.put(key, b"x" * 10)
    lru.discard("t1")
    assert lru.discard_where(lambda k: str(k).startswith("s")) == 2
    assert lru.bytes == 0
    lru.put("old", b"x" * 10)
    now[0] = 5.0
    assert lru.get("old") is None and lru.bytes == 0  # expired past its keep: dropped
    lru.put("again", b"x")
    lru.clear()
    assert lru.bytes == 0 and len(lru) == 0


def test_bytes_and_weigh_go_together():
    with pytest.raises(ValueError):
        LRU(1, max_bytes=10)
    with pytest.raises(ValueError):
        LRU(1, weigh=weigh_bytes)
