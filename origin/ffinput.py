"""How every ffprobe and ffmpeg run reads a file someone uploaded, in the workers (a
clip) and in the origin (a scene's voice anchor): the input named as a ``file:`` URL,
the ``file`` protocol only, and only the demuxers the caller names. Pure.

The protocol whitelist alone is not enough: ffmpeg's hls and concat demuxers open the
files a text upload names while probing it. The demuxer whitelist stops them before
their header is read, and the caller forces the demuxer it validated with ``-f``
(docs/NOTES.md, "Upload validation")."""

from __future__ import annotations

import os
from collections.abc import Sequence

PROTOCOL_WHITELIST = "file"


def input_url(path: str | os.PathLike[str]) -> str:
    """``file:`` URL for ffmpeg: no protocol prefix or leading ``-`` in a name is interpreted."""
    return "file:" + os.path.abspath(os.fspath(path))


def untrusted_input(demuxers: Sequence[str]) -> list[str]:
    """The options that go before an untrusted ``-i``: local files only, and only
    ``demuxers`` may open it."""
    if not demuxers or any(not d.isidentifier() for d in demuxers):
        raise ValueError(f"demuxer names expected, not {demuxers!r}")
    return ["-protocol_whitelist", PROTOCOL_WHITELIST, "-format_whitelist", ",".join(demuxers)]


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
