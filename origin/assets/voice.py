"""A scene's voice anchor (``voice_anchor.wav``, seed §2): what the upload must be, and
the ffprobe and ffmpeg commands that check it and re-mux it to 48 kHz 16-bit PCM WAV.
Pure: origin/assets/service.py runs them (core/procs.py).

The upload must be a WAV file (RIFF or RF64 ``WAVE``) of one audio stream any ffmpeg
decoder reads, between ``voice_min_seconds`` and ``voice_max_seconds`` long. ffprobe
and ffmpeg read it as clips are read (core/ffargs.py): the ``file`` protocol only,
and only the ``wav`` demuxer, forced with ``-f`` — a playlist or concat script named
``.wav`` is never opened by the demuxer that would follow its references. The stored
file is a fresh 48 kHz ``pcm_s16le`` WAV with no metadata; a mono voice stays mono,
anything with more channels is down-mixed to stereo (ffmpeg's standard matrices), and
``-t`` bounds it whatever its header claims.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core import ffargs
from core.ffargs import input_url, untrusted_input
from origin.assets.rules import AssetLimits, Refused, describe_foreign, unsupported

DEMUXERS = ("wav",)
SAMPLE_RATE = 48_000
CODEC = "pcm_s16le"
MAX_CHANNELS = 32
WANTED = "send a WAV recording (RIFF/WAVE)"


@dataclass(frozen=True)
class VoiceInfo:
    duration: float
    sample_rate: int
    channels: int
    codec: str


def sniff_wav(head: bytes) -> None:
    """Refuse (415) a file whose first bytes are not a WAV header, naming what it is."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return
    foreign = describe_foreign(head)
    raise unsupported(f"this is {foreign}, not a WAV file" if foreign else "not a WAV file", WANTED)


def probe_command(path: str | os.PathLike[str]) -> list[str]:
    """ffprobe of the upload (and of the re-muxed file): streams and format as JSON."""
    return ffargs.probe_command(path, DEMUXERS, force=DEMUXERS[0])


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and out not in (float("inf"), float("-inf")) else None


def _audio(probe: Mapping[str, Any]) -> VoiceInfo:
    fmt = probe.get("format") or {}
    if str(fmt.get("format_name") or "") != "wav":
        raise unsupported("not a WAV file", WANTED)
    streams = [s for s in probe.get("streams") or () if isinstance(s, Mapping)]
    if len(streams) != 1 or streams[0].get("codec_type") != "audio":
        raise Refused(422, "bad_audio", "the WAV file must hold exactly one audio stream")
    stream = streams[0]
    codec = str(stream.get("codec_name") or "")
    rate = int(_number(stream.get("sample_rate")) or 0)
    channels = int(_number(stream.get("channels")) or 0)
    durations = [_number(stream.get("duration")), _number(fmt.get("duration"))]
    known = [d for d in durations if d is not None and d >= 0]
    if not codec or codec == "none":
        raise Refused(422, "bad_audio", "the WAV file's audio codec is unknown")
    if not 1 <= channels <= MAX_CHANNELS or not 1000 <= rate <= 768_000:
        raise Refused(422, "bad_audio", f"the WAV file declares {channels} channels at {rate} Hz")
    if not known:
        raise Refused(422, "bad_audio", "the WAV file's duration cannot be read")
    return VoiceInfo(max(known), rate, channels, codec)


def validate_probe(probe: Mapping[str, Any], limits: AssetLimits) -> VoiceInfo:
    """The upload's ffprobe JSON checked: a WAV, one audio stream, a readable codec,
    a duration within the limits. Refused (415 or 422) with the reason otherwise."""
    info = _audio(probe)
    if info.duration > limits.voice_max_seconds:
        raise Refused(
            422,
            "too_long",
            f"the recording is {info.duration:.1f} s long, above the limit of "
            f"{limits.voice_max_seconds:g} s",
        )
    if info.duration < limits.voice_min_seconds:
        raise Refused(
            422,
            "too_short",
            f"the recording is {info.duration:.2f} s long, below the minimum of "
            f"{limits.voice_min_seconds:g} s",
        )
    return info


def output_channels(channels: int) -> int:
    """Mono stays mono; everything else becomes stereo."""
    return 1 if channels == 1 else 2


def remux_command(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    info: VoiceInfo,
    limits: AssetLimits,
) -> list[str]:
    """ffmpeg: the first audio stream of the upload, decoded and written as a 48 kHz
    16-bit PCM WAV without metadata, at most `voice_max_seconds` long."""
    return [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-hide_banner",
        *untrusted_input(DEMUXERS),
        "-f",
        DEMUXERS[0],
        "-i",
        input_url(src),
        "-map",
        "0:a:0",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-t",
        f"{limits.voice_max_seconds:g}",
        "-ac",
        str(output_channels(info.channels)),
        "-ar",
        str(SAMPLE_RATE),
        "-c:a",
        CODEC,
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-f",
        "wav",
        "-y",
        input_url(dst),
    ]


def check_output(probe: Mapping[str, Any], limits: AssetLimits) -> VoiceInfo:
    """The re-muxed file's ffprobe JSON: what we wrote, or an error (not the upload's
    fault if it is not; a decoder that gave up early is)."""
    info = _audio(probe)
    if (info.codec, info.sample_rate) != (CODEC, SAMPLE_RATE) or info.channels not in (1, 2):
        raise ValueError(f"the re-mux wrote {info}")
    if info.duration < limits.voice_min_seconds:
        raise Refused(
            422,
            "damaged_audio",
            f"only {info.duration:.2f} s of the recording could be decoded (truncated or damaged)",
        )
    return info


_LOG_PREFIX = re.compile(r"^\[([^\]@]+?) @ 0x[0-9a-f]+\]\s*")


def failure(stderr: str, path: str | os.PathLike[str]) -> Refused:
    """Why ffprobe or ffmpeg could not read the upload, from its stderr: 415 when a
    demuxer other than wav claimed the file (an HLS playlist, say), else 422."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        m = _LOG_PREFIX.match(ln)
        if m and "Format not on whitelist" in ln:
            return unsupported(f"this is not a WAV file (ffmpeg reads it as {m[1]})", WANTED)
    url = input_url(path)
    detail = next(
        (
            _LOG_PREFIX.sub("", ln).replace(url + ":", "").strip()
            for ln in reversed(lines)
            if _LOG_PREFIX.sub("", ln).replace(url + ":", "").strip()
        ),
        "no reason given",
    )
    return Refused(422, "damaged_audio", f"the WAV file cannot be read: {detail[:200]}")
