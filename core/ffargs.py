"""How every ffprobe/ffmpeg of ours opens its input, shared by the workers (uploads,
their own segments read back) and the origin (a scene's voice anchor,
origin/assets/voice.py; frame grabs from stored segments), and how every still of ours
is written as a JPEG (`JPEG_SCALE`: the worker's thumbnails and storyboards, the
origin's thumbnails at a moment). Pure.

Security model: an input is named as ``file:<absolute path>`` (no protocol prefix or
leading ``-`` in a file name is interpreted), ``-protocol_whitelist file`` keeps the
demuxer from opening anything but local files, and ``-format_whitelist`` with a forced
``-f`` names the only demuxers allowed, so a crafted file (an HLS or ffconcat playlist
disguised as media) can never make ffmpeg read other files or the network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

#: The scale options that turn a picture of ours (every rendition is BT.709 limited
#: range, workers/media/colour.py) into what a JPEG is read as (JFIF 1.02: BT.601
#: matrix, full range), and the pixel format that goes with it. Left to ffmpeg, the
#: mjpeg encoder's automatic conversion changes the range only, and every viewer then
#: shows the BT.709 picture through BT.601's matrix: a hue shift.
JPEG_SCALE = "in_color_matrix=bt709:out_color_matrix=bt601:in_range=tv:out_range=pc"
JPEG_PIX_FMT = "yuvj420p"

#: Only local files, whatever a demuxer would like to open.
PROTOCOL_WHITELIST: tuple[str, ...] = ("-protocol_whitelist", "file")


def input_url(path: str | os.PathLike[str]) -> str:
    """``file:`` URL for ffmpeg: no protocol prefix or leading ``-`` in a name is interpreted."""
    return "file:" + os.path.abspath(os.fspath(path))


def untrusted_input(demuxers: Sequence[str]) -> list[str]:
    """The options that go before an untrusted ``-i``: local files only, and only
    ``demuxers`` may open it."""
    if not demuxers or any(not d.isidentifier() for d in demuxers):
        raise ValueError(f"demuxer names expected, not {demuxers!r}")
    return [*PROTOCOL_WHITELIST, "-format_whitelist", ",".join(demuxers)]


def probe_command(
    path: str | os.PathLike[str], demuxers: Sequence[str], *, force: str | None = None
) -> list[str]:
    """ffprobe of an untrusted file: its container and streams as JSON, read by one of
    `demuxers` only (`force`: the one to use, without probing)."""
    return [
        "ffprobe",
        "-v",
        "error",
        "-hide_banner",
        *untrusted_input(demuxers),
        *(("-f", force) if force else ()),
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        input_url(path),
    ]


def mpegts_input(path: str | os.PathLike[str]) -> list[str]:
    """Input options and ``-i`` for one of our own MPEG-TS media segments: a local file,
    the mpegts demuxer and nothing else."""
    return [
        *PROTOCOL_WHITELIST,
        "-format_whitelist",
        "mpegts",
        "-f",
        "mpegts",
        "-i",
        input_url(path),
    ]
