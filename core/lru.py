"""A bounded in-process mapping that forgets the least recently used entry, with an
optional time to live and a grace for stale reads, counting hits and misses: the
read caches of the origin (origin/playback/caches.py), its thumbnails
(origin/playback/stills.py) and its verified-token memory (origin/http/auth.py).
Bounded by entries, and by bytes too when given a `weigh` function (what an entry
holds, estimated: `len` of a body, `core.playlists.clip_bytes` of clip rows)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

#: what one entry costs beside its value (key, tuple, dict slot), roughly
ENTRY_OVERHEAD = 200


def weigh_bytes(body: bytes) -> int:
    """The weight of a cached body."""
    return len(body) + ENTRY_OVERHEAD


class LRU(Generic[V]):
    """A bounded mapping that forgets the least recently used entry; entries may
    expire after `ttl` seconds (None: never) and are then kept `keep` seconds more for
    `stale` lookups. With `max_bytes`, the entries' weights (`weigh(value)`) add up
    to at most that many: older entries go first, and a value heavier than the whole
    budget is not kept."""

    def __init__(
        self,
        capacity: int,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        keep: float = 0.0,
        *,
        max_bytes: int | None = None,
        weigh: Callable[[V], int] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if (max_bytes is None) != (weigh is None):
            raise ValueError("max_bytes and weigh go together")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._data: OrderedDict[Hashable, tuple[float, V, int]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl
        self._keep = keep
        self._clock = clock
        self._max_bytes = max_bytes
        self._weigh = weigh
        self.bytes = 0  # the entries' weights (0 without `weigh`)
        self.hits = 0  # lookups answered (for /metrics)
        self.misses = 0  # lookups not answered: absent or expired

    def get(self, key: Hashable) -> V | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        stored_at, value, _ = item
        if self._ttl is not None:
            age = self._clock() - stored_at
            if age > self._ttl:
                if age > self._ttl + self._keep:
                    self.discard(key)
                self.misses += 1
                return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def stale(self, key: Hashable, max_age: float) -> V | None:
        """The entry stored at most `max_age` seconds ago, expired or not (for answers
        while the source cannot be read); not counted as a hit or miss."""
        item = self._data.get(key)
        if item is None or self._clock() - item[0] > max_age:
            return None
        return item[1]

    def put(self, key: Hashable, value: V) -> None:
        self.discard(key)
        weight = self._weigh(value) if self._weigh is not None else 0
        if self._max_bytes is not None and weight > self._max_bytes:
            return
        self._data[key] = (self._clock(), value, weight)
        self.bytes += weight
        while len(self._data) > self._capacity or (
            self._max_bytes is not None and self.bytes > self._max_bytes
        ):
            self.bytes -= self._data.popitem(last=False)[1][2]

    def discard(self, key: Hashable) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self.bytes -= item[2]

    def discard_where(self, doomed: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key is `doomed`; returns how many (a scan: for
        rare events such as a deletion)."""
        keys = [k for k in self._data if doomed(k)]
        for k in keys:
            self.discard(k)
        return len(keys)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)
