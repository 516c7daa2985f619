"""origin.assets.rules: sniffing by bytes, pixel limits, stored sizes, the structure
checks a polyglot fails, and the targets (kinds, keys, owners) of asset paths."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from origin.assets import rules
from origin.assets.rules import AVATAR, PORTRAIT, STYLE_FRAME, TOPIC_ICON, AssetLimits, Refused
from tests.helpers import images

SCN = "scn_0123456789abcdef"
ENT = "ent_0123456789abcdef"


def _refused(fn, *args) -> Refused:
    with pytest.raises(Refused) as info:
        fn(*args)
    return info.value


@pytest.mark.parametrize(
    "head,fmt",
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
        (b"GIF89a\x01\x00", "GIF"),
        (b"GIF87a\x01\x00", "GIF"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WEBP"),
    ],
)
def test_sniff_accepts_by_magic_bytes(head, fmt):
    assert rules.sniff_image(head) == fmt


@pytest.mark.parametrize(
    "head,said",
    [
        (images.SVG, "an SVG image (it can carry scripts and references to other files)"),
        (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "an SVG image (it can"),
        (images.HTML, "an HTML document"),
        (b"\n<html><body>", "an HTML document"),
        (b"<?xml version='1.0'?><note/>", "an XML or HTML document"),
        (b"PK\x03\x04\x14\x00", "a ZIP archive"),
        (b"%PDF-1.7", "a PDF document"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "a HEIC image"),
        (b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00", "an AVIF image"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", "an MP4/QuickTime file"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "a WAV audio file"),
        (b"#EXTM3U\n#EXT-X-VERSION:3", "an HLS playlist"),
        (b"ffconcat version 1.0", "an ffconcat script"),
        (b"BM\x36\x00\x00\x00", None),  # BMP: a real image, but not one we take
        (b"", None),
    ],
)
def test_sniff_refuses_everything_else_naming_it(head, said):
    err = _refused(rules.sniff_image, head)
    assert err.status == 415 and err.code == "unsupported_media_type"
    if said:
        assert err.message.startswith(f"this is {said}"), err.message
        assert err.message.count(", which is not accepted") == (" image" in said)
    else:
        assert err.message.startswith("not a known image")
    assert "JPEG, PNG, WebP or GIF" in err.message


def test_pixel_limits():
    limits = AssetLimits(max_pixels=50_000_000, min_side=16)
    rules.check_pixels(8000, 6000, limits)  # 48 MP
    bomb = _refused(rules.check_pixels, 30_000, 30_000, limits)
    assert (bomb.status, bomb.code) == (422, "too_many_pixels")
    assert "30000x30000 (900 megapixels)" in bomb.message and "50 megapixels" in bomb.message
    assert _refused(rules.check_pixels, 10_000, 5_001, limits).code == "too_many_pixels"
    assert _refused(rules.check_pixels, 15, 4000, limits).code == "image_too_small"
    assert _refused(rules.check_pixels, 0, 10, limits).code == "damaged_image"


@pytest.mark.parametrize(
    "rule,size,box,stored",
    [
        (AVATAR, (1200, 800), (200, 0, 1000, 800), (512, 512)),
        (AVATAR, (800, 1201), (0, 200, 800, 1000), (512, 512)),
        (AVATAR, (100, 100), (0, 0, 100, 100), (512, 512)),  # scaled up: one size
        (TOPIC_ICON, (1024, 512), (0, 0, 1024, 512), (512, 256)),
        (TOPIC_ICON, (300, 200), (0, 0, 300, 200), (300, 200)),  # never scaled up
        (PORTRAIT, (3000, 4000), (0, 0, 3000, 4000), (768, 1024)),
        (STYLE_FRAME, (3840, 2160), (0, 0, 3840, 2160), (2048, 1152)),
        (STYLE_FRAME, (20, 4000), (0, 0, 20, 4000), (10, 2048)),
    ],
)
def test_geometry(rule, size, box, stored):
    assert rules.geometry(rule, *size) == (box, stored)


def test_draft_size_still_covers_the_stored_size():
    # a 48 MP photo: libjpeg may decode at 1/8 (1000x750 >= 683x512)
    assert rules.draft_size(AVATAR, 8000, 6000) == (683, 512)
    assert rules.draft_size(STYLE_FRAME, 8000, 6000) == (2048, 1536)
    assert rules.draft_size(AVATAR, 400, 300) == (400, 300)  # nothing to gain


def _zip(name: str = "a.txt", data: bytes = b"hello") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(name, data)
    return out.getvalue()


def test_hidden_archive():
    plain = images.png(64, 64)
    assert rules.hidden_archive(plain) is None
    assert rules.hidden_archive(plain + _zip()) == "a ZIP archive"
    assert rules.hidden_archive(_zip() + plain[:100]) == "a ZIP archive"  # junk after
    # an end-of-directory signature that leads nowhere is just bytes
    fake_end = b"PK\x05\x06" + b"\x00" * 8 + struct.pack("<II", 10, 0) + b"\x00\x00"
    assert rules.hidden_archive(plain + fake_end) is None
    assert rules.hidden_archive(b"") is None


def test_structure_of_png_and_webp():
    plain = images.png(64, 64)
    rules.check_structure("PNG", plain)
    err = _refused(rules.check_structure, "PNG", plain + b"<script>alert(1)</script>")
    assert (err.status, err.code) == (422, "trailing_data")
    assert err.message.startswith("25 bytes follow the end of the PNG image")
    assert _refused(rules.check_structure, "PNG", plain[:-20]).code == "damaged_image"
    assert _refused(rules.check_structure, "PNG", images.png_zip_polyglot()).code == ("polyglot")
    webp = b"RIFF" + struct.pack("<I", 12) + b"WEBPVP8 \x00\x00\x00\x00"
    rules.check_structure("WEBP", webp)
    assert _refused(rules.check_structure, "WEBP", webp + b"x").code == "trailing_data"
    assert _refused(rules.check_structure, "WEBP", webp[:-2]).code == "damaged_image"
    # a JPEG may carry data after its end (MPF gain maps, motion photos): re-encoded anyway
    rules.check_structure("JPEG", images.photo_jpeg(64, 64) + b"MotionPhoto_Data")
    jpeg_zip = images.photo_jpeg(64, 64) + _zip()
    assert _refused(rules.check_structure, "JPEG", jpeg_zip).code == "polyglot"


def test_targets():
    avatar = rules.avatar_target("usr_0123456789abcdef")
    assert (avatar.kind, avatar.key, avatar.rule) == (
        "avatar",
        "avatars/usr_0123456789abcdef.jpg",
        AVATAR,
    )
    icon = rules.topic_icon_target("top_0123456789abcdef")
    assert (icon.kind, icon.key, icon.rule) == (
        "topic_icon",
        "topics/top_0123456789abcdef/icon.png",
        TOPIC_ICON,
    )
    portrait = rules.reference_target(SCN, f"char_{ENT}_portrait.png")
    assert (portrait.kind, portrait.entity_id, portrait.rule, portrait.scene_id) == (
        "portrait",
        ENT,
        PORTRAIT,
        SCN,
    )
    voice = rules.reference_target(SCN, "voice_anchor.wav")
    assert (voice.kind, voice.rule, voice.key) == (
        "voice_anchor",
        None,
        f"scenes/{SCN}/reference/voice_anchor.wav",
    )
    assert rules.reference_target(SCN, "style_frame.png").rule == STYLE_FRAME
    for bad in (
        lambda: rules.avatar_target("bob"),
        lambda: rules.topic_icon_target("space-opera"),
        lambda: rules.topic_icon_target("usr_0123456789abcdef"),
        lambda: rules.reference_target("scn_x", "style_frame.png"),
        lambda: rules.reference_target(SCN, "char_bob_portrait.png"),
        lambda: rules.reference_target(SCN, "style_frame.jpg"),
        lambda: rules.reference_target(SCN, "../poster.jpg"),
    ):
        with pytest.raises(ValueError):
            bad()
