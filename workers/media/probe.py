"""Probing an upload: ffprobe's command, its JSON checked against the limits, and a
readable reason when ffprobe fails. Pure: `workers.media.ffmpeg.probe` runs the command.

Security model for untrusted uploads (core/ffargs.py): every ffprobe/ffmpeg invocation
on an upload carries ``-protocol_whitelist file`` *and* ``-format_whitelist`` (only the
four real video demuxers), and names the input as ``file:<absolute path>``. Validating ``format_name``
after a plain probe is too late: ffprobe's hls and concat demuxers open the files an
upload references while probing. The whitelist stops them before their header is read;
`validate_probe` re-checks the container as a second line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from core.ffargs import input_url, probe_command, untrusted_input
from workers.media.colour import Colour, DolbyVision, refusal
from workers.media.colour import known as _named


class BadInput(Exception):
    """The upload itself is unusable (permanent: retrying cannot help)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Bounds an upload must meet; anything outside is a `BadInput`."""

    max_duration: float = 600.0
    min_duration: float = 0.1
    max_width: int = 7680
    max_height: int = 4320
    max_bytes: int = 4 * 1024**3
    min_side: int = 16
    # decoded pixels per second (width x height x frame rate): the job's cost grows with
    # it; the default admits 4096x2160 at 60 fps (DCI 4K60), not 8K60
    max_pixel_rate: float = 4096 * 2160 * 60


#: ffprobe ``format_name`` tokens of the containers we accept (all tokens must be here).
ALLOWED_FORMATS: frozenset[str] = frozenset(
    {"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "mpegts", "avi"}
)
#: Demuxers handed to ``-format_whitelist``; each one's name list is inside ALLOWED_FORMATS.
DEMUXERS: tuple[str, ...] = ("mov", "matroska", "mpegts", "avi")
FORMAT_WHITELIST = ",".join(DEMUXERS)

_IMAGE_CODECS = frozenset(
    {
        "png",
        "apng",
        "mjpeg",
        "jpegls",
        "bmp",
        "gif",
        "webp",
        "tiff",
        "jpeg2000",
        "pam",
        "ppm",
        "pgm",
        "pbm",
        "sgi",
        "targa",
        "qoi",
        "jpegxl",
        "exr",
        "dpx",
        "psd",
    }
)
_CLOCK = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


@dataclass(frozen=True)
class MediaInfo:
    """What the transcoder needs to know about a validated upload.

    ``width``/``height`` are the display size: after the display matrix (phones store
    portrait video as rotated landscape) and the sample aspect ratio. The display matrix
    is ``mirrored`` (horizontally) first, then turned ``rotation`` degrees clockwise.
    ``fps`` is the mean rate of the frames; ``vfr``: the frames are not evenly spaced
    (phones), or the container does not say that they are.
    """

    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None
    video_codec: str
    format_name: str
    audio_codec: str | None = None
    coded_width: int = 0
    coded_height: int = 0
    rotation: int = 0
    sar: tuple[int, int] = (1, 1)
    interlaced: bool = False
    pix_fmt: str | None = None
    size_bytes: int | None = None
    video_stream: int = 0  # absolute ffprobe stream index (cover art is skipped)
    audio_stream: int | None = None
    mirrored: bool = False
    vfr: bool = False
    colour: Colour = Colour()

    @property
    def demuxer(self) -> str:
        """The ffmpeg demuxer to force with ``-f`` for this container."""
        tokens = self.format_name.split(",")
        for name in DEMUXERS:
            if name in tokens:
                return name
        raise BadInput(f"not a video container ({self.format_name})")


def ffprobe_command(path: str | os.PathLike[str]) -> list[str]:
    """ffprobe of an untrusted upload: local file only, real video demuxers only."""
    return probe_command(path, DEMUXERS)


def finite_float(value: Any) -> float | None:
    """A finite float from ffprobe/ffmpeg text (``"9.000000"``); ``"N/A"``, nan, garbage -> None."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def clock_seconds(text: str) -> float | None:
    """``"01:02:03.5"`` (ffmpeg's H:MM:SS.frac clock) -> 3723.5; anything else -> None."""
    m = _CLOCK.match(text.strip())
    if not m:
        return None
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_rate(value: Any) -> float | None:
    """``"30000/1001"`` -> 29.97; ``"0/0"``, ``"N/A"``, garbage -> None."""
    if not isinstance(value, str):
        return None
    num, _, den = value.partition("/")
    n, d = finite_float(num), finite_float(den or "1")
    if n is None or d is None or d == 0 or n <= 0:
        return None
    return n / d


