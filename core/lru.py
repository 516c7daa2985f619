"""A bounded in-process mapping that forgets the least recently used entry, with an
optional time to live and a grace for stale reads, counting hits and misses: the
read caches of the origin (origin/playback/caches.py) and its verified-token memory
(origin/http/auth.py)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """A bounded mapping that forgets the least recently used entry; entries may
    expire after `ttl` seconds (None: never) and are then kept `keep` seconds more for
    `stale` lookups."""

    def __init__(
        self,
        capacity: int,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        keep: float = 0.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._data: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._capacity = capacity
        self._ttl = ttl
        self._keep = keep
        self._clock = clock
        self.hits = 0  # lookups answered (for /metrics)
        self.misses = 0  # lookups not answered: absent or expired

    def get(self, key: Hashable) -> V | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        stored_at, value = item
        if self._ttl is not None:
            age = self._clock() - stored_at
            if age > self._ttl:
                if age > self._ttl + self._keep:
                    del self._data[key]
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
        self._data[key] = (self._clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self._capacity:
            self._data.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        self._data.pop(key, None)

    def discard_where(self, doomed: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key is `doomed`; returns how many (a scan: for
        rare events such as a deletion)."""
        keys = [k for k in self._data if doomed(k)]
        for k in keys:
            del self._data[k]
        return len(keys)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
