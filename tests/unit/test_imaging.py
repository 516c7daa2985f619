"""origin.assets.imaging: what an uploaded image becomes (size, orientation, colour, alpha,
first frame, no metadata at all), and the hostile images it refuses before decoding a
pixel."""

from __future__ import annotations

import io
import resource
import time

import pytest
from PIL import Image, ImageCms

from origin.assets import imaging
from origin.assets.rules import AVATAR, PORTRAIT, STYLE_FRAME, TOPIC_ICON, AssetLimits, Refused
from tests.helpers import images

LIMITS = AssetLimits(max_pixels=50_000_000)


def _open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _jpeg_markers(data: bytes) -> list[int]:
    """The marker of every segment before the scan (ITU T.81 B.1.1.2)."""
    assert data[:2] == b"\xff\xd8"
    pos, markers = 2, []
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        markers.append(data[pos + 1])
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return markers


def test_avatar_is_a_square_jpeg_without_any_metadata():
    upload = images.photo_jpeg(1200, 800)
    source = _open(upload)
    assert source.getexif().get_ifd(0x8825), "the upload carries a GPS position"
    assert b"Exif" in upload and b"GPS" in upload and b"<script" in upload
    out = imaging.reencode(upload, AVATAR, LIMITS)
    assert (out.content_type, out.width, out.height) == ("image/jpeg", 512, 512)
    im = _open(out.data)
    assert im.format == "JPEG" and im.size == (512, 512) and im.mode == "RGB"
    assert dict(im.getexif()) == {} and "icc_profile" not in im.info and "xmp" not in im.info
    for needle in (b"Exif", b"GPS", b"xmp", b"ICC_PROFILE", b"<script", b"StoryPhone"):
        assert needle not in out.data, needle
    # APP0 (JFIF) is the only application segment: no APP1 (EXIF/XMP), APP2 (ICC), COM
    markers = _jpeg_markers(out.data)
    assert [m for m in markers if 0xE0 <= m <= 0xEF or m == 0xFE] == [0xE0]


def test_exif_orientation_is_applied_before_it_is_dropped():
    # orientation 6: the camera was turned; the picture is shown rotated 90° clockwise
    out = imaging.reencode(images.photo_jpeg(1200, 600, orientation=6), STYLE_FRAME, LIMITS)
    assert (out.width, out.height) == (600, 1200)
    im = _open(out.data)
    # the red mark of the top-left corner ends up top-right
    red, green, _ = im.getpixel((595, 3))
    assert red > 200 and green < 80
    assert im.getpixel((3, 3))[1] > 150


def test_png_kinds_keep_alpha_and_never_scale_up():
    out = imaging.reencode(images.png(300, 200, "RGBA"), TOPIC_ICON, LIMITS)
    im = _open(out.data)
    assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (300, 200))
    assert set(im.info) <= {"dpi"} and "icc_profile" not in im.info
    big = imaging.reencode(images.png(3000, 1500), PORTRAIT, LIMITS)
    assert (big.width, big.height) == (1024, 512)


def test_avatar_flattens_transparency_onto_white():
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    buf = io.BytesIO()
    clear.save(buf, "PNG")
    im = _open(imaging.reencode(buf.getvalue(), AVATAR, LIMITS).data)
    assert im.mode == "RGB" and im.getpixel((256, 256)) >= (250, 250, 250)


def test_icc_colours_are_converted_to_srgb():
    lab = Image.new("LAB", (32, 32), (50, 0, 0))  # mid grey in L*a*b*
    rgb = ImageCms.profileToProfile(
        lab, ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    assert rgb is not None
    # a CMYK JPEG with no profile, and an RGB one whose profile is sRGB's: both RGB out
    for mode in ("CMYK", "RGB"):
        buf = io.BytesIO()
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        Image.new(mode, (64, 64)).save(
            buf, "JPEG", **({"icc_profile": icc} if mode == "RGB" else {})
        )
        im = _open(imaging.reencode(buf.getvalue(), STYLE_FRAME, LIMITS).data)
        assert im.mode == "RGB" and "icc_profile" not in im.info


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey = Image.new("I;16", (64, 64), 32768)
    buf = io.BytesIO()
    grey.save(buf, "PNG")
    im = _open(imaging.reencode(buf.getvalue(), STYLE_FRAME, LIMITS).data)
    assert im.mode == "RGB" and 120 <= im.getpixel((10, 10))[0] <= 136


def test_animation_keeps_its_first_frame_only():
    out = imaging.reencode(images.animated_gif(), TOPIC_ICON, LIMITS)
    im = _open(out.data)
    assert im.format == "PNG" and getattr(im, "n_frames", 1) == 1
    assert im.getpixel((10, 10))[:3] == (255, 0, 0)


def test_jpeg_with_html_in_a_comment_is_reencoded():
    upload = images.photo_jpeg(64, 64)
    out = imaging.reencode(upload, STYLE_FRAME, LIMITS)
    assert b"<script" in upload and b"<script" not in out.data and out.data != upload


@pytest.mark.parametrize(
    "upload,status,code,says",
    [
        (images.png_bomb(), 422, "too_many_pixels", "declares 900 megapixels, above the limit"),
        # Pillow's DecompressionBombWarning (between 1x and 2x its limit) is an error
        (images.png_bomb(8000), 422, "too_many_pixels", "declares 64 megapixels"),
        (images.truncated_jpeg(), 422, "damaged_image", "truncated or damaged"),
        (images.png_zip_polyglot(), 422, "polyglot", "also a ZIP archive"),
        (images.SVG, 415, "unsupported_media_type", "SVG"),
        (images.HTML, 415, "unsupported_media_type", "HTML"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422, "damaged_image", "PNG"),
        (b"\xff\xd8\xff" + b"\x00" * 40, 422, "damaged_image", "JPEG"),
    ],
    ids=["bomb", "bomb-64mp", "truncated", "png-zip", "svg", "html", "png-junk", "jpeg-junk"],
)
def test_refusals(upload, status, code, says):
    imaging.configure(LIMITS.max_pixels)  # (pytest resets warning filters per test)
    with pytest.raises(Refused) as info:
        imaging.reencode(upload, STYLE_FRAME, LIMITS)
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    assert says in info.value.message


def test_the_pixel_limit_holds_without_pillows_check():
    """Our own check of the declared size stands even if Pillow's were off."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Image.MAX_IMAGE_PIXELS = None
        try:
            with pytest.raises(Refused) as info:
                imaging.reencode(images.png_bomb(), AVATAR, LIMITS)
        finally:
            imaging.configure(LIMITS.max_pixels)
    assert info.value.message.startswith("the image is 30000x30000 (900 megapixels)")


def test_the_bomb_is_refused_before_decoding():
    """30,000 x 30,000 greyscale is 900 MB once decoded; refused, it costs neither the
    memory nor the time."""
    imaging.configure(LIMITS.max_pixels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    for _ in range(5):
        with pytest.raises(Refused):
            imaging.reencode(images.png_bomb(), AVATAR, LIMITS)
    assert time.monotonic() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB
