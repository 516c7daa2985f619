"""CDN invalidation, the pure part: what a change makes stale (`Stale`: the paths a
path-invalidating CDN is asked for, the cache tags a tag-purging one is asked for,
core/cachetags.py), and how that is cut into requests: CloudFront
`CreateInvalidation` batches of paths, or tag purges (hard for what is gone, soft for
what is only stale). No I/O; the requests are sent by core/cdn.py.

CloudFront's rules (Developer Guide, "Invalidating files" and "Concurrent
invalidation request maximum"): a path starts with `/`, is at most 4,000 characters,
and may end with one `*` (a wildcard, never elsewhere); a wildcard also covers every
query-string variant of what it matches. At most 3,000 file paths and 15 wildcard
paths may be in progress per distribution, so one request never carries more.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from core import cachetags, layout

MAX_FILE_PATHS = 3_000  # file paths in progress per distribution (so per request)
MAX_WILDCARD_PATHS = 15  # wildcard paths in progress per distribution
MAX_PATH_CHARS = 4_000
# tags per purge request: one header line well inside Varnish's 8 KB (http_req_hdr_len)
# and Fastly's 256 keys per batch purge
MAX_TAGS = 128

# How long an origin process may answer a scene's version or a clip's readiness as it
# last read it (origin/playback/caches.py re-reads them this often). A purge sent
# sooner after a change could be refilled from the origin with what the change
# replaced, so what is only stale is purged this long after the change.
ORIGIN_RECHECK_SECONDS = 1.0

# Answers worth retrying with backoff: throttled, too many invalidations in progress
# (they finish within minutes), or the service failing for a moment.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "TooManyInvalidationsInProgress",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
    }
)


def is_wildcard(path: str) -> bool:
    return path.endswith("*")


def check_path(path: str) -> str:
    """`path` if CloudFront accepts it as an invalidation path, else ValueError."""
    if not path.startswith("/") or len(path) > MAX_PATH_CHARS:
        raise ValueError(f"invalid invalidation path {path!r}")
    if "*" in path[:-1] or any(c <= " " or c == "\x7f" for c in path):
        raise ValueError(f"invalid invalidation path {path!r}: '*' only at the end, no spaces")
    return path


def scene_deleted_paths(scene_id: str) -> list[str]:
    """Everything a deleted scene had on the CDN: media, exports, assets."""
    return [f"/v/{scene_id}/*", f"/e/{scene_id}/*", f"/a/scenes/{scene_id}/*"]


def segment_paths(scene_id: str, segment_id: str) -> list[str]:
    """Every file of one clip (one wildcard instead of hundreds of `.ts` paths)."""
    return [f"/v/{scene_id}/{segment_id}/*"]


def scene_document_paths(
    scene_id: str, profiles: Iterable[str], *, query_variants: bool
) -> list[str]:
    """The stitched scene documents a publish or a removal changes: master, one
    variant per profile, storyboard. With `query_variants` (signing on: the CDN keeps
    one copy per signed query) each path ends with `*` to cover them all."""
    names = ["master.m3u8", *(f"{p}.m3u8" for p in sorted(set(profiles))), "storyboard.vtt"]
    tail = "*" if query_variants else ""
    return [f"/v/{scene_id}/{name}{tail}" for name in names]


def poster_paths(scene_id: str) -> list[str]:
    return [f"/a/scenes/{scene_id}/poster.jpg"]


# --- what a change makes stale, for either kind of CDN -------------------------------


@dataclass(frozen=True)
class Stale:
    """What one change makes stale on the CDN: `paths` for a CDN that invalidates
    paths (CloudFront), cache tags for one that purges by tag. `tags` name what changed
    (purged soft where the CDN can: a stale copy may still be served while it is
    fetched again), `gone` what must not be served at all any more (a deletion: purged
    hard, no stale copy kept)."""

    paths: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    gone: frozenset[str] = frozenset()

    def __or__(self, other: Stale) -> Stale:
        return Stale(self.paths | other.paths, self.tags | other.tags, self.gone | other.gone)

    def __bool__(self) -> bool:
        return bool(self.paths or self.tags or self.gone)


def stale(paths: Iterable[str] = (), tags: Iterable[str] = (), gone: Iterable[str] = ()) -> Stale:
    return Stale(frozenset(paths), frozenset(tags), frozenset(gone))


def scene_deleted(scene_id: str) -> Stale:
    """A deleted scene: everything it had on the CDN is gone."""
    return stale(scene_deleted_paths(scene_id), gone=[cachetags.scene(scene_id)])


def segment_removed(scene_id: str, segment_id: str) -> Stale:
    """A removed clip's files, once deleted (its grace period over)."""
    return stale(segment_paths(scene_id, segment_id), gone=[cachetags.segment(segment_id)])


def scene_documents(scene_id: str, profiles: Iterable[str], *, query_variants: bool) -> Stale:
    """The stitched documents after a clip was published, refined or removed."""
    return stale(
        scene_document_paths(scene_id, profiles, query_variants=query_variants),
        [cachetags.scene_documents(scene_id)],
    )


