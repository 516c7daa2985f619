"""Re-encoding an uploaded image with Pillow: the bytes in, a fresh JPEG or PNG of the
kind's size out, with nothing of the upload but its first frame's pixels. CPU work
without I/O, run in a worker thread by origin/assets/service.py; the decisions (formats,
limits, sizes, structure) are origin/assets/rules.py's.

Order, so that no pixel is decoded before it is allowed: sniff the format from the
bytes and check the structure around the image (assetrules); open the header with
only that format's plugin; check the declared size against the pixel limit (Pillow's
``MAX_IMAGE_PIXELS`` is set to the same limit by ``configure``, and its
``DecompressionBombWarning`` is an error); ask libjpeg for a reduced decode when
the stored size allows; decode the first frame; apply the EXIF orientation; convert
an embedded ICC profile's colours to sRGB; flatten to RGB (or RGBA for PNG kinds);
crop and scale; drop every piece of metadata (EXIF, GPS, XMP, ICC, text chunks,
comments) and encode.
"""

from __future__ import annotations

import io
import re
import warnings
from functools import cache

from PIL import Image, ImageCms, ImageOps

from origin.assets import rules
from origin.assets.rules import AssetLimits, ImageRule, Processed, Refused

_BOMB = (Image.DecompressionBombWarning, Image.DecompressionBombError)
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def configure(max_pixels: int) -> None:
    """Pillow's own bomb check at our pixel limit, its warning raised as an error.
    Process-wide (Pillow keeps both globally); the app calls it when it starts."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _to_srgb(im: Image.Image) -> Image.Image:
    """Colours converted from the embedded ICC profile to sRGB (the profile itself is
    dropped later); an unusable profile is ignored and the pixels taken as sRGB."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, source, _srgb(), outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im
    return converted if converted is not None else im


def _flatten(im: Image.Image, keep_alpha: bool) -> Image.Image:
    """RGB, or RGBA when the image has transparency and the kind keeps it; 16-bit
    greyscale scaled to 8 bits, transparency over white for JPEG."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = im.convert("I").point(lambda v: v / 256).convert("L")
    if not _has_alpha(im):
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    if keep_alpha:
        return rgba
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white


def _bomb(exc: Exception, limits: AssetLimits) -> Refused:
    """Pillow's bomb check said no (its message names the pixel count)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
    return Refused(
        422,
        "too_many_pixels",
        f"the image declares {pixels}, above the limit of {limits.max_pixels / 1e6:g} "
        "megapixels (refused before decoding)",
    )


def _decoded(data: bytes, fmt: str, rule: ImageRule, limits: AssetLimits) -> Image.Image:
    """The first frame, decoded (reduced while decoding when a JPEG allows it)."""
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except _BOMB as exc:
        raise _bomb(exc, limits) from None
    except Exception as exc:  # hostile input: whatever the decoder says, it is a 422
        raise Refused(422, "damaged_image", f"the {fmt} image cannot be read ({exc})") from None
    rules.check_pixels(im.width, im.height, limits)
    try:
        if fmt == "JPEG":
            im.draft(None, rules.draft_size(rule, im.width, im.height))
        im.seek(0)
        im.load()
    except _BOMB as exc:
        raise _bomb(exc, limits) from None
    except Exception as exc:
        raise Refused(
            422, "damaged_image", f"the {fmt} image is truncated or damaged ({exc})"
        ) from None
    return im


def reencode(data: bytes, rule: ImageRule, limits: AssetLimits) -> Processed:
    """The stored form of an uploaded image, or Refused (415 or 422)."""
    fmt = rules.sniff_image(data[: rules.SNIFF_BYTES])
    rules.check_structure(fmt, data)
    im = _decoded(data, fmt, rule, limits)
    try:
        im = ImageOps.exif_transpose(im) or im
    except Exception:  # a broken EXIF block: keep the pixels as they are
        pass
    im = _flatten(_to_srgb(im), keep_alpha=rule.format == "PNG")
    box, size = rules.geometry(rule, im.width, im.height)
    if size != im.size or box != (0, 0, im.width, im.height):
        im = im.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    im.info = {}  # nothing of the upload travels: EXIF, XMP, ICC, text, comments
    out = io.BytesIO()
    if rule.format == "JPEG":
        im.save(out, "JPEG", quality=85, optimize=True)
    else:
        im.save(out, "PNG", compress_level=6)
    return Processed(out.getvalue(), rule.content_type, im.width, im.height)
