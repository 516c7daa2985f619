"""A thumbnail at any moment, the pure half: the request's `time` and `width` checked,
the moment placed on the timeline (which clip, which rendition, which `.ts`, which
frame of it), the ffmpeg command that grabs that frame, and the names it is cached
under. `origin/playback/stills.py` runs the command and keeps the answers.

The frame at T is the one a player shows at T: the last frame that starts at or before
T. Clips sit on the scene timeline where the stitched playlist puts them (the sum of
the earlier clips' EXTINFs, `playlists.timeline_ms`). Inside a clip the transcoder
writes constant-frame-rate video whose every segment starts with an IDR frame on the
frame grid (workers/media/encoding.py), so frame `n` of the clip is frame `n - s` of the
segment starting at frame `s`: the grab decodes that one segment from its start and
keeps exactly that frame, and the answer depends on nothing but (segment, rendition,
frame, width).
"""

from __future__ import annotations

import math
import os
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from core import layout
from core.ffargs import JPEG_PIX_FMT, JPEG_SCALE, mpegts_input
from core.framerate import exact_rate
from core.playlists import Clip, Rendition, timeline_ms

#: The widths a thumbnail may be asked for (a small fixed set keeps the caches small).
WIDTHS: tuple[int, ...] = (160, 320, 640, 1280)
DEFAULT_WIDTH = 640
#: Seconds, with at most 6 decimals (microseconds); at most 7 integer digits.
_TIME_RE = re.compile(r"(\d{1,7})(?:\.(\d{1,6}))?")


class BadMoment(ValueError):
    """A malformed `time` or `width` (the client's fault: 400)."""


class OutsideTimeline(LookupError):
    """`time` is not on the scene's (or the clip's) timeline (404)."""


def parse_request(query: Mapping[str, str], values: Mapping[str, int]) -> tuple[int, int]:
    """(time in microseconds, width) from a request's query. `values` counts how often
    each parameter appears (a repeated one is refused rather than guessed at)."""
    for name in ("time", "width"):
        if values.get(name, 0) > 1:
            raise BadMoment(f"{name} is given more than once")
    raw = query.get("time")
    if raw is None:
        raise BadMoment("time is required: seconds on the timeline, e.g. time=12.5")
    m = _TIME_RE.fullmatch(raw)
    if m is None:
        raise BadMoment(f"time {raw[:40]!r} is not a number of seconds such as 12.5")
    micros = int(m[1]) * 1_000_000 + int((m[2] or "").ljust(6, "0"))
    raw_width = query.get("width")
    if raw_width is None:
        return micros, DEFAULT_WIDTH
    if raw_width not in {str(w) for w in WIDTHS}:
        allowed = ", ".join(map(str, WIDTHS))
        raise BadMoment(f"width {raw_width[:20]!r} is not one of {allowed}")
    return micros, int(raw_width)


@dataclass(frozen=True)
class Still:
    """One frame of one clip's rendition, asked for at one width."""

    segment_id: str
    profile: str
    segment_number: int  # 1-based, the `.ts` holding the frame
    frame: int  # on the clip's frame grid (0 = the clip's first frame)
    frame_in_segment: int  # frames to decode past the segment's first (an IDR)
    width: int  # of the answer
    source_width: int  # of the rendition it is decoded from
    generation: int = 1  # of the rendition (a refined one has other media segments)

    @property
    def media_name(self) -> str:
        """The `.ts` file to decode, in the segment's folder."""
        return layout.media_segment_name(self.profile, self.segment_number, self.generation)

    @property
    def still_name(self) -> str:
        """The answer's file name in the segment's `stills/` folder (its generation's:
        a refined rendition shows the frame better). `_j`: written in JPEG's colours
        (`grab_command`); a still stored before that (no `_j`) is never served again."""
        stem = layout.generation_stem(self.profile, self.generation)
        return f"{stem}f{self.frame:06d}_w{self.width}_j.jpg"

    @property
    def etag(self) -> str:
        """Strong validator: the same (segment, rendition and its generation, frame,
        width, JPEG's colours) is the same JPEG."""
        gen = f"g{self.generation}-" if self.generation > 1 else ""
        return f'"{self.segment_id}-{self.profile}-{gen}{self.frame}-{self.width}-j"'


def pick_rendition(clip: Clip, width: int) -> Rendition:
    """The smallest rendition at least `width` wide (the widest if none is)."""
    ordered = sorted(clip.renditions.values(), key=lambda r: (r.width, r.height, r.profile))
    if not ordered:
        raise OutsideTimeline(f"clip {clip.segment_id} has no rendition")
    return next((r for r in ordered if r.width >= width), ordered[-1])


def locate(clips: Sequence[Clip], micros: int, width: int) -> Still:
    """The still at `micros` on a stitched scene's timeline (`clips` in order)."""
    bounds = [ms * 1000 for ms in timeline_ms(clips)]
    if not clips or not 0 <= micros < bounds[-1]:
        total = bounds[-1] / 1e6 if clips else 0.0
        raise OutsideTimeline(f"time {micros / 1e6:g} s is outside the scene (0 to {total:g} s)")
    i = bisect_right(bounds, micros) - 1
    return locate_in_clip(clips[i], micros - bounds[i], width)


def locate_in_clip(clip: Clip, micros: int, width: int) -> Still:
    """The still at `micros` after the start of one clip."""
    rendition = pick_rendition(clip, width)
    length_ms = sum(rendition.durations_ms)
    if not 0 <= micros < length_ms * 1000:
        raise OutsideTimeline(
            f"time {micros / 1e6:g} s is outside the clip (0 to {length_ms / 1000:g} s)"
        )
    fps = exact_rate(rendition.frame_rate)
    # frame grid of the segments: where each one starts (an IDR on a frame), and the end
    starts: list[int] = []
    at_ms = 0
    for ms in rendition.durations_ms:
        starts.append(round(Fraction(at_ms, 1000) * fps))
        at_ms += ms
    end = max(starts[-1] + 1, round(Fraction(at_ms, 1000) * fps))
    frame = min(math.floor(Fraction(micros, 1_000_000) * fps), end - 1)
    number = bisect_right(starts, frame)  # 1-based: the last segment starting at or before
    return Still(
        segment_id=clip.segment_id,
        profile=rendition.profile,
        segment_number=number,
        frame=frame,
        frame_in_segment=frame - starts[number - 1],
        width=width,
        source_width=rendition.width,
        generation=rendition.generation,
    )


def grab_command(segment: str | os.PathLike[str], still: Still) -> list[str]:
    """ffmpeg: one JPEG on stdout, the still's frame of the local `.ts` `segment`
    (opened like every input of ours, core/ffargs.py: local file, mpegts only),
    scaled to the asked width (height to match, even) and converted to JPEG's colours
    (`ffargs.JPEG_SCALE`), as the worker's thumbnails are."""
    size = f"{still.width}:-2:flags=bicubic:" if still.width != still.source_width else ""
    filters = [
        f"select='eq(n,{still.frame_in_segment})'",
        f"scale={size}{JPEG_SCALE}",
        f"format={JPEG_PIX_FMT}",
    ]
    return [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        *mpegts_input(segment),
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-vf",
        ",".join(filters),
        "-frames:v",
        "1",
        "-c:v",
        "mjpeg",
        "-q:v",
        "3",
        "-f",
        "image2pipe",
        "pipe:1",
    ]
