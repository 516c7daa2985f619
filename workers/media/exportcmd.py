"""The export job's ffmpeg commands and what it expects of what they wrote: the remux of
the joined MPEG-TS stream (stdin) into a progressive, moov-first MP4 (ffmpeg's
`+faststart`) and the level its parameter sets declare, the re-encode of a cut GOP with
its rendition's own encoder settings, the re-encode of a media segment into the
export's frame (a clip without a rendition of it), and the ffprobe of the written MP4
read back as `Written`. Pure: `workers.jobs.export` runs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from core.exportplan import Cut, Plan
from core.ffargs import probe_command
from workers.media import colour
from workers.media.encoding import (
    Rung,
    audio_encoder_args,
    fit_filter,
    rung_level,
    video_encoder_args,
)
from workers.media.h264 import level_name
from workers.media.probe import input_url
from workers.media.tsjoin import BASE, CLOCK

#: x264 preset of re-encoded cuts: the transcoder's default, so a cut looks like the
#: frames around it.
CUT_PRESET = "veryfast"
_QUIET = ("-nostdin", "-hide_banner", "-loglevel", "warning", "-y")


def dts_grid(max_fps: Fraction) -> int:
    """Ticks (90 kHz) of the fastest frame period among the clips: decode timestamps
    are snapped to it (workers.media.tsjoin), so a tool that guesses a file's frame rate from
    its first frames (ffmpeg does) sees the fastest rate, not the first clip's."""
    return max(1, int(CLOCK / max_fps))


def h264_metadata(level: int, max_fps: Fraction) -> str:
    """The `h264_metadata` filter of the remux: every SPS declares the highest level of
    the clips and a VUI clock of the fastest rate, not a fixed rate (H.264 Annex E.2.1:
    fixed_frame_rate_flag 0). The clips' SPS then become one, so the MP4's `avc1`
    sample entry holds the only parameter sets its samples use (ISO/IEC 14496-15
    §5.3.2)."""
    tick = max_fps * 2  # time_scale / num_units_in_tick: two field ticks per frame
    return (
        f"h264_metadata=level={level_name(level)}"
        f":tick_rate={tick.numerator}/{tick.denominator}:fixed_frame_rate_flag=0"
    )


def export_level(plan: Plan, rung: Rung) -> int:
    """The H.264 level every SPS of the export declares (`h264_metadata`): the highest
    of the renditions copied (`Plan.level`) and of the re-encodes, each at the rung's
    level for its clip's frame rate (`workers.media.encoding.rung_level`)."""
    made = [rung_level(rung, float(p.fps)) for p in plan.parts if not p.copied]
    return max([plan.level, *made])


#: The `moov` (the sample index) moved before the `mdat` once the file is written, so a
#: browser plays the MP4 before the download ends. ffmpeg keeps every sample's index
#: entry in memory until then (~80 bytes a frame: ~40 MB more at 200 clips than at 20),
#: within the job's bound of 256 MB (bench/export.py).
PROGRESSIVE = "+faststart"


def remux_command(output: str | os.PathLike[str], *, level: int, max_fps: Fraction) -> list[str]:
    """ffmpeg reading the joined MPEG-TS on stdin and writing the progressive MP4:
    stream copy, AAC to MP4 form (`aac_adtstoasc`), the timeline's origin at 0 so the
    video starts at 0 and the AAC priming frame becomes the audio edit list's skip,
    `moov` first (`PROGRESSIVE`)."""
    return [
        "ffmpeg",
        *_QUIET,
        "-protocol_whitelist",
        "pipe",
        "-f",
        "mpegts",
        "-i",
        "pipe:0",
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-c",
        "copy",
        "-bsf:v",
        h264_metadata(level, max_fps),
        "-bsf:a",
        "aac_adtstoasc",
        "-copyts",
        "-output_ts_offset",
        f"-{BASE // CLOCK}",
        "-max_muxing_queue_size",
        "4096",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-tag:v",
        "avc1",
        "-movflags",
        PROGRESSIVE,
        "-f",
        "mp4",
        input_url(output),
    ]