def poster(scene_id: str) -> Stale:
    """The scene's poster, written again (its first clip changed)."""
    return stale(poster_paths(scene_id), [cachetags.asset(layout.poster_key(scene_id))])


def segment_documents(scene_id: str, segment_id: str, profiles: Iterable[str]) -> Stale:
    """A refined clip's own playlists (they name the new generation's segments) and
    its thumbnails at a moment."""
    names = ["master.m3u8", *(f"{p}.m3u8" for p in sorted(set(profiles)))]
    return stale(
        [layout.cdn_path(scene_id, segment_id, name) for name in names],
        [cachetags.segment_documents(segment_id)],
    )


def generation_gone(
    scene_id: str, segment_id: str, profiles: Iterable[str], generation: int
) -> Stale:
    """A clip's media segments of `generation`, deleted after a refinement's grace
    period: one wildcard per rendition (CloudFront: `*` at the end of a path)."""
    stems = sorted({layout.generation_stem(p, generation) for p in profiles})
    return stale(
        [layout.cdn_path(scene_id, segment_id, stem) + "*" for stem in stems],
        gone=[cachetags.generation(segment_id, generation)],
    )


def captions_changed(scene_id: str, segment_id: str) -> Stale:
    """A clip's captions written or deleted: the stitched documents (a new scene
    version) and the clip's own playlists name other subtitles files now (those
    files are named by the captions' revision, so nothing else is stale)."""
    return stale(
        [f"/v/{scene_id}/*.m3u8*", layout.cdn_path(scene_id, segment_id, "*.m3u8*")],
        [cachetags.scene_documents(scene_id), cachetags.segment_documents(segment_id)],
    )


def asset_changed(key: str, *, deleted: bool = False) -> Stale:
    """An asset written again under its key (or deleted: gone)."""
    tag = [cachetags.asset(key)]
    path = [layout.asset_path(key)]
    return stale(path, gone=tag) if deleted else stale(path, tag)


def minimal(paths: Iterable[str]) -> list[str]:
    """The paths, checked, without duplicates and without those a wildcard of the
    set already covers, sorted."""
    unique = sorted({check_path(p) for p in paths})
    wildcards = [p[:-1] for p in unique if is_wildcard(p)]
    return [p for p in unique if not any(p != w + "*" and p.startswith(w) for w in wildcards)]


def plan(paths: Iterable[str]) -> list[tuple[str, ...]]:
    """The requests that invalidate `paths`: as few as CloudFront's limits allow (at
    most MAX_FILE_PATHS file paths and MAX_WILDCARD_PATHS wildcards each), covered
    paths dropped."""
    paths = minimal(paths)
    files = [p for p in paths if not is_wildcard(p)]
    wildcards = [p for p in paths if is_wildcard(p)]
    count = max(-(-len(files) // MAX_FILE_PATHS), -(-len(wildcards) // MAX_WILDCARD_PATHS))
    return [
        tuple(
            files[i * MAX_FILE_PATHS : (i + 1) * MAX_FILE_PATHS]
            + wildcards[i * MAX_WILDCARD_PATHS : (i + 1) * MAX_WILDCARD_PATHS]
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class Request:
    """One invalidation request: CloudFront paths, or cache tags to purge (`soft`:
    keeping a stale copy for grace)."""

    items: tuple[str, ...]
    soft: bool = False


def path_requests(change: Stale) -> list[Request]:
    """A path-invalidating CDN's requests for `change` (`plan` of its paths)."""
    return [Request(r) for r in plan(change.paths)]


def check_tag(tag: str) -> str:
    """`tag` if it is a cache tag (core/cachetags.py's alphabet), else ValueError."""
    if not tag or len(tag) > 256 or not all(c.isalnum() or c in "._-" for c in tag):
        raise ValueError(f"invalid cache tag {tag!r}")
    return tag


def tag_requests(change: Stale) -> list[Request]:
    """A tag-purging CDN's requests for `change`: what is gone purged hard first, then
    what is only stale (and not gone too) purged soft, at most MAX_TAGS per request,
    sorted."""
    gone = sorted({check_tag(t) for t in change.gone})
    soft = sorted({check_tag(t) for t in change.tags} - set(gone))
    return [
        Request(tuple(tags[i : i + MAX_TAGS]), soft=is_soft)
        for tags, is_soft in ((gone, False), (soft, True))
        for i in range(0, len(tags), MAX_TAGS)
    ]


def caller_reference(now: datetime | None = None, token: str | None = None) -> str:
    """A CallerReference unique to one request (CloudFront treats a repeated one as
    the same request): UTC time to the microsecond and 48 random bits."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"storyforge-{stamp}-{token or secrets.token_hex(6)}"


def paths_of(batches: Sequence[Sequence[str]]) -> int:
    return sum(len(b) for b in batches)