def _tag_duration(tags: Mapping[str, Any]) -> float | None:
    for key, value in tags.items():
        if key.upper() == "DURATION" and isinstance(value, str):
            seconds = clock_seconds(value)
            if seconds is not None:
                return seconds
    return None


_MATRIX_ROW = re.compile(r"^\s*[0-9a-fA-F]+:\s+(-?\d+)\s+(-?\d+)\s+(-?\d+)\s*$")


def display_matrix(text: str) -> tuple[int, ...] | None:
    """The 9 entries of ffprobe's ``displaymatrix`` dump (three rows ``0000000i: a b
    c``), or None when it is not one."""
    rows = [_MATRIX_ROW.match(ln) for ln in text.splitlines() if ln.strip()]
    if len(rows) != 3 or not all(rows):
        return None
    return tuple(int(v) for m in rows if m for v in m.groups())


def _not_quarter(angle: float) -> BadInput:
    return BadInput(
        f"display rotation of {round(angle, 2):g} degrees is not a multiple of 90: the clip would "
        f"play tilted; export it upright"
    )


def _quarter(clockwise: float, shown: float | None = None) -> int:
    """`clockwise` as 0, 90, 180 or 270; any other angle is refused, named as `shown`
    (ffprobe's counterclockwise ``rotation``, what tools show) or as itself."""
    quarter = round(clockwise / 90.0)
    if abs(clockwise - quarter * 90) > 0.5:
        raise _not_quarter(clockwise if shown is None else shown)
    return int(quarter) * 90 % 360


def orientation(matrix: tuple[int, ...]) -> tuple[int, bool]:
    """(clockwise rotation, mirrored) of a display matrix (ISO/IEC 14496-12 §8.3.2 `tkhd`
    matrix, as libavutil/display.h keeps it: a point (x, y) of the coded picture, y down,
    is shown at (a*x + c*y, b*x + d*y)). Mirrored matrices are a horizontal mirror, then
    the rotation: the eight ways a phone stores a picture. ffmpeg's own autorotation
    (fftools, 5.1) reads them the same way. Any other angle is refused."""
    a, b, _, c, d, *_ = (float(v) for v in matrix)
    if math.hypot(a, b) == 0 or math.hypot(c, d) == 0:
        raise BadInput("the display matrix is degenerate (it shows no picture)")
    mirrored = a * d - b * c < 0
    if mirrored:  # the rotation after a mirror: where the mirrored x axis goes
        a, b = -a, -b
    clockwise = math.degrees(math.atan2(b, a))
    return _quarter(clockwise, shown=-clockwise), mirrored


def _orientation(stream: Mapping[str, Any]) -> tuple[int, bool]:
    """(clockwise rotation, mirrored) of the stream's display matrix: its full dump when
    ffprobe gives it, else its ``rotation`` (counterclockwise, libavutil's sign), else a
    ``rotate`` tag (clockwise, older ffmpeg). Phones write multiples of 90; any other angle
    would be published tilted and cropped, so it is refused."""
    for side in stream.get("side_data_list") or ():
        if not isinstance(side, Mapping):
            continue
        matrix = display_matrix(str(side.get("displaymatrix") or ""))
        if matrix is not None:
            return orientation(matrix)
        counterclockwise = finite_float(side.get("rotation"))
        if counterclockwise is not None:
            return _quarter(-counterclockwise, shown=counterclockwise), False
    tag = finite_float((stream.get("tags") or {}).get("rotate"))
    return (_quarter(tag), False) if tag is not None else (0, False)


