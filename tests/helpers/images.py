"""Uploads for the asset tests, made in memory: photos carrying EXIF GPS, XMP, an ICC
profile and a comment, and the hostile files an image pipeline meets (a decompression
bomb, a truncated JPEG, a PNG that is also a ZIP, SVG, HTML named .png, an animated
GIF), and an HLS playlist that calls itself a WAV (WAV recordings: clips.make_wav)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import ExifTags, Image, ImageCms

GPS_LATITUDE = (48.0, 51.0, 29.5)


def _picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth gradient with a distinct top-left corner (where a crop starts)."""
    im = Image.linear_gradient("L").resize((width, height)).convert(mode)
    im.paste((255, 0, 0) if mode == "RGB" else (255, 0, 0, 255), (0, 0, 8, 8))
    return im


def photo_jpeg(width: int = 1200, height: int = 800, orientation: int = 1) -> bytes:
    """A JPEG as a phone writes it: EXIF (make, orientation, GPS position), XMP with a
    position too, an ICC profile and a comment holding HTML."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "StoryPhone"
    exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.2)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    _picture(width, height).save(
        out,
        "JPEG",
        quality=90,
        exif=exif,
        icc_profile=icc,
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>48,51.5N'
        b"</exif:GPSLatitude></x:xmpmeta>",
        comment=b"<html><script>alert(document.cookie)</script></html>",
    )
    return out.getvalue()


def png(width: int = 640, height: int = 360, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    _picture(width, height, mode).save(out, "PNG")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(side: int = 30_000) -> bytes:
    """A valid greyscale PNG header declaring side x side pixels with a few rows of
    zeros compressed to a few hundred bytes: decoding it would allocate side² bytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    idat = b"".join(compressor.compress(row) for _ in range(64)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = photo_jpeg(800, 600)
    return data[: len(data) * 2 // 3]


def png_zip_polyglot() -> bytes:
    """A PNG followed by a ZIP: image viewers show the PNG, unzip finds the archive."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("index.html", "<script>fetch('/api/v1/users')</script>")
    data = png(320, 180) + archive.getvalue()
    assert zipfile.is_zipfile(io.BytesIO(data))
    return data


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<script>alert(1)</script><image href="file:///etc/passwd"/></svg>'
)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.domain)</script></body></html>"


def animated_gif() -> bytes:
    """Two frames: red, then blue (the first frame is the one kept)."""
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def hls_playlist_named_wav(target: str = "file:///etc/passwd") -> bytes:
    """A playlist whose segment is a local file: the classic way to make a media
    pipeline read what it should not."""
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"
        f"{target}\n#EXT-X-ENDLIST\n"
    ).encode()


def wav_header_then_playlist() -> bytes:
    """RIFF/WAVE magic in front of a playlist: past the sniffing, ffprobe must still
    refuse it (it is no WAV ffmpeg can read)."""
    body = hls_playlist_named_wav()
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
