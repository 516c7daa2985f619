"""Where things live: ID formats, object keys in the four buckets, and the HTTP
metadata (Content-Type, Cache-Control, S3 tag) of every file kind. Pure.

Keys follow DESIGN.md "Storage" (seed §2, flat per-segment folders); cache policy
follows seed §7.2.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# IDs: a fixed prefix and 12-32 lowercase base32/hex-ish characters. Anything else
# is rejected before it can reach a storage key or a query.
ID_PREFIXES = ("usr", "scn", "seg", "job", "exp")
_ID_RE = re.compile(r"^(usr|scn|seg|job|exp)_[0-9a-z]{12,32}$")
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
PROFILE_RE = re.compile(r"^[0-9]{3,4}p$")

# The files a ready segment may have in the videos bucket.
_SEGMENT_FILE_RE = re.compile(
    r"^(?:master\.m3u8|[0-9]{3,4}p\.m3u8|[0-9]{3,4}p_[0-9]{4,6}\.ts|thumbnail\.jpg"
    r"|thumbnail_large\.jpg|storyboard(?:_[0-9]{1,3})?\.jpg|storyboard\.vtt|source\.mp4"
    r"|metadata\.json)$"
)


def new_id(prefix: str) -> str:
    """A fresh random ID such as `scn_5k2w9x0c7d3m1q8r` (80 bits of randomness)."""
    if prefix not in ID_PREFIXES:
        raise ValueError(f"unknown ID prefix {prefix!r}")
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def is_id(value: str, prefix: str) -> bool:
    return bool(_ID_RE.fullmatch(value)) and value.startswith(prefix + "_")


def is_segment_file(name: str) -> bool:
    return bool(_SEGMENT_FILE_RE.fullmatch(name))


def is_profile(name: str) -> bool:
    return bool(PROFILE_RE.fullmatch(name))


@dataclass(frozen=True)
class FileMeta:
    content_type: str
    cache_control: str
    tag: str


IMMUTABLE = "public, max-age=31536000, immutable"
_META: dict[str, FileMeta] = {
    # seed §7.2: segments are immutable; per-segment playlists never change after
    # publication either, so they share the long policy.
    ".ts": FileMeta("video/mp2t", IMMUTABLE, "hls"),
    ".m3u8": FileMeta("application/vnd.apple.mpegurl", "public, max-age=3600", "hls"),
    ".jpg": FileMeta("image/jpeg", "public, max-age=604800", "thumbnail"),
    ".png": FileMeta("image/png", "public, max-age=604800", "thumbnail"),
    ".vtt": FileMeta("text/vtt; charset=utf-8", "public, max-age=604800", "thumbnail"),
    ".mp4": FileMeta("video/mp4", "public, max-age=86400", "source"),
    ".json": FileMeta("application/json", "public, max-age=3600", "hls"),
    ".txt": FileMeta("text/plain; charset=utf-8", "private, no-store", "internal"),
    ".wav": FileMeta("audio/wav", "public, max-age=604800", "thumbnail"),
}
_DEFAULT_META = FileMeta("application/octet-stream", "private, no-store", "internal")

# Stitched scene playlists grow as contributors add clips: short shared cache, and
# the ETag (scene version) makes revalidation cheap.
SCENE_PLAYLIST_CACHE = "public, max-age=5, stale-while-revalidate=30"
SEGMENT_PLAYLIST_CACHE = "public, max-age=31536000, immutable"
EXPORT_META = FileMeta("video/mp4", "private, max-age=86400", "export")
INTERNAL_TAG = "internal"


def file_meta(name: str) -> FileMeta:
    """Content-Type, Cache-Control and S3 tag for a file in the videos/assets buckets."""
    dot = name.rfind(".")
    meta = _META.get(name[dot:].lower(), _DEFAULT_META) if dot >= 0 else _DEFAULT_META
    if name == "source.mp4":
        return FileMeta(meta.content_type, "private, max-age=86400", "source")
    if name.endswith(".m3u8"):
        return FileMeta(meta.content_type, SEGMENT_PLAYLIST_CACHE, "hls")
    return meta


# --- keys -----------------------------------------------------------------------


def segment_prefix(scene_id: str, segment_id: str) -> str:
    return f"{scene_id}/{segment_id}/"


def segment_key(scene_id: str, segment_id: str, name: str) -> str:
    """Key of a segment file in the videos bucket (DESIGN "Storage", seed §2)."""
    if not is_segment_file(name):
        raise ValueError(f"not a segment file name: {name!r}")
    return f"{scene_id}/{segment_id}/{name}"


_STILL_NAME_RE = re.compile(r"^[0-9]{3,4}p_f[0-9]{6,9}_w[0-9]{2,4}\.jpg$")


def still_key(scene_id: str, segment_id: str, name: str) -> str:
    """Key of a thumbnail grabbed at a moment (origin/moments.py `Moment.still_name`),
    kept under the segment's prefix so it goes when the segment's files go."""
    if not _STILL_NAME_RE.fullmatch(name):
        raise ValueError(f"not a still name: {name!r}")
    return f"{scene_id}/{segment_id}/stills/{name}"


def media_segment_name(profile: str, index: int) -> str:
    """`720p_0001.ts`: 1-based, four digits (more past 9999)."""
    return f"{profile}_{index:04d}.ts"


def scene_prefix(scene_id: str) -> str:
    return f"{scene_id}/"


def upload_key(job_id: str) -> str:
    return f"jobs/{job_id}/raw_output.mp4"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def job_log_key(job_id: str) -> str:
    return f"jobs/{job_id}/transcode_log.txt"


def job_frame_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/frames/{name}"


def export_key(scene_id: str, quality: str) -> str:
    return f"{scene_id}/full_{quality}.mp4"


def export_manifest_key(scene_id: str) -> str:
    return f"{scene_id}/export_manifest.json"


def poster_key(scene_id: str) -> str:
    return f"scenes/{scene_id}/poster.jpg"


def avatar_key(user_id: str) -> str:
    return f"avatars/{user_id}.jpg"


_ASSET_RE = re.compile(
    r"^(?:avatars/usr_[0-9a-z]{12,32}\.jpg|topics/[A-Za-z0-9_-]{1,64}/icon\.png"
    r"|scenes/scn_[0-9a-z]{12,32}/(?:poster\.jpg|reference/[A-Za-z0-9_.-]{1,128}))$"
)


def is_asset_key(key: str) -> bool:
    return bool(_ASSET_RE.fullmatch(key)) and ".." not in key


# --- CDN mapping (seed §3.2) ----------------------------------------------------


def cdn_path(scene_id: str, segment_id: str | None = None, name: str | None = None) -> str:
    """`/v/{sceneId}/{segmentId}/{file}` path for a videos-bucket object."""
    if segment_id is None:
        return f"/v/{scene_id}/" + (name or "")
    return f"/v/{scene_id}/{segment_id}/" + (name or "")


def cdn_url(base: str, path: str) -> str:
    """Absolute URL on the CDN base, or the bare path when no base is configured."""
    return f"{base.rstrip('/')}{path}" if base else path
