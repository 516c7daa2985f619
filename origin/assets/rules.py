"""What an uploaded asset must be, decided without I/O (issue 15): the limits, the real
format sniffed from the first bytes (never the file name or the Content-Type), the
structural checks a polyglot fails, and the size each kind is stored at. Pure: the
Pillow work is origin/assets/imaging.py, the voice anchor's commands origin/assets/voice.py,
storage and rows origin/assets/service.py.

Kinds (keys: core/layout.py, seed §2):

==============  ==========================================  =======================
kind            key                                         stored as
==============  ==========================================  =======================
avatar          ``avatars/{userId}.jpg``                    JPEG, centre square 512x512
topic_icon      ``topics/{topicId}/icon.png``               PNG within 512x512
portrait        ``scenes/{id}/reference/char_{ent}_portrait.png``  PNG within 1024x1024
style_frame     ``scenes/{id}/reference/style_frame.png``   PNG within 2048x2048
voice_anchor    ``scenes/{id}/reference/voice_anchor.wav``  48 kHz 16-bit PCM WAV
==============  ==========================================  =======================

Images in: JPEG, PNG (APNG), WebP and GIF (first frame of an animation). Pillow reads
no HEIC here (no plugin is installed), and SVG, HTML, archives and everything else are
refused with 415. A PNG, WebP or GIF with a ZIP inside (the classic polyglot: image
viewers read the front, ZIP readers the central directory at the end) or a PNG/WebP
with bytes after its end is refused (422); a JPEG may carry data after its end (MPF
gain maps, motion photos) and a JPEG with HTML or script in a comment is harmless once
re-encoded, which every image is: nothing is ever stored as sent.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

from core import layout
from core.settings import Settings

MiB = 1024 * 1024


class Refused(Exception):
    """The upload is refused: an HTTP status (413, 415 or 422), a code and a reason a
    person can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AssetLimits:
    """Bounds of one asset upload (settings ASSET_MAX_BYTES, ASSET_MAX_PIXELS,
    VOICE_MAX_SECONDS)."""

    max_bytes: int = 32 * MiB
    max_pixels: int = 50_000_000
    min_side: int = 16
    voice_max_seconds: float = 60.0
    voice_min_seconds: float = 0.5

    @classmethod
    def of(cls, settings: Settings) -> AssetLimits:
        """The bounds the settings give."""
        return cls(
            max_bytes=settings.asset_max_bytes,
            max_pixels=settings.asset_max_pixels,
            voice_max_seconds=settings.voice_max_seconds,
        )


@dataclass(frozen=True)
class ImageRule:
    """How an image kind is stored: `side` is the square's side (`square`: the centre
    square, scaled up or down to exactly that) or the bound of the longer side (never
    scaled up)."""

    kind: str
    format: Literal["JPEG", "PNG"]
    side: int
    square: bool = False

    @property
    def content_type(self) -> str:
        return "image/jpeg" if self.format == "JPEG" else "image/png"


AVATAR = ImageRule("avatar", "JPEG", 512, square=True)
TOPIC_ICON = ImageRule("topic_icon", "PNG", 512)
PORTRAIT = ImageRule("portrait", "PNG", 1024)
STYLE_FRAME = ImageRule("style_frame", "PNG", 2048)

_RULES = {r.kind: r for r in (AVATAR, TOPIC_ICON, PORTRAIT, STYLE_FRAME)}
VOICE_ANCHOR = "voice_anchor"


@dataclass(frozen=True)
class Target:
    """One writable asset: its kind, key and owner (exactly one of user, topic, scene)."""

    kind: str
    key: str
    user_id: str | None = None
    topic_id: str | None = None
    scene_id: str | None = None
    entity_id: str | None = None

    @property
    def rule(self) -> ImageRule | None:
        """How the image is stored; None for the voice anchor."""
        return _RULES.get(self.kind)


def avatar_target(user_id: str) -> Target:
    if not layout.is_id(user_id, "usr"):
        raise ValueError("a user id is usr_ and 12-32 characters [0-9a-z]")
    return Target("avatar", layout.avatar_key(user_id), user_id=user_id)


