"""CDN invalidation, the pure part: which paths a change of a scene makes stale, and
how a set of paths is cut into CloudFront `CreateInvalidation` requests. No I/O; the
requests are sent by core/cdn.py.

CloudFront's rules (Developer Guide, "Invalidating files" and "Concurrent
invalidation request maximum"): a path starts with `/`, is at most 4,000 characters,
and may end with one `*` (a wildcard, never elsewhere); a wildcard also covers every
query-string variant of what it matches. At most 3,000 file paths and 15 wildcard
paths may be in progress per distribution, so one request never carries more.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

MAX_FILE_PATHS = 3_000  # file paths in progress per distribution (so per request)
MAX_WILDCARD_PATHS = 15  # wildcard paths in progress per distribution
MAX_PATH_CHARS = 4_000

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


def caller_reference(now: datetime | None = None, token: str | None = None) -> str:
    """A CallerReference unique to one request (CloudFront treats a repeated one as
    the same request): UTC time to the microsecond and 48 random bits."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"storyforge-{stamp}-{token or secrets.token_hex(6)}"


def paths_of(batches: Sequence[Sequence[str]]) -> int:
    return sum(len(b) for b in batches)
