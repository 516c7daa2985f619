"""Where things live: ID formats, object keys in the four buckets, and the HTTP
metadata (Content-Type, Cache-Control, S3 tag) of every file kind. Pure.

Keys follow DESIGN.md "Storage" (seed §2, flat per-segment folders; the assets
bucket's avatars, topic icons, posters and scene references); cache policy follows
seed §7.2, except for assets, which change in place (short max-age plus ETag).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# IDs: a fixed prefix and 12-32 lowercase base32/hex-ish characters. Anything else
# is rejected before it can reach a storage key or a query.
# `top_` (topics) and `ent_` (a scene's characters and other entities) are minted by
# the StoryForge app; the origin only checks them. `upl_`: tus uploads (their URL is a
# capability); `evt_`: webhook events.
ID_PREFIXES: tuple[str, ...] = ("usr", "scn", "seg", "job", "exp", "top", "ent", "upl", "evt")
_ID_RE = re.compile(r"^(" + "|".join(ID_PREFIXES) + r")_[0-9a-z]{12,32}$")
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
PROFILE_RE = re.compile(r"^[0-9]{3,4}p$")
_LANGUAGE = r"[A-Za-z0-9-]{2,35}"  # a language tag in a file name (core/captions.py checks it)

# The files a ready segment may have in the videos bucket; media segments of a
# refined generation carry it (`media_segment_name`).
_SEGMENT_FILE_RE = re.compile(
    r"^(?:master\.m3u8|[0-9]{3,4}p\.m3u8|[0-9]{3,4}p(?:_g[0-9]{1,4})?_[0-9]{4,6}\.ts|thumbnail\.jpg"
    r"|thumbnail_large\.jpg|storyboard(?:_[0-9]{1,3})?\.jpg|storyboard\.vtt|source\.mp4"
    r"|metadata\.json|subs_[A-Za-z0-9-]{2,35}\.m3u8"
    r"|subs_[A-Za-z0-9-]{2,35}_g[0-9]{1,4}_r[0-9]{1,9}_[0-9]{4,6}\.vtt)$"
)
# Subtitles (issue 27): a language's playlist (the scene's and a clip's) and a clip's
# WebVTT segments, named by the clip's generation (its first PTS) and the captions'
# revision (r0: the clip has none in that language), so each name is one content.
_SUBS_PLAYLIST_RE = re.compile(r"^subs_([A-Za-z0-9-]{2,35})\.m3u8$")
_SUBS_SEGMENT_RE = re.compile(
    r"^subs_([A-Za-z0-9-]{2,35})_g([0-9]{1,4})_r([0-9]{1,9})_([0-9]{4,6})\.vtt$"
)


def new_id(prefix: str, length: int = 16) -> str:
    """A fresh random ID such as `scn_5k2w9x0c7d3m1q8r` (5 bits per character: 80 bits
    by default; upload ids, which are capabilities, take 26 characters, 130 bits)."""
    if prefix not in ID_PREFIXES:
        raise ValueError(f"unknown ID prefix {prefix!r}")
    if not 12 <= length <= 32:
        raise ValueError("ids have 12 to 32 characters after the prefix")
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


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
# An export's keys carry its id, so an object never changes once written: shared
# caches may keep it (docs/NOTES.md, "Export URLs"); the bucket expires it.
EXPORT_META = FileMeta("video/mp4", "public, max-age=86400, immutable", "export")
EXPORT_MANIFEST_META = FileMeta("application/json", EXPORT_META.cache_control, "export")
EXPORT_CAPTIONS_META = FileMeta("text/vtt; charset=utf-8", EXPORT_META.cache_control, "export")
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


_STILL_NAME_RE = re.compile(r"^[0-9]{3,4}p(?:_g[0-9]{1,4})?_f[0-9]{6,9}_w[0-9]{2,4}_j\.jpg$")


def still_key(scene_id: str, segment_id: str, name: str) -> str:
    """Key of a thumbnail grabbed at a moment (origin/playback/moments.py `Still.still_name`),
    kept under the segment's prefix so it goes when the segment's files go."""
    if not _STILL_NAME_RE.fullmatch(name):
        raise ValueError(f"not a still name: {name!r}")
    return f"{scene_id}/{segment_id}/stills/{name}"


def generation_stem(profile: str, generation: int = 1) -> str:
    """What a rendition's media segment names start with: `720p_` for the first
    generation (the seed's names), `720p_g2_` for the second, and so on. Segment files
    are immutable: a refined generation never reuses a key a player may hold."""
    if generation < 1:
        raise ValueError(f"generation {generation} must be >= 1")
    return f"{profile}_" if generation == 1 else f"{profile}_g{generation}_"


def media_segment_name(profile: str, index: int, generation: int = 1) -> str:
    """`720p_0001.ts` (`720p_g2_0001.ts` in generation 2): 1-based, four digits (more
    past 9999)."""
    return f"{generation_stem(profile, generation)}{index:04d}.ts"


def subtitles_playlist_name(language: str) -> str:
    return f"subs_{language}.m3u8"


def subtitles_playlist_language(name: str) -> str | None:
    """The language of a subtitles playlist's name, else None."""
    found = _SUBS_PLAYLIST_RE.fullmatch(name)
    return found[1] if found else None


@dataclass(frozen=True)
class SubtitlesSegment:
    language: str
    generation: int
    revision: int  # 0: the clip has no captions in this language (an empty segment)
    index: int  # 1-based, as the media segments'


def subtitles_segment_name(segment: SubtitlesSegment) -> str:
    s = segment
    return f"subs_{s.language}_g{s.generation}_r{s.revision}_{s.index:04d}.vtt"


def subtitles_segment(name: str) -> SubtitlesSegment | None:
    """What a clip's WebVTT segment name says, else None."""
    found = _SUBS_SEGMENT_RE.fullmatch(name)
    if found is None:
        return None
    return SubtitlesSegment(found[1], int(found[2]), int(found[3]), int(found[4]))


def scene_prefix(scene_id: str) -> str:
    return f"{scene_id}/"


def upload_key(job_id: str) -> str:
    return f"jobs/{job_id}/raw_output.mp4"


def upload_pending_prefix(upload_id: str) -> str:
    """Internal-bucket prefix of a tus upload's buffered bytes (not yet in a part)."""
    return f"uploads/{upload_id}/"


def upload_pending_key(upload_id: str, offset: int, token: str) -> str:
    return f"uploads/{upload_id}/pending/{offset:012d}-{token}"


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def job_log_key(job_id: str) -> str:
    return f"jobs/{job_id}/transcode_log.txt"


def job_frame_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/frames/{name}"


def job_export_log_key(job_id: str) -> str:
    return f"jobs/{job_id}/export_log.txt"


# --- exports: {sceneId}/{exportId}/full_{quality}.mp4 | moment_{quality}.mp4, its
#     captions {stem}.{lang}.vtt and {sceneId}/{exportId}/export_manifest.json,
#     served under /e/ ---------------------------------------------------------------

EXPORT_MANIFEST = "export_manifest.json"
_EXPORT_STEM = r"(?:full|moment)_[0-9]{3,4}p"
_EXPORT_FILE_RE = re.compile(
    rf"^(?:{_EXPORT_STEM}\.mp4|{_EXPORT_STEM}\.{_LANGUAGE}\.vtt|export_manifest\.json)$"
)
_EXPORT_CAPTIONS_RE = re.compile(rf"^{_EXPORT_STEM}\.({_LANGUAGE})\.vtt$")


def export_file_name(quality: str, *, moment: bool) -> str:
    """`full_720p.mp4` (the whole scene) or `moment_720p.mp4` (a time range)."""
    if not is_profile(quality):
        raise ValueError(f"not a quality: {quality!r}")
    return f"{'moment' if moment else 'full'}_{quality}.mp4"


def is_export_file(name: str) -> bool:
    return bool(_EXPORT_FILE_RE.fullmatch(name))


def export_captions_name(file_name: str, language: str) -> str:
    """The WebVTT sidecar of an export's MP4 in one language, named as players look
    for one beside a video: `full_720p.mp4` -> `full_720p.pt-BR.vtt`."""
    name = f"{file_name.removesuffix('.mp4')}.{language}.vtt"
    if not _EXPORT_CAPTIONS_RE.fullmatch(name):
        raise ValueError(f"not an export's captions: {file_name!r}, {language!r}")
    return name


def export_captions_language(name: str) -> str | None:
    """The language of an export's captions sidecar name, or None if it is not one."""
    found = _EXPORT_CAPTIONS_RE.fullmatch(name)
    return found.group(1) if found else None


def export_prefix(scene_id: str, export_id: str) -> str:
    return f"{scene_id}/{export_id}/"


def export_key(scene_id: str, export_id: str, name: str) -> str:
    """Key of an export's file in the exports bucket: one prefix per export, so a
    newer export of the scene never overwrites an older one's bytes."""
    if not is_export_file(name):
        raise ValueError(f"not an export file name: {name!r}")
    return f"{scene_id}/{export_id}/{name}"


def export_manifest_key(scene_id: str, export_id: str) -> str:
    return export_key(scene_id, export_id, EXPORT_MANIFEST)


def export_path(scene_id: str, export_id: str, name: str) -> str:
    """`/e/{sceneId}/{exportId}/{file}`: where the origin serves an export's file."""
    return "/e/" + export_key(scene_id, export_id, name)


def poster_key(scene_id: str) -> str:
    return f"scenes/{scene_id}/poster.jpg"


def scene_assets_prefix(scene_id: str) -> str:
    """Every asset of a scene (poster, references): `scenes/{sceneId}/`."""
    return f"scenes/{scene_id}/"


def avatar_key(user_id: str) -> str:
    return f"avatars/{user_id}.jpg"


def topic_icon_key(topic_id: str) -> str:
    return f"topics/{topic_id}/icon.png"


STYLE_FRAME = "style_frame.png"
VOICE_ANCHOR = "voice_anchor.wav"
_ID = r"[0-9a-z]{12,32}"
_PORTRAIT_RE = re.compile(rf"^char_(ent_{_ID})_portrait\.png$")


def portrait_name(entity_id: str) -> str:
    """`char_{entityId}_portrait.png`, a character's reference portrait (seed §2)."""
    if not is_id(entity_id, "ent"):
        raise ValueError(f"not an entity id: {entity_id!r}")
    return f"char_{entity_id}_portrait.png"


def portrait_entity(name: str) -> str | None:
    """The entity id of a portrait's file name, or None if `name` is not one."""
    m = _PORTRAIT_RE.fullmatch(name)
    return m.group(1) if m else None


def is_reference_name(name: str) -> bool:
    """The files a scene's `reference/` folder may hold (seed §2), exactly."""
    return name in (STYLE_FRAME, VOICE_ANCHOR) or portrait_entity(name) is not None


def reference_prefix(scene_id: str) -> str:
    return f"scenes/{scene_id}/reference/"


def reference_key(scene_id: str, name: str) -> str:
    if not (is_id(scene_id, "scn") and is_reference_name(name)):
        raise ValueError(f"not a scene reference: {scene_id!r}, {name!r}")
    return reference_prefix(scene_id) + name


_ASSET_RE = re.compile(
    rf"^(?:avatars/usr_{_ID}\.jpg|topics/top_{_ID}/icon\.png"
    rf"|scenes/scn_{_ID}/(?:poster\.jpg|reference/(?:style_frame\.png|voice_anchor\.wav"
    rf"|char_ent_{_ID}_portrait\.png)))$"
)
_REFERENCE_KEY_RE = re.compile(rf"^scenes/scn_{_ID}/reference/")


def is_asset_key(key: str) -> bool:
    return bool(_ASSET_RE.fullmatch(key))


def is_reference_key(key: str) -> bool:
    """A scene reference: private when its scene is (signed like the scene's media)."""
    return is_asset_key(key) and bool(_REFERENCE_KEY_RE.match(key))


# Assets change in place (a new avatar, icon, poster or reference under the same key):
# a short shared cache, revalidated by ETag. Stored with every asset, and served as
# stored (the answer to a request under /a/ carries the object's own fields).
ASSET_CACHE = "public, max-age=300"


def asset_meta(key: str) -> FileMeta:
    """Content-Type, Cache-Control and S3 tag an asset is written with (and the
    fallback when a backend does not return the stored fields)."""
    meta = file_meta(key.rsplit("/", 1)[-1])
    return FileMeta(meta.content_type, ASSET_CACHE, meta.tag)


def asset_path(key: str) -> str:
    """`/a/{key}`: where the origin (and the CDN) serves an asset."""
    return f"/a/{key}"


# --- CDN mapping (seed §3.2) ----------------------------------------------------


def cdn_path(scene_id: str, segment_id: str | None = None, name: str | None = None) -> str:
    """`/v/{sceneId}/{segmentId}/{file}` path for a videos-bucket object."""
    if segment_id is None:
        return f"/v/{scene_id}/" + (name or "")
    return f"/v/{scene_id}/{segment_id}/" + (name or "")


def cdn_url(base: str, path: str) -> str:
    """Absolute URL on the CDN base, or the bare path when no base is configured."""
    return f"{base.rstrip('/')}{path}" if base else path
