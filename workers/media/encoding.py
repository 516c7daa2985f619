"""The transcode's ffmpeg command and what it writes: the ladder of rungs, the filter
graph (one decode, made upright and BT.709 by `picture_chain`, split to every rung,
thumbnails and timeline frames; the loudness gain), the output frame rate, the command line, the loudness measurement pass before it, the names of its
outputs, its ``-progress`` lines, the media playlists it writes and the commands that
read its segments back. Pure: `workers.media.ffmpeg` runs the commands and feeds their output
back in here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import m3u8

from core.ffargs import JPEG_PIX_FMT, JPEG_SCALE, PROTOCOL_WHITELIST, input_url, mpegts_input
from core.framerate import STANDARD_RATES
from core.settings import DEFAULT_LADDER, LadderRung, StagePresets
from workers.media import colour
from workers.media.h264 import (
    Profile,
    codecs_string,
    h264_level,
    level_name,
    output_fps,
)
from workers.media.loudness import GainPlan
from workers.media.probe import FORMAT_WHITELIST, MediaInfo, clock_seconds, finite_float

# --------------------------------------------------------------------------- ladder


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Rung:
    """One rendition of the ladder: exact output frame and bit rates (bits/s). `crf`:
    per-title rate control (capped CRF at that constant rate factor, never above the
    rung's `maxrate`/`bufsize`); None: x264's ABR at `video_bitrate` under the same cap."""

    name: str
    width: int
    height: int
    video_bitrate: int
    audio_bitrate: int = 128_000
    crf: float | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"rung name {self.name!r} must be [A-Za-z0-9_-], used in file names")
        if self.width <= 0 or self.height <= 0 or self.width % 2 or self.height % 2:
            raise ValueError(
                f"rung {self.name}: {self.width}x{self.height} must be positive and even"
            )
        if self.video_bitrate <= 0 or self.audio_bitrate <= 0:
            raise ValueError(f"rung {self.name}: bit rates must be positive")
        if self.crf is not None and not 0 <= self.crf <= 51:
            raise ValueError(f"rung {self.name}: CRF {self.crf} is outside x264's 0-51")

    @property
    def profile(self) -> Profile:
        """H.264 profile: Main up to 1280x720, High above."""
        return "main" if self.width * self.height <= 1280 * 720 else "high"

    @property
    def maxrate(self) -> int:
        return self.video_bitrate * 3 // 2

    @property
    def bufsize(self) -> int:
        return self.video_bitrate * 2


def ladder_of(rungs: Iterable[LadderRung]) -> tuple[Rung, ...]:
    """The ladder as configured (LADDER, core/settings.py) as encoder rungs."""
    return tuple(Rung(r.name, r.width, r.height, r.video_bitrate, r.audio_bitrate) for r in rungs)


#: The default ladder as encoder rungs: derived from `core.settings.DEFAULT_LADDER`,
#: its one definition (the seed's 720p 1500k / 1080p 4000k, AAC 128k).
DEFAULT_RUNGS: tuple[Rung, ...] = ladder_of(DEFAULT_LADDER)


#: How far a rung may scale a source's picture up and still be made from it: a picture
#: a few pixels short of the rung's frame (a crop to whole macroblocks) fills it; a
#: 1600x900 source does not fill 1920x1080 (DESIGN "Transcode": a source smaller than
#: a rung is not upscaled into it).
UPSCALE_TOLERANCE = 1.02
#: The smallest side of a rendition (the probe's smallest accepted picture).
MIN_SIDE = 16


def fit_scale(info: MediaInfo, rung: Rung) -> float:
    """The factor `fit_filter` scales the upright picture (display size) by to fit
    inside the rung's frame: above 1 it would be enlarged."""
    return box_scale(info, (rung.width, rung.height))


def box_scale(info: MediaInfo, box: tuple[int, int]) -> float:
    """The factor `fit_filter` scales the upright picture by to fit inside `box`."""
    return min(box[0] / max(info.width, 1), box[1] / max(info.height, 1))


def clip_ladder(info: MediaInfo, ladder: Sequence[Rung]) -> tuple[Rung, ...]:
    """The rungs a clip gets, lowest first: every rung of `ladder` its picture fills
    without being enlarged (`UPSCALE_TOLERANCE`). A source smaller than every rung gets
    one rendition, the lowest rung's, at the picture's own size (even sides, square
    pixels, nothing padded): the stitched variants of the rungs it lacks play the
    clip's largest real rendition (core/playlists.py `stitched_master`)."""
    if not ladder:
        raise ValueError("empty ladder")
    ordered = sorted(ladder, key=lambda r: (r.width * r.height, r.video_bitrate))
    real = tuple(r for r in ordered if fit_scale(info, r) <= UPSCALE_TOLERANCE)
    if real:
        return real
    width = max(MIN_SIDE, info.width // 2 * 2)
    height = max(MIN_SIDE, info.height // 2 * 2)
    return (replace(ordered[0], width=width, height=height),)


def first_stage(ladder: Sequence[Rung]) -> tuple[Rung, ...]:
    """What the first of two stages makes of a clip's ladder (`clip_ladder`): its lowest
    rung alone, what a viewer needs to start (DESIGN "Transcode", "Two stages"); the
    refinement makes every rung."""
    return tuple(ladder[:1])


def per_title(ladder: Sequence[Rung], crf: Callable[[str], float]) -> tuple[Rung, ...]:
    """The ladder under per-title rate control: every rung capped CRF at `crf(name)`,
    under the rung's own VBV cap (`Rung.maxrate`, `Rung.bufsize`)."""
    return tuple(replace(r, crf=crf(r.name)) for r in ladder)


def abr(ladder: Sequence[Rung]) -> tuple[Rung, ...]:
    """The ladder at x264's ABR at each rung's bit rate (RATE_CONTROL=abr)."""
    return tuple(replace(r, crf=None) for r in ladder)


def budget(rung: Rung) -> int:
    """What a rendition of `rung` costs at ABR, bits/s: its video and audio bit rates
    (MPEG-TS headers aside)."""
    return rung.video_bitrate + rung.audio_bitrate


def over_budget(rung: Rung, durations: Sequence[float], sizes: Sequence[int]) -> bool:
    """A capped-CRF rendition of `rung` came out above what ABR spends on it (`budget`,
    measured over the files written): hard content, which per-title rate control
    leaves as the ABR ladder makes it (bench/README.md "Per-title rate control")."""
    seconds = sum(durations)
    return rung.crf is not None and seconds > 0 and 8 * sum(sizes) / seconds > budget(rung)


#: A capped-CRF rendition whose rate is at least this share of its cap (`Rung.maxrate`
#: plus the audio) ran against the cap: the encoder wanted more than the cap allows.
AT_CAP = 0.9


def at_cap(rung: Rung, durations: Sequence[float], sizes: Sequence[int]) -> bool:
    """A capped-CRF rendition of `rung` ran at its VBV cap (`AT_CAP`, measured over the
    files written): the first stage's `ultrafast` at the cap says the picture is so
    hard that the refinement's capped CRF would go over its ABR budget too (on the
    corpus: the cellular pattern and the noisy camera at 2.7 Mbit/s of a 2.4 Mbit/s
    cap; the talking head, 1.95, came out at half its budget at `medium`)."""
    seconds = sum(durations)
    if rung.crf is None or seconds <= 0:
        return False
    return 8 * sum(sizes) / seconds >= AT_CAP * (rung.maxrate + rung.audio_bitrate)


def stage_presets(ladder: Sequence[Rung], presets: StagePresets) -> dict[str, str]:
    """The x264 preset of every rung in one stage (FAST_PRESET, REFINE_PRESET)."""
    return {r.name: presets.of(r.name) for r in ladder}


def rung_level(rung: Rung, fps: float) -> int:
    return h264_level(rung.width, rung.height, fps, max_bitrate=rung.maxrate, profile=rung.profile)


def rung_codecs(rung: Rung, fps: float) -> str:
    """Expected CODECS video part of a rung at the output frame rate."""
    return codecs_string(rung.profile, rung_level(rung, fps))


# ------------------------------------------------------------- ffmpeg command

THUMBNAIL = "thumbnail.jpg"
THUMBNAIL_SIZE = (640, 360)
THUMBNAIL_LARGE = "thumbnail_large.jpg"
THUMBNAIL_LARGE_SIZE = (1280, 720)
FRAMES_DIR = "frames"
FRAME_PATTERN = "frame_%04d.jpg"
TIMELINE_TILE = (160, 90)
TRANSCODE_LOG = "transcode_log.txt"


def playlist_name(rung: Rung) -> str:
    return f"{rung.name}.m3u8"


def segment_pattern(rung: Rung) -> str:
    return f"{rung.name}_%04d.ts"


def segment_name(rung: Rung, number: int) -> str:
    """File name of a rung's segment `number` (1-based), as ffmpeg writes it."""
    return segment_pattern(rung) % number


def thumbnail_time(duration: float, fps: Fraction | None = None) -> float:
    """Thumbnail frame time: 2 s in, or mid-clip when the clip is shorter than 4 s. With
    the output `fps`, never after the clip's last frame (the thumbnail filter picks the
    first frame from then on: a clip of one frame has only the one at 0)."""
    at = min(2.0, duration / 2.0)
    if fps is None:
        return at
    last = max(math.ceil(duration * fps - 1e-6) - 1, 0) / fps  # frames at k / fps < duration
    return at if at <= last else max(0.0, float(last - 1 / (2 * fps)))


def timeline_times(duration: float, interval: float) -> list[float]:
    """Times of the storyboard frames: 0, interval, 2*interval, ... strictly before the end."""
    if interval <= 0:
        raise ValueError("interval must be positive")
    out: list[float] = []
    k = 0
    while k * interval < duration - 1e-9:
        out.append(round(k * interval, 6))
        k += 1
    return out


def _num(value: float) -> str:
    """Compact decimal for filter arguments: 2.0 -> "2", 6.4 -> "6.4"."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def fit_filter(width: int, height: int, scaler: str = "bicubic", *, jpeg: bool = False) -> str:
    """Scale to fit inside width x height keeping the display aspect, pad centred, SAR 1.

    Uses the scale filter's ``dar`` (iw/ih*sar), so anamorphic sources (HDV, DV) come out
    right, which ``force_original_aspect_ratio`` (pixel sizes only) would not do.
    Both sides are even; the fitted side equals the box exactly. `scaler`: libswscale's
    algorithm (bicubic, the scale filter's default, is not spelled out). With `jpeg`,
    the same scale also converts the picture to what a JPEG is read as (JFIF: BT.601,
    full range; `core.ffargs.JPEG_SCALE`), so a still shows the colours of the
    renditions it stands for.
    """
    w, h = width, height
    convert = f":{JPEG_SCALE},format={JPEG_PIX_FMT}" if jpeg else ""
    return (
        f"{fit_scale_filter(w, h, scaler)}{convert}"
        f",pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1"
    )


def fit_scale_filter(
    width: int, height: int, scaler: str = "bicubic", *, zimg: bool = False
) -> str:
    """`fit_filter`'s scale alone: the picture fitted inside width x height, its display
    aspect kept (the sample aspect ratio follows the rounding to even sides), nothing
    padded. Fitting its output into the same box again or into a smaller one gives the
    sizes a fit of the original would (`2*round(h*dar/2)` of a picture that has them is
    itself). With `zimg`, zscale resizes (`scaler`: its filter of that name) and
    nothing else: the picture keeps its format and colours."""
    if zimg:
        head = f"zscale=f={scaler}:"
    else:
        head = "scale=" + ("" if scaler == "bicubic" else f"flags={scaler}:")
    return (
        f"{head}w='if(gte(dar*{height},{width}),{width},2*round({height}*dar/2))'"
        f":h='if(gte(dar*{height},{width}),2*round({width}/dar/2),{height})'"
    )


#: The filters that show a coded picture upright: (clockwise rotation, mirrored) ->
#: transpose/flip filters (`workers.media.probe.orientation`: a horizontal mirror, then
#: the rotation). A mirror and a quarter turn make one transpose.
_ORIENTATIONS: dict[tuple[int, bool], tuple[str, ...]] = {
    (0, False): (),
    (0, True): ("hflip",),
    (90, False): ("transpose=clock",),
    (90, True): ("transpose=clock_flip",),
    (180, False): ("hflip", "vflip"),
    (180, True): ("vflip",),
    (270, False): ("transpose=cclock",),
    (270, True): ("transpose=cclock_flip",),
}


def orientation_filters(rotation: int, mirrored: bool = False) -> list[str]:
    """The display matrix baked into the pixels (iOS's HLS playback ignores it, and
    MPEG-TS cannot carry it): what ffmpeg's autorotation would insert, spelled out, so
    every output of the one graph is upright and nothing depends on it."""
    try:
        return list(_ORIENTATIONS[(rotation % 360, mirrored)])
    except KeyError:
        raise ValueError(f"rotation {rotation} is not a quarter turn") from None


def picture_chain(
    info: MediaInfo, box: tuple[int, int] | None = None, scaler: str = "bicubic"
) -> list[str]:
    """What every output of a clip is made from, after the frame rate: the colour chain
    (`workers.media.colour.chain`, to 8-bit BT.709 limited range) on the coded picture,
    then its display matrix (`orientation_filters`) on the 8-bit one.

    `box`: the largest frame (width, height) any output of the graph is fitted into.
    An HDR picture larger than it is first fitted into it (`fit_scale_filter`: zimg's
    `scaler`, in the coded orientation, on the 10-bit signal): the tone curve and zimg
    then convert no more pixels than the largest output has (a 1080p source's first
    stage, 720p: 0.44x), and every output's own fit finds its size already made. On a
    30 s 1080p HLG clip the chain costs about 4 CPU-s instead of 12.5 (bench/README.md
    "colour.py"); zimg resizes the 10 bits for 1 CPU-s less than libswscale."""
    coded = (info.coded_width, info.coded_height) if info.coded_width else (info.width, info.height)
    pre: list[str] = []
    if box is not None and info.colour.dynamic != "sdr" and box_scale(info, box) < 1:
        w, h = box if info.rotation % 180 == 0 else (box[1], box[0])
        pre.append(fit_scale_filter(w, h, scaler, zimg=True))
    upright = orientation_filters(info.rotation, info.mirrored)
    return [*pre, *colour.chain(info.colour, *coded), *upright]


def largest_box(ladder: Sequence[Rung], stills: bool) -> tuple[int, int]:
    """The smallest frame every output of a graph fits in: the rungs' frames and, with
    `stills`, the thumbnails' and the timeline tiles'."""
    boxes = [(r.width, r.height) for r in ladder]
    if stills:
        boxes += [THUMBNAIL_SIZE, THUMBNAIL_LARGE_SIZE, TIMELINE_TILE]
    return max(w for w, _ in boxes), max(h for _, h in boxes)


def output_rate(info: MediaInfo) -> Fraction:
    """The constant frame rate a clip is encoded at. A constant-rate source keeps its
    rate (`workers.media.h264.output_fps`: snapped within 1 % to a standard rate).
    A variable-rate source (phones) gets the standard rate nearest its mean rate among
    those it has frames for (never above the mean by more than that 1 %), so no frame is
    repeated to make up a rate the source never had; below every standard rate, the
    whole number of frames per second at or under its mean."""
    if not info.vfr or info.fps < 1.0:
        return output_fps(info.fps)
    mean = min(info.fps, 60.0)
    fits = [r for r in STANDARD_RATES if float(r) <= mean * 1.01]
    if fits:
        return min(fits, key=lambda r: abs(float(r) - mean))
    return Fraction(max(1, math.floor(mean)))


def audio_input(info: MediaInfo) -> str:
    """The upload's audio stream as a stream specifier (after ``0:``)."""
    return str(info.audio_stream) if info.audio_stream is not None else "a:0"


def audio_chain(info: MediaInfo) -> list[str]:
    """The audio filters that give every clip one layout: 48 kHz stereo float, starting
    at 0. The loudness measurement runs on exactly this signal (`loudness_command`), so
    the gain decided from it is the gain the transcode applies."""
    # mono -> both channels at full level (a plain downmix matrix would lose 3 dB)
    chain = ["channelmap=map=0-FL|0-FR:channel_layout=stereo"] if info.audio_channels == 1 else []
    return chain + [
        "aresample=48000:async=1:first_pts=0",
        "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo",
    ]


def filter_graph(
    info: MediaInfo,
    ladder: Sequence[Rung],
    *,
    fps: Fraction,
    thumb_at: float,
    frame_interval: float,
    loudness: GainPlan | None = None,
    stills: bool = True,
    presets: Mapping[str, str] | None = None,
) -> str:
    """The ``-filter_complex`` graph: one decode, split to every rung, thumbs and frames.

    Labels out: ``[v{i}]`` per rung, ``[a{j}]`` per audio bit rate (`audio_bitrates`:
    one AAC encode each, shared by the rungs at that rate), ``[thumb]``, ``[thumbl]``,
    ``[tl]`` (the last three only with `stills`; a refinement re-encodes the renditions
    alone). A rung whose frame the picture already is (`fills_exactly`) is not scaled;
    the others are scaled with `rung_scaler` of their x264 preset in `presets`.
    Video starts at 0 (first frame repeated if the source starts late) and ends at the
    probed duration; audio is padded/trimmed to the same span, so every rendition
    covers the same time range and a stitched scene has no jagged clip ends. The
    `loudness` plan's gain sits between the normalised audio and the padding.
    """
    end = _num(info.duration)
    n = len(ladder)
    pre = ["yadif=mode=send_frame:deint=interlaced"] if info.interlaced else []
    pre += [f"fps=fps={fps.numerator}/{fps.denominator}:start_time=0", f"trim=end={end}"]
    box = largest_box(ladder, stills)
    at_box = [r for r in ladder if (r.width, r.height) == box]
    box_scaler = rung_scaler((presets or {}).get(at_box[0].name, "")) if at_box else "bicubic"
    pre += picture_chain(info, box, box_scaler)
    labels = "".join(f"[s{i}]" for i in range(n))
    split = f"split={n + 2}{labels}[sthumb][stl]" if stills else f"split={n}{labels}"
    parts = [f"[0:{info.video_stream}]{','.join(pre)},{split}"]
    for i, rung in enumerate(ladder):
        # pad would copy every frame (split's frames are shared, so not writable)
        scaler = rung_scaler((presets or {}).get(rung.name, ""))
        fit = (
            "setsar=1" if fills_exactly(info, rung) else fit_filter(rung.width, rung.height, scaler)
        )
        parts.append(f"[s{i}]{fit},format=yuv420p[v{i}]")
    if stills:
        tw, th = THUMBNAIL_SIZE
        lw, lh = THUMBNAIL_LARGE_SIZE
        parts.append(f"[sthumb]select='gte(t,{_num(thumb_at)})*eq(selected_n,0)',split=2[th0][th1]")
        parts.append(f"[th0]{fit_filter(tw, th, jpeg=True)}[thumb]")
        parts.append(f"[th1]{fit_filter(lw, lh, jpeg=True)}[thumbl]")
        fw, fh = TIMELINE_TILE
        tile = fit_filter(fw, fh, jpeg=True)
        parts.append(f"[stl]select='gte(t,selected_n*{_num(frame_interval)})',{tile}[tl]")

    if info.has_audio:
        gain = loudness.filters() if loudness is not None else []
        chain = [*audio_chain(info), *gain, "apad", f"atrim=end={end}"]
        audio = f"[0:{audio_input(info)}]" + ",".join(chain)
    else:
        audio = f"anullsrc=r=48000:cl=stereo,atrim=end={end}"
    k = len(audio_bitrates(ladder))
    parts.append(audio + f",asplit={k}" + "".join(f"[a{j}]" for j in range(k)))
    return ";".join(parts)


def rung_scaler(preset: str) -> str:
    """The scaling algorithm of a rung encoded at x264 `preset`: bilinear at
    `ultrafast` (the first of two stages, chosen for speed and replaced within minutes:
    0.7 CPU-s less than bicubic per 30 s of 1080p30 to 720p, on ffmpeg's main thread;
    that rendition's SSIM moved by -0.002 to +0.003 with the source, bench/README.md),
    bicubic at every other."""
    return "bilinear" if preset == "ultrafast" else "bicubic"


def fills_exactly(info: MediaInfo, rung: Rung) -> bool:
    """The decoded picture (after the rotation ffmpeg applies) already is the rung's
    frame: the same size, square pixels. `fit_filter` would change nothing in it."""
    return (info.width, info.height) == (rung.width, rung.height) and info.sar == (1, 1)


def audio_bitrates(ladder: Sequence[Rung]) -> tuple[int, ...]:
    """The ladder's distinct audio bit rates, in rung order: the transcode runs one AAC
    encoder for each and muxes its packets into every rung at that rate."""
    return tuple(dict.fromkeys(r.audio_bitrate for r in ladder))


#: ffmpeg for a run whose answer is in its log at the info level (no banner, no stats).
_FFMPEG_INFO_LOG = ("ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info")


def first_frame_command(source: str | os.PathLike[str], info: MediaInfo) -> list[str]:
    """ffmpeg decoding the first picture of a validated upload's video stream and
    describing it (``showinfo``; `workers.media.probe.check_first_frame` reads its log), then
    stopping. Only key frames are decoded (``-skip_frame nokey``): a capture that starts
    in the middle of a GOP still shows its first whole picture, and an all-intra stream
    costs one decode. ``-noautorotate``: the coded picture, as ffprobe declares it."""
    return [
        *_FFMPEG_INFO_LOG,
        "-skip_frame",
        "nokey",
        "-noautorotate",
        *upload_input(source, info),
        "-map",
        f"0:{info.video_stream}",
        "-frames:v",
        "1",
        "-vf",
        "showinfo",
        "-f",
        "null",
        "-",
    ]


def upload_input(source: str | os.PathLike[str], info: MediaInfo) -> list[str]:
    """Input options and ``-i`` for a validated upload (core/ffargs.py): local file,
    the four real video demuxers allowed, the one ffprobe found forced."""
    return [
        *PROTOCOL_WHITELIST,
        "-format_whitelist",
        FORMAT_WHITELIST,
        "-f",
        info.demuxer,
        "-i",
        input_url(source),
    ]


def transcode_command(
    source: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    info: MediaInfo,
    ladder: Sequence[Rung] = DEFAULT_RUNGS,
    *,
    segment_seconds: float = 4,
    thumb_at: float | None = None,
    frame_interval: float = 10.0,
    preset: str = "veryfast",
    progress: str = "pipe:1",
    loudness: GainPlan | None = None,
    presets: Mapping[str, str] | None = None,
    stills: bool = True,
) -> list[str]:
    """ONE ffmpeg run: every rendition (HLS, flat in workdir), both thumbnails, timeline
    frames (without `stills`: the renditions alone, as a refinement writes them).
    Each rung is encoded at its preset in `presets` (by rung name), else `preset`.

    Keyframes are forced by time (``n_forced * segment_seconds``) on identical frames in
    every rung, GOPs are closed and scene-cut keyframes are off, so every rendition has
    an IDR at the same instants and the HLS muxers cut identical segment lists.
    ``workdir/frames`` must exist before ffmpeg starts.
    """
    if not ladder:
        raise ValueError("empty ladder")
    if len({r.name for r in ladder}) != len(ladder):
        raise ValueError("rung names must be unique")
    if segment_seconds <= 0 or frame_interval <= 0:
        raise ValueError("segment_seconds and frame_interval must be positive")
    out = Path(workdir)
    fps_f = output_rate(info)
    fps = float(fps_f)
    gop = max(1, round(segment_seconds * fps))
    at = thumbnail_time(info.duration, fps_f) if thumb_at is None else thumb_at
    seg = _num(segment_seconds)
    rung_presets = {r.name: (presets or {}).get(r.name, preset) for r in ladder}

    cmd = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "warning",
        "-y",
        "-progress",
        progress,
        "-nostats",
        "-noautorotate",  # the display matrix is in the graph (`picture_chain`)
        *upload_input(source, info),
        "-filter_complex",
        filter_graph(
            info,
            ladder,
            fps=fps_f,
            thumb_at=at,
            frame_interval=frame_interval,
            loudness=loudness,
            stills=stills,
            presets=rung_presets,
        ),
    ]
    # One output, ffmpeg's tee muxer, holds every rung's video and one AAC stream per
    # audio bit rate; each HLS muxer behind it takes its rung and that rung's audio. So
    # the audio is encoded once, not once per rung (ffmpeg 5.1 encodes audio on its main
    # thread, beside the filter graph: 1.2 CPU-s per 30 s stereo at 128 kbit/s).
    rates = audio_bitrates(ladder)
    cmd += [arg for i in range(len(ladder)) for arg in ("-map", f"[v{i}]")]
    cmd += [arg for j in range(len(rates)) for arg in ("-map", f"[a{j}]")]
    cmd += ["-map_metadata", "-1", "-map_chapters", "-1"]
    for i, rung in enumerate(ladder):
        video = video_encoder_args(rung, fps, gop=gop, preset=rung_presets[rung.name])
        keyframes = ["-force_key_frames", f"expr:gte(t,n_forced*{seg})"]
        cmd += stream_options([*video, *keyframes], f"v:{i}")
    for j, rate in enumerate(rates):
        cmd += stream_options(audio_encoder_args(rate), f"a:{j}")
    slaves = [
        tee_slave(
            {
                "select": f"v:{i},a:{rates.index(rung.audio_bitrate)}",
                "f": "hls",
                "hls_time": seg,
                "hls_playlist_type": "vod",
                "hls_flags": "independent_segments",
                "hls_segment_type": "mpegts",
                "start_number": "1",
                "hls_segment_filename": str(out / segment_pattern(rung)),
                # ffmpeg's -muxdelay default, which only reaches the outputs it opens
                # itself: without it the MPEG-TS muxer puts every AAC frame in a PES
                # of its own (+1.5% bytes on a 720p rendition)
                "max_delay": str(MUX_MAX_DELAY_US),
            },
            str(out / playlist_name(rung)),
        )
        for i, rung in enumerate(ladder)
    ]
    cmd += ["-f", "tee", "|".join(slaves)]
    if not stills:
        return cmd
    for label, name in (("thumb", THUMBNAIL), ("thumbl", THUMBNAIL_LARGE)):
        cmd += [
            "-map",
            f"[{label}]",
            "-map_metadata",
            "-1",
            "-frames:v",
            "1",
            "-c:v",
            "mjpeg",
            "-q:v",
            "2",
            "-f",
            "image2",
            "-update",
            "1",
            str(out / name),
        ]
    cmd += [
        "-map",
        "[tl]",
        "-map_metadata",
        "-1",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "mjpeg",
        "-q:v",
        "4",
        "-f",
        "image2",
        "-start_number",
        "1",
        str(out / FRAMES_DIR / FRAME_PATTERN),
    ]
    return cmd


#: x264 options `ultrafast` turns off that every other preset has on: CABAC, weighted
#: prediction, B-frames in a pyramid (and the 8x8 transform on High-profile rungs).
#: With them an `ultrafast` clip has the parameter sets and frame structure of the
#: export's re-encoded cuts (`veryfast`), which an export joins it with (one `avc1`
#: sample entry; decode order kept across clips by workers.media.tsjoin); the speed stays in
#: its motion search, partitions and the rest.
ULTRAFAST_HEADERS = "cabac=1:weightp=1:weightb=1:bframes=3:b-adapt=1:b-pyramid=normal"


def video_encoder_args(rung: Rung, fps: float, *, gop: int, preset: str) -> list[str]:
    """libx264 settings of a rung: explicit profile and level (from the frame rate),
    ABR at the rung's bit rate or capped CRF (`Rung.crf`) under the same VBV cap, a
    fixed GOP of `gop` frames, closed, no scene-cut keyframes, the VUI colour
    description of BT.709 limited range (`workers.media.colour.ENCODER_TAGS`). The
    transcode and the export's re-encoded cuts share them."""
    params = []
    if preset == "ultrafast":
        params.append(ULTRAFAST_HEADERS)
        if rung.profile == "high":  # (not in Main profile)
            params.append("8x8dct=1")
    if rung.crf is not None:
        # x264 writes the rate factor's QP as the PPS's pic_init_qp, ABR writes 26:
        # `stitchable` keeps 26, so a per-title clip's parameter sets stay those of
        # the ABR cuts an export joins it with
        params.append("stitchable=1")
    headers = ["-x264-params", ":".join(params)] if params else []
    return [
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-profile:v",
        rung.profile,
        "-level:v",
        level_name(rung_level(rung, fps)),
        *(["-b:v", str(rung.video_bitrate)] if rung.crf is None else ["-crf", _num(rung.crf)]),
        "-maxrate",
        str(rung.maxrate),
        "-bufsize",
        str(rung.bufsize),
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-flags",
        "+cgop",
        "-forced-idr",
        "1",
        *colour.ENCODER_TAGS,
        *headers,
    ]


def audio_encoder_args(bitrate: int) -> list[str]:
    """AAC-LC, 48 kHz stereo at `bitrate` bits/s (every clip's audio layout)."""
    return ["-c:a", "aac", "-b:a", str(bitrate), "-ar", "48000", "-ac", "2"]


def stream_options(args: Sequence[str], stream: str) -> list[str]:
    """Encoder options (name, value pairs) for one output stream: ``-b:v 1M`` becomes
    ``-b:v:1 1M`` and ``-preset fast`` ``-preset:v:1 fast`` for `stream` ``v:1``."""
    kind = stream.partition(":")[0]
    out: list[str] = []
    for name, value in zip(args[::2], args[1::2], strict=True):
        base, _, spec = name.partition(":")
        if spec not in ("", kind):
            raise ValueError(f"{name} is not an option of a {kind} stream")
        out += [f"{base}:{stream}", value]
    return out


#: The MPEG-TS muxer's longest wait before it writes what it holds of a stream (µs):
#: audio frames are packed into PES packets of up to this much (ffmpeg's -muxdelay).
MUX_MAX_DELAY_US = 700_000

#: What libavutil's av_get_token stops at or unquotes at each level of a tee muxer's
#: output name (libavformat/tee.c): the list of outputs splits at '|', then an
#: output's "[key=value:...]" options split at ':' and end at ']'.
_TEE_OUTPUT_SPECIALS = "\\'|"
_TEE_OPTION_SPECIALS = "\\':]"


def _escaped(text: str, specials: str) -> str:
    """`text` with a backslash before each of `specials` and each blank (av_get_token
    would strip blanks at either end)."""
    return "".join("\\" + c if c in specials or c in " \t\r\n" else c for c in text)


def tee_slave(options: Mapping[str, str], target: str) -> str:
    """One output of ffmpeg's tee muxer, ``[key=value:...]target``, escaped so that any
    value and target (paths included) come through both levels of unescaping intact."""
    body = ":".join(f"{k}={_escaped(v, _TEE_OPTION_SPECIALS)}" for k, v in options.items())
    return _escaped(f"[{body}]{target}", _TEE_OUTPUT_SPECIALS)


def loudness_command(source: str | os.PathLike[str], info: MediaInfo) -> list[str]:
    """The measurement pass of loudness matching (workers/media/loudness.py): the upload's
    audio only, normalised as the transcode normalises it and trimmed to the probed
    duration, into ffmpeg's EBU R128 meter with true-peak detection. Its summary goes
    to stderr at the info log level (per-frame lines only at verbose)."""
    chain = [*audio_chain(info), f"atrim=end={_num(info.duration)}"]
    return [
        *_FFMPEG_INFO_LOG,
        *upload_input(source, info),
        "-map",
        f"0:{audio_input(info)}",
        "-vn",
        "-sn",
        "-dn",
        "-af",
        ",".join([*chain, "ebur128=peak=true:framelog=verbose"]),
        "-f",
        "null",
        "-",
    ]


# ------------------------------------------------------ reading the outputs back


def segment_streams_command(segment: str | os.PathLike[str]) -> list[str]:
    """ffprobe of one written segment: its streams as JSON (frame size, rate, audio).
    A segment we wrote is opened like any input (core/ffargs.py: local MPEG-TS only)."""
    return [
        "ffprobe",
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_streams",
        *mpegts_input(segment),
    ]


def segment_sps_command(segment: str | os.PathLike[str]) -> list[str]:
    """The first video frame of one written segment as H.264 Annex B on stdout: its SPS
    holds the profile, constraint flags and level really written (the CODECS)."""
    return [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        *mpegts_input(segment),
        "-map",
        "0:v:0",
        "-c",
        "copy",
        "-frames:v",
        "1",
        "-f",
        "h264",
        "pipe:1",
    ]


# ---------------------------------------------------------------- progress


class ProgressParser:
    """Turns ffmpeg ``-progress`` key=value lines into blocks (one per ``progress=`` line)."""

    def __init__(self) -> None:
        self._block: dict[str, str] = {}

    def feed(self, line: str) -> dict[str, str] | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        self._block[key.strip()] = value.strip()
        if key.strip() == "progress":
            block, self._block = self._block, {}
            return block
        return None


def parse_progress_lines(lines: Iterable[str]) -> list[dict[str, str]]:
    parser = ProgressParser()
    return [b for b in (parser.feed(ln) for ln in lines) if b is not None]


def parse_progress(block: Mapping[str, str], duration: float) -> float:
    """Percent done (0-100) of one progress block; ``progress=end`` is 100."""
    if block.get("progress") == "end":
        return 100.0
    if duration <= 0:
        return 0.0
    us: float | None = None
    for key in ("out_time_us", "out_time_ms"):  # both are microseconds in ffmpeg >= 4
        us = finite_float(block.get(key))
        if us is not None:
            break
    if us is None:
        seconds = clock_seconds(block.get("out_time", ""))
        if seconds is None:
            return 0.0
        us = seconds * 1e6
    return max(0.0, min(100.0, us / 1e6 / duration * 100.0))


# ------------------------------------------------------------ media playlists


def media_segments(text: str) -> tuple[list[float], list[str]]:
    """EXTINF durations and segment URIs of a finished VOD media playlist as ffmpeg
    writes it per rendition, read with the m3u8 library.

    Raises ValueError when the text is not one: unreadable, a master playlist, no
    EXT-X-ENDLIST (unfinished), no segments, no EXT-X-TARGETDURATION, byte ranges
    (the list would not describe whole files), a segment without a URI, a duration
    that is not positive, or one more than 0.5 s over the target (RFC 8216 §4.3.3.1
    under any rounding; Apple 7.7). m3u8 passes over lines it cannot place (a URI
    with no EXTINF), so callers check the URIs against the files written.
    """
    try:
        playlist = m3u8.loads(text)
    except (ValueError, IndexError, KeyError, m3u8.ParseError) as exc:
        raise ValueError(f"unreadable playlist: {exc}") from None
    if playlist.is_variant:
        raise ValueError("a master playlist, expected a media playlist")
    if not playlist.is_endlist:
        raise ValueError("no #EXT-X-ENDLIST: the playlist is incomplete")
    segments = list(playlist.segments)
    if not segments:
        raise ValueError("media playlist has no segments")
    target = playlist.target_duration
    if target is None:
        raise ValueError("no #EXT-X-TARGETDURATION (required in a media playlist)")
    durations: list[float] = []
    uris: list[str] = []
    for number, segment in enumerate(segments, start=1):
        if segment.byterange:
            raise ValueError(f"segment {number}: EXT-X-BYTERANGE segments are not supported")
        if not segment.uri:
            raise ValueError(f"segment {number}: #EXTINF has no segment URI")
        duration = float(segment.duration)
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"segment {number}: EXTINF duration {duration} must be positive")
        if round(duration * 1000) > target * 1000 + 500:
            raise ValueError(f"EXTINF {duration} exceeds EXT-X-TARGETDURATION {target}")
        durations.append(duration)
        uris.append(segment.uri)
    return durations, uris