def topic_icon_target(topic_id: str) -> Target:
    if not layout.is_id(topic_id, "top"):
        raise ValueError("a topic id is top_ and 12-32 characters [0-9a-z]")
    return Target("topic_icon", layout.topic_icon_key(topic_id), topic_id=topic_id)


def reference_target(scene_id: str, name: str) -> Target:
    """A scene reference by file name; ValueError says what is wrong."""
    if not layout.is_id(scene_id, "scn"):
        raise ValueError("a scene id is scn_ and 12-32 characters [0-9a-z]")
    entity = layout.portrait_entity(name)
    if name == layout.STYLE_FRAME:
        kind = "style_frame"
    elif name == layout.VOICE_ANCHOR:
        kind = VOICE_ANCHOR
    elif entity is not None:
        kind = "portrait"
    else:
        raise ValueError(
            "a reference is char_{entityId}_portrait.png (an ent_ id: ent_ and 12-32 "
            f"characters [0-9a-z]), {layout.STYLE_FRAME} or {layout.VOICE_ANCHOR}"
        )
    return Target(kind, layout.reference_key(scene_id, name), scene_id=scene_id, entity_id=entity)


@dataclass(frozen=True)
class Processed:
    """What is stored for an upload: fresh bytes, their type, and what they measure."""

    data: bytes
    content_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None


#: Pillow format names of the images accepted (Image.open is limited to these).
ACCEPTED_IMAGES = ("JPEG", "PNG", "WEBP", "GIF")
ACCEPTED_TEXT = "send a JPEG, PNG, WebP or GIF image"
SNIFF_BYTES = 512

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ISO_BMFF_IMAGES = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"hevx": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}


def unsupported(what: str, wanted: str = ACCEPTED_TEXT) -> Refused:
    return Refused(415, "unsupported_media_type", f"{what}: {wanted}")


def describe_foreign(head: bytes) -> str | None:
    """What a file that is not an accepted image looks like, judged from its first
    bytes, or None when it is none of the usual suspects."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a ZIP archive"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head[4:8] == b"ftyp":
        brand = _ISO_BMFF_IMAGES.get(head[8:12])
        if brand is None:
            return "an MP4/QuickTime file"
        return f"{'an' if brand[0] in 'AEIOU' else 'a'} {brand} image"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "a WAV audio file"
    text = head.lstrip(b"\xef\xbb\xbf\xfe\xff\x00 \t\r\n").lower()
    if text.startswith(b"#extm3u"):
        return "an HLS playlist"
    if text.startswith(b"ffconcat"):
        return "an ffconcat script"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "an SVG image (it can carry scripts and references to other files)"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return "an HTML document"
    if text.startswith(b"<"):
        return "an XML or HTML document"
    return None


def sniff_image(head: bytes) -> str:
    """The Pillow format of an accepted image from its first bytes (at least 12), or
    Refused (415) naming what it is instead."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    foreign = describe_foreign(head)
    if foreign is None:
        raise unsupported("not a known image")
    if " image" in foreign:
        raise unsupported(f"this is {foreign}, which is not accepted")
    raise unsupported(f"this is {foreign}, not an image")


def check_pixels(width: int, height: int, limits: AssetLimits) -> None:
    """Refuse a picture size (from the header, before any pixel is decoded) outside
    the limits: a decompression bomb declares billions of pixels in a few KB."""
    if width <= 0 or height <= 0:
        raise Refused(422, "damaged_image", "the image declares no picture size")
    if width * height > limits.max_pixels:
        raise Refused(
            422,
            "too_many_pixels",
            f"the image is {width}x{height} ({width * height / 1e6:.0f} megapixels), "
            f"above the limit of {limits.max_pixels / 1e6:g} megapixels",
        )
    if min(width, height) < limits.min_side:
        raise Refused(
            422,
            "image_too_small",
            f"the image is {width}x{height}; both sides must be at least {limits.min_side} pixels",
        )