def cut_command(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    rung: Rung,
    fps: Fraction,
    cut: Cut,
    first_pts: int,
    fit: bool = False,
) -> list[str]:
    """Re-encode frames [cut.first, cut.end) of one media segment (its first frame at
    `first_pts`, 90 kHz) and the audio under them, sample-exact, into MPEG-TS. `source`
    is the segment, followed by the audio of the clip's next one when there is one (the
    end of a segment's sound is written there). Video and audio are both moved by the
    cut's start, so they stay aligned; the encoders are the rendition's
    (`workers.media.encoding`), one closed GOP; the picture goes through the colour chain
    every output of a clip goes through (`workers.media.colour.chain`) and, with `fit`
    (a rendition of another frame), into the rung's frame (`_picture`)."""
    start = first_pts / CLOCK + cut.first / fps
    end = first_pts / CLOCK + cut.end / fps
    picture = _picture(rung, fit=fit)
    graph = (
        f"[0:v:0]trim=start_frame={cut.first}:end_frame={cut.end},"
        f"setpts=PTS-{float(start):.6f}/TB,{picture}[v];"
        f"[0:a:0]atrim=start={float(start):.6f}:end={float(end):.6f},"
        f"asetpts=PTS-{float(start):.6f}/TB[a]"
    )
    return [
        *_segment_input(source),
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-map_metadata",
        "-1",
        *video_encoder_args(rung, float(fps), gop=cut.end - cut.first, preset=CUT_PRESET),
        *audio_encoder_args(rung.audio_bitrate),
        "-f",
        "mpegts",
        input_url(output),
    ]


def fit_command(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    rung: Rung,
    fps: Fraction,
    gop: int,
) -> list[str]:
    """Re-encode the picture of one whole media segment of a clip whose rendition is
    not of the rung's frame into that frame (`_picture`), with the rung's encoder at
    the clip's frame rate and `gop` (the clip's own GOP, so the parameter sets are
    those of the rung's renditions); its sound is copied. `source` as for
    `cut_command`. Every frame keeps its own timestamp on the 90 kHz clock
    (ffmpeg would round them to the frame rate's clock) and the sound its own, so
    the two stay where the rendition had them."""
    return [
        *_segment_input(source),
        "-filter_complex",
        f"[0:v:0]{_picture(rung, fit=True)}[v]",
        "-map",
        "[v]",
        "-map",
        "0:a:0",
        "-map_metadata",
        "-1",
        *video_encoder_args(rung, float(fps), gop=gop, preset=CUT_PRESET),
        "-fps_mode:v",
        "passthrough",
        "-enc_time_base:v",
        "-1",
        "-c:a",
        "copy",
        "-f",
        "mpegts",
        input_url(output),
    ]


def _segment_input(source: str | os.PathLike[str]) -> list[str]:
    """ffmpeg reading a media segment to re-encode (`cut_command`, `fit_command`): a
    local MPEG-TS file, its timestamps as written."""
    return [
        "ffmpeg",
        *_QUIET,
        "-protocol_whitelist",
        "file",
        "-copyts",
        "-f",
        "mpegts",
        "-i",
        input_url(source),
    ]


def _picture(rung: Rung, *, fit: bool) -> str:
    """The filters of a re-encoded picture: the colour chain every output of a clip goes
    through (`workers.media.colour.chain`) and, with `fit`, the transcoder's scale to
    fit the rung's frame and pad, square pixels (`workers.media.encoding.fit_filter`)."""
    chain = colour.chain(colour.RENDITION, rung.width, rung.height)
    return ",".join([*chain, *([fit_filter(rung.width, rung.height)] if fit else [])])


def check_command(mp4: str | os.PathLike[str]) -> list[str]:
    """ffprobe of the written MP4: its container and streams as JSON, read by the mov
    demuxer only (`core.ffargs`, as every input of ours)."""
    return probe_command(mp4, ("mov",), force="mov")


@dataclass(frozen=True)
class Written:
    """What the written MP4 holds: its top-level boxes in file order, its streams'
    codecs (ffprobe's names, in stream order) and its duration in seconds."""

    boxes: tuple[str, ...]
    codecs: tuple[str, ...]
    duration: float

    @property
    def progressive(self) -> bool:
        """`moov` before `mdat`: the player has the index before the samples."""
        boxes = self.boxes
        return "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")


def written(probe: Mapping[str, Any], boxes: Sequence[str]) -> Written:
    """`Written` from `check_command`'s JSON and the file's top-level boxes."""
    streams = probe.get("streams") or []
    duration = probe.get("format", {}).get("duration")
    return Written(
        boxes=tuple(boxes),
        codecs=tuple(str(s.get("codec_name", "")) for s in streams),
        duration=float(duration) if duration is not None else float("nan"),
    )
