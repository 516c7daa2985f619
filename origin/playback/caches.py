"""In-process caches of the read path: built stitched playlists keyed by
(scene, version, file), per-segment playlists as signing templates (signing on), the
last scene JSON rows read (for outages only),
and short-lived answers to "what version is this scene at"
and "is this segment ready", so a warm request touches neither Postgres nor storage.

Scene playlists are rebuilt only when the scene's version changes; the version is
re-read at most every `version_ttl` seconds (scene playlists are cached downstream
for a few seconds anyway, see layout.SCENE_PLAYLIST_CACHE), and so is readiness.
A deleted scene or a removed clip is forgotten at once when its change is notified
(`forget_scene`, core/listen.py); the TTLs bound it when a notification is lost.

An expired version or readiness is kept `keep` seconds longer: while Postgres cannot be
reached, the read path answers from it instead of failing (`ReadCaches.known`, the one
owner of that rule for the app and the fast path alike; `STALE_IF_DB_DOWN`). A committed
deletion or removal still forgets it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core.invalidation import ORIGIN_RECHECK_SECONDS
from core.lru import ENTRY_OVERHEAD, LRU, V, weigh_bytes
from core.metrics import family
from core.playlists import clip_bytes

if TYPE_CHECKING:
    from core.catalog import SceneView


@dataclass(frozen=True, slots=True)
class Built:
    """A built scene document: its bytes and strong validator. With signing on, the
    bytes are a template whose URIs carry marks (core.signing.render fills in the
    viewer's query per request), so the document is never rebuilt per viewer."""

    body: bytes
    etag: str


@dataclass
class ReadCaches:
    playlists: LRU[Built]
    versions: LRU[int]  # scene id -> version (-1: no live scene)
    ready: LRU[int]  # (scene id, segment id) -> its generation when served, else 0
    # (segment id, generation, file name) -> a per-segment playlist / storyboard VTT
    # built from its rows once and kept as a signing template
    segment_docs: LRU[Built]
    # scene id -> the rows of the scene JSON (None: no live scene), read every time and
    # kept only to answer while Postgres is unreachable
    views: LRU[SceneView | None]
    # how old a version or readiness may be when answered while Postgres is down
    stale_seconds: float = 0.0
    stale_answers: int = 0  # answers made from such stale entries (for /metrics)

    def known(self, cache: LRU[V], key: Hashable, db_down: Callable[[], bool]) -> V | None:
        """The stale-read rule: what the read path may answer for `key` without asking
        Postgres. The entry while it is fresh; once expired, while Postgres cannot be
        asked (`db_down()`: it is unreachable, or did not answer in time), the entry
        stored at most `stale_seconds` ago (STALE_IF_DB_DOWN), counted in
        `stale_answers`; else None (ask Postgres, or answer 503)."""
        value = cache.get(key)
        if value is not None or not db_down():
            return value
        value = cache.stale(key, self.stale_seconds)
        if value is not None:
            self.stale_answers += 1
        return value


#: READ_CACHE_MB's default: what the caches holding documents and clip rows may hold
#: together, in bytes
READ_CACHE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class Budgets:
    """READ_CACHE_MB shared out (bytes): half for built stitched documents (a
    10,000-clip scene's playlist is ~1 MB), a quarter for the scene rows kept for
    outages, an eighth for per-clip documents, an eighth for the clips thumbnails are
    placed on (origin/playback/stills.py: half per scene, half per clip)."""

    playlists: int
    views: int
    segment_docs: int
    stills_clips: int

    @classmethod
    def of(cls, total: int) -> Budgets:
        return cls(total // 2, total // 4, total // 8, total // 8)


def _doc_bytes(built: Built) -> int:
    return weigh_bytes(built.body) + len(built.etag)


def _view_bytes(view: SceneView | None) -> int:
    if view is None:
        return ENTRY_OVERHEAD
    return ENTRY_OVERHEAD + sum(clip_bytes(c.clip) + ENTRY_OVERHEAD for c in view.clips)


def new_read_caches(
    entries: int,
    version_ttl: float = ORIGIN_RECHECK_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    stale_seconds: float = 0.0,
    max_bytes: int = READ_CACHE_BYTES,
) -> ReadCaches:
    """The read caches: `entries` documents at most (PLAYLIST_CACHE_ENTRIES), and
    `max_bytes` (READ_CACHE_MB) of documents and rows at most, shared by `Budgets`."""
    keep = max(0.0, stale_seconds - version_ttl)
    budgets = Budgets.of(max_bytes)
    return ReadCaches(
        playlists=LRU(entries, max_bytes=budgets.playlists, weigh=_doc_bytes),
        versions=LRU(max(1024, entries), ttl=version_ttl, clock=clock, keep=keep),
        ready=LRU(max(4096, entries * 4), ttl=version_ttl, clock=clock, keep=keep),
        segment_docs=LRU(entries, max_bytes=budgets.segment_docs, weigh=_doc_bytes),
        views=LRU(
            min(entries, 256),
            ttl=0.0,
            clock=clock,
            keep=stale_seconds,
            max_bytes=budgets.views,
            weigh=_view_bytes,
        ),
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


_WEIGHED = ("playlists", "segment_docs", "views")


def cache_families(caches: ReadCaches) -> list[Metric]:
    named: dict[str, LRU[Any]] = {
        "playlists": caches.playlists,
        "versions": caches.versions,
        "ready": caches.ready,
        "segment_docs": caches.segment_docs,
        "views": caches.views,
    }
    return [
        family(
            GaugeMetricFamily,
            "storyforge_read_cache_entries",
            "Entries in the read-path caches",
            ["cache"],
            (((name,), len(lru)) for name, lru in named.items()),
        ),
        family(
            GaugeMetricFamily,
            "storyforge_read_cache_bytes",
            "What the read-path caches of documents and rows hold, estimated (bytes; "
            "READ_CACHE_MB bounds them)",
            ["cache"],
            (((name,), lru.bytes) for name, lru in named.items() if name in _WEIGHED),
        ),
        family(
            CounterMetricFamily,
            "storyforge_read_cache_lookups",
            "Read-path cache lookups, by cache and result (hit, miss: absent or expired)",
            ["cache", "result"],
            [
                ((name, result), n)
                for name, lru in named.items()
                for result, n in (("hit", lru.hits), ("miss", lru.misses))
            ],
        ),
    ]
