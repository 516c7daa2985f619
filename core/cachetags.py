"""Cache tags, pure: what every answer under `/v/`, `/e/` and `/a/` depends on, named so
that a tag-purging CDN (Varnish with xkey, Fastly, Cloudflare, Akamai) can drop every
copy of it by name when it changes (core/invalidation.py says which tags a change
makes stale; origin/http/fields.py puts them on the answers).

An answer's tags follow from its path alone, so both of the origin's paths (the
aiohttp app and the fast path) tag alike and nothing is looked up:

| path | tags |
|---|---|
| `/v/{scene}/{document}` (master, variants, storyboard and chapters VTT, thumbnail at a moment) | `{scene}`, `{scene}.docs` |
| `/v/{scene}/{segment}/{profile}[_gN]_{n}.ts` | `{scene}`, `{segment}`, `{segment}.g{N}` (N = 1 without `_gN`) |
| `/v/{scene}/{segment}/*.m3u8`, `thumbnail.jpg` (also at a moment) | `{scene}`, `{segment}`, `{segment}.docs` |
| `/v/{scene}/{segment}/{other file}` | `{scene}`, `{segment}` |
| `/e/{scene}/{export}/{file}` | `{scene}`, `{export}` |
| `/a/{key}` | `a.{key with / as .}` (and `{scene}` under `scenes/{scene}/`) |

Tags are ids and dots only (`[0-9a-z_.]`), well inside every CDN's alphabet and length
limits (Fastly: Surrogate-Key, space-separated; Cloudflare: Cache-Tag and Akamai:
Edge-Cache-Tag, comma-separated)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from core import layout

DEFAULT_HEADER = "Surrogate-Key"  # Fastly's and Varnish xkey's name (CACHE_TAG_HEADER)
SEPARATORS = {"space": " ", "comma": ","}  # CACHE_TAG_SEPARATOR

# a media segment's generation (layout.generation_stem: `720p_0001.ts` is the first,
# `720p_g2_0001.ts` the second)
_GENERATION_RE = re.compile(r"^[0-9]{3,4}p_g([0-9]{1,4})_[0-9]{4,6}\.ts$")


def scene(scene_id: str) -> str:
    """Everything served for a scene: its documents, its clips' files, its exports and
    its assets (purged when the scene is deleted)."""
    return scene_id


def scene_documents(scene_id: str) -> str:
    """The stitched scene's documents and thumbnails at a moment (they change with its
    version: a clip published, refined or removed)."""
    return f"{scene_id}.docs"


def segment(segment_id: str) -> str:
    """Every file of one clip."""
    return segment_id


def segment_documents(segment_id: str) -> str:
    """A clip's playlists and thumbnails: they name (or are grabbed from) its current
    generation, so they change when it is refined."""
    return f"{segment_id}.docs"


def generation(segment_id: str, number: int) -> str:
    """One generation's media segments of a clip (immutable; gone after a refinement's
    grace period)."""
    return f"{segment_id}.g{number}"


def export(export_id: str) -> str:
    return export_id


def asset(key: str) -> str:
    """An asset by its key in the assets bucket (`avatars/usr_x.jpg` ->
    `a.avatars.usr_x.jpg`): keys are ids, names and `/` only (layout.is_asset_key)."""
    return "a." + key.replace("/", ".")


@functools.lru_cache(maxsize=8192)
def of_path(path: str) -> tuple[str, ...]:
    """The tags of the answer to a request for `path` (the table above); () for paths
    outside `/v/`, `/e/`, `/a/` or that name nothing valid."""
    if path.startswith("/a/"):
        key = path[3:]
        if not layout.is_asset_key(key):
            return ()
        if key.startswith("scenes/"):
            return (scene(key.split("/", 2)[1]), asset(key))
        return (asset(key),)
    parts = path.split("/")
    if len(parts) < 4 or parts[0] or not layout.is_id(parts[2], "scn"):
        return ()
    kind, scene_id = parts[1], parts[2]
    if kind == "v" and len(parts) == 4 and parts[3]:
        return (scene(scene_id), scene_documents(scene_id))
    if len(parts) != 5 or not parts[4]:
        return ()
    if kind == "e" and layout.is_id(parts[3], "exp"):
        return (scene(scene_id), export(parts[3]))
    if kind != "v" or not layout.is_id(parts[3], "seg"):
        return ()
    segment_id, name = parts[3], parts[4]
    tags = (scene(scene_id), segment(segment_id))
    if name.endswith(".ts"):
        found = _GENERATION_RE.match(name)
        return (*tags, generation(segment_id, int(found[1]) if found else 1))
    if name.endswith(".m3u8") or name == "thumbnail.jpg":
        return (*tags, segment_documents(segment_id))
    return tags


def header_value(tags: Iterable[str], separator: str = " ") -> str:
    """The tag header's value: the tags joined by `separator` (" " for Surrogate-Key,
    "," for Cache-Tag and Edge-Cache-Tag)."""
    return separator.join(tags)