def _sar(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        num, _, den = value.partition(":")
        n, d = _int(num), _int(den)
        if n and d and n > 0 and d > 0:
            f = Fraction(n, d)
            return (f.numerator, f.denominator)
    return (1, 1)


def _videos(streams: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The video streams that are pictures in motion (cover art is not)."""
    return [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]


#: The highest frame rate believed (slow-motion phones record 240 fps): above it a
#: "rate" is a container's time base (1000 for Matroska and WebM, 90000 for MPEG-TS).
MAX_RATE = 1000.0
#: The highest rate believed from a container that declares no mean rate (slow-motion
#: capture): above it, a declared rate alone is its time base.
MAX_DECLARED_RATE = 240.0
#: How far the declared rate may be from the mean for the frames to count as evenly
#: spaced (the 1 % within which the transcoder snaps rates, workers.media.h264).
RATE_TOLERANCE = 0.01


def _plausible(rate: float | None) -> float | None:
    return rate if rate is not None and 1.0 <= rate <= MAX_RATE else None


def needs_frame_count(probe: Mapping[str, Any]) -> int | None:
    """The video stream's index when its container does not declare the mean frame
    rate (Matroska/WebM and MPEG-TS with variable rate: avg_frame_rate 0/0, and a
    time base where the rate should be): its frames are then counted
    (`frame_count_command`). None when there is nothing to count."""
    streams = [s for s in probe.get("streams") or () if isinstance(s, Mapping)]
    videos = _videos(streams)
    if not videos or _plausible(parse_rate(videos[0].get("avg_frame_rate"))) is not None:
        return None
    return _int(videos[0].get("index"))


def frame_count_command(path: str | os.PathLike[str], stream: int) -> list[str]:
    """ffprobe counting the packets of video stream `stream` of an upload (demuxing
    only, no decoding; the upload opened as `ffprobe_command` opens it)."""
    return [
        "ffprobe",
        "-v",
        "error",
        "-hide_banner",
        *untrusted_input(DEMUXERS),
        "-count_packets",
        "-select_streams",
        str(stream),
        "-show_entries",
        "stream=nb_read_packets",
        "-print_format",
        "json",
        "-i",
        input_url(path),
    ]


def counted_frames(output: Mapping[str, Any]) -> int | None:
    """The count from `frame_count_command`'s JSON."""
    streams = output.get("streams") or []
    first = streams[0] if streams and isinstance(streams[0], Mapping) else {}
    return _int(first.get("nb_read_packets"))


def frame_rate(
    video: Mapping[str, Any], duration: float, frames: int | None = None
) -> tuple[float, bool]:
    """(mean frame rate, variable) of a video stream. The mean is the container's
    (MP4/MOV: frames over duration, exact) or the counted `frames` over `duration`;
    never a time base (a Matroska or MPEG-TS "1000 fps" or "90000 fps"). The rate is
    variable when the declared rate (ffprobe's r_frame_rate, the finest rate the
    timestamps need) is not the mean: jittered or dropped frames (phones), or a time
    base. 0.0 when nothing says."""
    declared = _plausible(parse_rate(video.get("r_frame_rate")))
    mean = _plausible(parse_rate(video.get("avg_frame_rate")))
    if mean is None and frames and duration > 0:
        mean = _plausible(frames / duration)
    if mean is None:
        alone = declared if declared is not None and declared <= MAX_DECLARED_RATE else None
        return (alone or 0.0), False
    variable = declared is None or abs(declared - mean) > mean * RATE_TOLERANCE
    return mean, variable


def _side_data(stream: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for side in stream.get("side_data_list") or ():
        if isinstance(side, Mapping) and str(side.get("side_data_type", "")).lower() == kind:
            return side
    return None


_DEPTH = re.compile(r"(\d+)(?:le|be)$")


def bit_depth(stream: Mapping[str, Any]) -> int:
    """Bits per sample of a video stream: ffprobe's bits_per_raw_sample, else its pixel
    format's name (yuv420p10le -> 10), else 8."""
    raw = _int(stream.get("bits_per_raw_sample"))
    if raw and 8 <= raw <= 16:
        return raw
    m = _DEPTH.search(str(stream.get("pix_fmt") or ""))
    return int(m[1]) if m and 8 <= int(m[1]) <= 16 else 8


def read_colour(stream: Mapping[str, Any]) -> Colour:
    """The `Colour` ffprobe reports for a video stream: the VUI's transfer, primaries,
    matrix and range, the bit depth, and its side data (the container's mastering
    display and content light level, the Dolby Vision configuration record)."""
    pix_fmt = str(stream.get("pix_fmt") or "")
    mastering = _side_data(stream, "mastering display metadata") or {}
    light = _side_data(stream, "content light level metadata") or {}
    dovi = _side_data(stream, "dovi configuration record")
    return Colour(
        transfer=_named(stream.get("color_transfer")),
        primaries=_named(stream.get("color_primaries")),
        matrix=_named(stream.get("color_space")),
        full_range=stream.get("color_range") == "pc" or pix_fmt.startswith("yuvj"),
        bit_depth=bit_depth(stream),
        mastering_peak=_positive(parse_rate(str(mastering.get("max_luminance") or ""))),
        max_cll=_int(light.get("max_content")) or None,
        max_fall=_int(light.get("max_average")) or None,
        dovi=None
        if dovi is None
        else DolbyVision(
            profile=_int(dovi.get("dv_profile")) or 0,
            level=_int(dovi.get("dv_level")) or 0,
            compatibility=_int(dovi.get("dv_bl_signal_compatibility_id")) or 0,
            base_layer=bool(_int(dovi.get("bl_present_flag"))),
            rpu=bool(_int(dovi.get("rpu_present_flag"))),
            enhancement_layer=bool(_int(dovi.get("el_present_flag"))),
        ),
    )


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


def validate_probe(
    probe: Mapping[str, Any], limits: Limits | None = None, *, frames: int | None = None
) -> MediaInfo:
    """Check ffprobe's JSON against the limits; raise `BadInput` with a readable reason.
    `frames`: the video stream's packets counted (`frame_count_command`), for a
    container that does not declare its mean frame rate (`needs_frame_count`)."""
    limits = limits or Limits()
    fmt = probe.get("format") or {}
    format_name = str(fmt.get("format_name") or "")
    if not format_name:
        raise BadInput("not a readable video file: unknown container")
    tokens = format_name.split(",")
    if "image2" in tokens or "image2pipe" in tokens or any(t.endswith("_pipe") for t in tokens):
        raise BadInput(f"a still image ({format_name}), not a video")
    if not all(t in ALLOWED_FORMATS for t in tokens):
        raise BadInput(f"not a video container ({format_name})")

    size = _int(fmt.get("size"))
    if size is not None and size > limits.max_bytes:
        raise BadInput(
            f"file is {size / 1e6:.0f} MB, above the limit of {limits.max_bytes / 1e6:.0f} MB"
        )

    streams = [s for s in probe.get("streams") or () if isinstance(s, Mapping)]
    videos = _videos(streams)
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        raise BadInput("audio only" if audios else "no video stream")
    video = videos[0]
    codec = str(video.get("codec_name") or "")
    if not codec or codec == "none":
        raise BadInput("unsupported video codec (ffmpeg cannot identify it)")
    nb_frames = _int(video.get("nb_frames"))
    if codec in _IMAGE_CODECS and (nb_frames is None or nb_frames <= 1):
        raise BadInput(f"a still image ({codec}), not a video")

    coded_w, coded_h = _int(video.get("width")) or 0, _int(video.get("height")) or 0
    if coded_w <= 0 or coded_h <= 0:
        raise BadInput("could not read the picture size")
    if min(coded_w, coded_h) < limits.min_side:
        raise BadInput(f"picture {coded_w}x{coded_h} is too small")
    if max(coded_w, coded_h) > max(limits.max_width, limits.max_height) or min(
        coded_w, coded_h
    ) > min(limits.max_width, limits.max_height):
        raise BadInput(
            f"picture {coded_w}x{coded_h} exceeds the maximum {limits.max_width}x{limits.max_height}"
        )

    candidates = [
        finite_float(video.get("duration")),
        _tag_duration(video.get("tags") or {}),
        finite_float(fmt.get("duration")),
    ]
    known = [d for d in candidates if d is not None and d >= 0]
    if not known:
        raise BadInput("could not read duration")
    duration = next((d for d in known if d > 0), 0.0)
    longest = max(known)
    if duration < limits.min_duration:
        raise BadInput(f"duration {duration:.1f} s is below the minimum {limits.min_duration:g} s")
    if longest > limits.max_duration:
        raise BadInput(f"duration {longest:.1f} s exceeds the maximum {limits.max_duration:g} s")

    fps, vfr = frame_rate(video, duration, frames)

    if fps and coded_w * coded_h * fps > limits.max_pixel_rate:
        raise BadInput(
            f"{coded_w}x{coded_h} at {fps:g} fps is {coded_w * coded_h * fps / 1e6:.0f} million "
            f"pixels per second, above the maximum of {limits.max_pixel_rate / 1e6:.0f} million"
        )
    rotation, mirrored = _orientation(video)
    colour = read_colour(video)
    why = refusal(colour)
    if why is not None:
        raise BadInput(why)
    sar = _sar(video.get("sample_aspect_ratio"))
    disp_w = int(round(coded_w * sar[0] / sar[1]))
    disp_w, disp_h = (coded_h, disp_w) if rotation in (90, 270) else (disp_w, coded_h)

    audio = audios[0] if audios else None
    return MediaInfo(
        duration=duration,
        width=disp_w,
        height=disp_h,
        fps=fps,
        has_audio=audio is not None,
        audio_sample_rate=_int(audio.get("sample_rate")) if audio else None,
        audio_channels=_int(audio.get("channels")) if audio else None,
        video_codec=codec,
        format_name=format_name,
        audio_codec=str(audio.get("codec_name")) if audio and audio.get("codec_name") else None,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=rotation,
        sar=sar,
        interlaced=str(video.get("field_order") or "") in {"tt", "bb", "tb", "bt"},
        pix_fmt=str(video.get("pix_fmt")) if video.get("pix_fmt") else None,
        size_bytes=size,
        video_stream=_int(video.get("index")) or 0,
        audio_stream=_int(audio.get("index")) if audio else None,
        mirrored=mirrored,
        vfr=vfr,
        colour=colour,
    )


_SHOWINFO = re.compile(r"^\[Parsed_showinfo_\d+ @ [^\]]*\]\s+n:\s*\d+ .*?\bs:(\d+)x(\d+)\b")


def check_first_frame(stderr: str, info: MediaInfo) -> None:
    """The first decoded picture (`workers.media.encoding.first_frame_command`'s log) must have the size the
    stream declares (what the limits were checked against and the transcode is built
    for): a stream declaring 7680x4320 over 64x64 of data, or data that decodes to no
    picture at all, is refused."""
    declared = f"{info.coded_width}x{info.coded_height}"
    lines = stderr.splitlines()
    first = next((m for m in map(_SHOWINFO.match, lines) if m), None)
    if first is None:
        # the decoder's own complaint, the last one (no path: those lines name the codec)
        why = [
            _PROBE_ERROR_PREFIX.sub("", ln).strip()
            for ln in lines
            if _PROBE_ERROR_PREFIX.match(ln) and "showinfo" not in ln
        ]
        detail = f": {why[-1][:200]}" if why else ""
        raise BadInput(f"no picture could be decoded at the declared size {declared}{detail}")
    width, height = int(first.group(1)), int(first.group(2))
    if (width, height) != (info.coded_width, info.coded_height):
        raise BadInput(
            f"the stream declares a {declared} picture but its first picture is "
            f"{width}x{height}: damaged or crafted"
        )


_FRAME_COLOUR = re.compile(
    r"color_range:(\S+) color_space:(\S+) color_primaries:(\S+) color_trc:(\S+)"
)
_FRAME_PEAK = re.compile(r"side data - mastering display:.*max_luminance=([0-9.]+)")
_FRAME_LIGHT = re.compile(r"MaxCLL=(\d+), MaxFALL=(\d+)")


def first_frame_colour(stderr: str, info: MediaInfo) -> MediaInfo:
    """`info` with what its first decoded picture says of its colour (the log of
    `workers.media.encoding.first_frame_command`, ``showinfo``): the decoder's transfer,
    primaries, matrix and range where the stream left them unsaid or the bitstream
    overrides them (an HEVC alternative transfer characteristics SEI), and the HEVC
    mastering display and content light level SEI (HDR10), which a container may not
    repeat."""
    text = stderr[stderr.find("] n:") :] if "] n:" in stderr else ""
    colour = info.colour
    changes: dict[str, Any] = {}
    m = _FRAME_COLOUR.search(text)
    if m:
        rng, matrix, primaries, transfer = (_named(v) for v in m.groups())
        for field, value in (("transfer", transfer), ("primaries", primaries), ("matrix", matrix)):
            if value is not None and value != getattr(colour, field):
                changes[field] = value
        if rng == "pc" and not colour.full_range:
            changes["full_range"] = True
    peak = _FRAME_PEAK.search(text)
    if peak and colour.mastering_peak is None:
        changes["mastering_peak"] = _positive(finite_float(peak[1]))
    light = _FRAME_LIGHT.search(text)
    if light and colour.max_cll is None:
        changes["max_cll"] = int(light[1]) or None
        changes["max_fall"] = int(light[2]) or None
    if not changes:
        return info
    return dataclasses.replace(info, colour=dataclasses.replace(colour, **changes))


_PROBE_ERROR_PREFIX = re.compile(r"^\[([^\]@]+?) @ 0x[0-9a-f]+\]\s*")


def probe_failure_reason(stderr: str, path: str | os.PathLike[str] | None = None) -> str:
    """Readable reason from a failed ffprobe's stderr (run with `ffprobe_command`)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        m = _PROBE_ERROR_PREFIX.match(ln)
        if m and "Format not on whitelist" in ln:
            name = m[1].strip()
            if "image2" in name or name.endswith("_pipe"):
                return f"a still image ({name}), not a video"
            return f"not a video container ({name})"
    messages: list[str] = []
    prefixes = [input_url(path), os.fspath(path)] if path is not None else []
    for ln in lines:
        ln = _PROBE_ERROR_PREFIX.sub("", ln)
        for p in prefixes:
            if ln.startswith(p + ":"):
                ln = ln[len(p) + 1 :].strip()
        if ln and ln not in messages:
            messages.append(ln)
    if not messages:
        return "not a readable video file"
    # The last line is the top-level error; an earlier one is usually its cause.
    detail = (
        messages[-1] if len(messages) == 1 else f"{messages[-1]} ({'; '.join(messages[:-1])[:200]})"
    )
    return f"not a readable video file: {detail}"
