"""In-process caches of the read path: built stitched playlists keyed by
(scene, version, file), per-segment playlists as signing templates (signing on), the
last scene JSON rows read (for outages only),
and short-lived answers to "what version is this scene at"
and "is this segment ready", so a warm request touches neither Postgres nor storage.

Scene playlists are rebuilt only when the scene's version changes; the version is
re-read at most every `version_ttl` seconds (scene playlists are cached downstream
for a few seconds anyway, see layout.SCENE_PLAYLIST_CACHE), and so is readiness.
A deleted scene or a removed clip is forgotten at once when its change is notified
(`forget_scene`, origin/changes.py); the TTLs bound it when a notification is lost.

An expired version or readiness is kept `keep` seconds longer: while Postgres cannot be
reached, the read path answers from it (`ReadCaches.last_known`, `STALE_IF_DB_DOWN`)
instead of failing. A committed deletion or removal still forgets it at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from origin.catalog import SceneView

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


@dataclass(frozen=True, slots=True)
class Built:
    """A built scene document: its bytes and strong validator. With signing on, the
    bytes are a template whose URIs carry marks (origin.signing.render fills in the
    viewer's query per request), so the document is never rebuilt per viewer."""

    body: bytes
    etag: str


@dataclass
class ReadCaches:
    playlists: LRU[Built]
    versions: LRU[int]  # scene id -> version (-1: no live scene)
    ready: LRU[bool]  # (scene id, segment id) -> ready and live
    # videos-bucket key -> a per-segment playlist / storyboard VTT read from storage
    # once and kept as a signing template (those files are immutable once published)
    segment_docs: LRU[Built]
    # scene id -> the rows of the scene JSON (None: no live scene), read every time and
    # kept only to answer while Postgres is unreachable
    views: LRU[SceneView | None]
    # how old a version or readiness may be when answered while Postgres is down
    stale_seconds: float = 0.0
    stale_answers: int = 0  # answers made from such stale entries (for /metrics)

    def last_known(self, cache: LRU[V], key: Hashable) -> V | None:
        """What `cache` last knew of `key`, if not older than `stale_seconds`; for
        answering while the database cannot say (counted in `stale_answers`)."""
        value = cache.stale(key, self.stale_seconds)
        if value is not None:
            self.stale_answers += 1
        return value


def new_read_caches(
    entries: int,
    version_ttl: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    stale_seconds: float = 0.0,
) -> ReadCaches:
    keep = max(0.0, stale_seconds - version_ttl)
    return ReadCaches(
        playlists=LRU(entries),
        versions=LRU(max(1024, entries), ttl=version_ttl, clock=clock, keep=keep),
        ready=LRU(max(4096, entries * 4), ttl=version_ttl, clock=clock, keep=keep),
        segment_docs=LRU(entries),
        views=LRU(min(entries, 256), ttl=0.0, clock=clock, keep=stale_seconds),
        stale_seconds=stale_seconds,
    )


def forget_scene(caches: ReadCaches, scene_id: str | None) -> None:
    """Forget what the caches know of a scene whose clips changed (deleted, a clip
    removed): its version, its segments' readiness, its built documents. None: of
    every scene (after notifications may have been missed)."""
    if scene_id is None:
        caches.versions.clear()
        caches.ready.clear()
        caches.views.clear()
        return
    caches.versions.discard(scene_id)
    caches.views.discard(scene_id)
    caches.ready.discard_where(lambda key: isinstance(key, tuple) and key[0] == scene_id)
    caches.playlists.discard_where(lambda key: isinstance(key, tuple) and key[0] == scene_id)