Box = tuple[int, int, int, int]


def geometry(rule: ImageRule, width: int, height: int) -> tuple[Box, tuple[int, int]]:
    """(the source box to keep, the stored size) for an image of `width` x `height`."""
    if rule.square:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return (left, top, left + side, top + side), (rule.side, rule.side)
    scale = min(1.0, rule.side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return (0, 0, width, height), size


def draft_size(rule: ImageRule, width: int, height: int) -> tuple[int, int]:
    """The smallest size a JPEG may be decoded at (libjpeg scales by 1/2, 1/4, 1/8
    while decoding, at or above the size asked for) that still covers the stored
    size: a 48-megapixel photo becomes a 512-pixel avatar without decoding 48 MP."""
    if rule.square:
        scale = rule.side / min(width, height)
    else:
        scale = rule.side / max(width, height)
    if scale >= 1:
        return width, height
    return math.ceil(width * scale), math.ceil(height * scale)


# --- structure: what lies around the image --------------------------------------

_MAX_PNG_CHUNKS = 50_000  # real PNGs have a few thousand (IDAT of 8-64 KB each)
_ZIP_CENTRAL_HEADER = b"PK\x01\x02"
_ZIP_END = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP_END_SIZE = 22
_ZIP_MAX_COMMENT = 0xFFFF


def _png_end(data: bytes) -> int:
    """Offset just past a PNG's IEND chunk (PNG spec §5.3: length, type, data, CRC)."""
    pos = len(_PNG_SIGNATURE)
    for _ in range(_MAX_PNG_CHUNKS):
        if pos + 12 > len(data):
            raise Refused(422, "damaged_image", "the PNG is truncated (it has no IEND chunk)")
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise Refused(422, "damaged_image", "the PNG is truncated or damaged")
        if data[pos + 4 : pos + 8] == b"IEND":
            return end
        pos = end
    raise Refused(422, "damaged_image", f"the PNG has more than {_MAX_PNG_CHUNKS} chunks")


def _riff_end(data: bytes) -> int:
    """Offset just past a RIFF file's declared size (its chunks are padded to even)."""
    (size,) = struct.unpack_from("<I", data, 4)
    return 8 + size + (size & 1)


def hidden_archive(data: bytes) -> str | None:
    """ "a ZIP archive" when `data` also reads as one: ZIP readers look for the end of
    central directory record in the last 64 KiB and follow it to the central directory
    (APPNOTE 4.3.16); a record that leads to a central directory header is a working
    archive, whatever precedes it. None otherwise."""
    floor = max(0, len(data) - _ZIP_END_SIZE - _ZIP_MAX_COMMENT)
    pos = data.rfind(_ZIP_END, floor)
    while pos >= 0:
        if pos + _ZIP_END_SIZE <= len(data):
            size, offset = struct.unpack_from("<II", data, pos + 12)
            for start in (pos - size, offset):
                if size and 0 <= start and data[start : start + 4] == _ZIP_CENTRAL_HEADER:
                    return "a ZIP archive"
        pos = data.rfind(_ZIP_END, floor, pos)
    if data.rfind(_ZIP64_LOCATOR, floor) >= 0:
        return "a ZIP64 archive"
    return None


def check_structure(fmt: str, data: bytes) -> None:
    """Refuse an image that is also something else: a ZIP anywhere a ZIP reader finds
    it, or bytes after the end of a PNG (IEND) or a WebP (its RIFF size)."""
    archive = hidden_archive(data)
    if archive is not None:
        raise Refused(
            422,
            "polyglot",
            f"the {fmt} file is also {archive}: an image with a file hidden in it is refused",
        )
    end = _png_end(data) if fmt == "PNG" else _riff_end(data) if fmt == "WEBP" else len(data)
    if end < len(data):
        raise Refused(
            422,
            "trailing_data",
            f"{len(data) - end} bytes follow the end of the {fmt} image: "
            "an image with something appended is refused",
        )
    if end > len(data):
        raise Refused(422, "damaged_image", f"the {fmt} file is truncated")
