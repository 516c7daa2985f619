"""What an export is, decided without I/O (seed §8, issue 12): the request checked
and its moment rounded to frames, the dedupe key, the plan (which media segments of
the scene's published renditions are stream-copied, which edge GOPs are re-encoded,
which segments of a clip without a rendition of the export's frame are re-encoded
into it, and which next segment a part ending inside its clip reads for its audio),
the time estimate, the manifest, the captions sidecars (each clip's cues placed on the
export's timeline) and the download's file name. Pure.

Times are on the scene timeline the stitched playlists show: clip after clip, each as
long as the sum of its EXTINF values. Inside a clip, frame *i* is at *i / fps* (the
transcoder's `fps` filter starts every clip at 0), and every media segment is one
closed GOP starting with an IDR (DESIGN "Transcode"), so a segment is the unit that
is either copied whole or cut and re-encoded.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal
from urllib.parse import quote

from core import captions, layout
from core.framerate import exact_rate
from core.playlists import Rendition

Kind = Literal["full", "moment"]

#: Seconds of scene exported per second of work until this installation has measured
#: its own (README "Exports"); a moment re-encodes up to two GOPs, so it is slower.
DEFAULT_SPEED: Mapping[Kind, float] = {"full": 30.0, "moment": 3.0}
SPEED_WEIGHT = 0.3  # weight of the newest job in the running throughput (sql/exports.sql)
#: Seconds of picture re-encoded into a 1280x720 export frame per second of work, for
#: a clip without a rendition of that frame (`Fit`); the cost grows with the frame's
#: pixels. Measured once when it was built (issue 26, docs/NOTES.md): 1.6 CPU-s per 4 s
#: segment into 720p, 3.7 into 1080p. Not measured per installation: an export with
#: such parts does not update the running throughput (`core.exports.publish`).
FIT_SPEED = 2.5
_FIT_FRAME = 1280 * 720
MIN_MOMENT_SECONDS = 1.0
#: Below any timestamp a moment is cut at (90 kHz: 11 us): a client's `start + 1` whose
#: float difference comes back as 0.9999999999999998 s asks for one second.
_SECONDS_SLACK = 1e-6
MAX_EXPORT_SECONDS = 24 * 3600.0  # MPEG-TS clocks wrap after 26.5 h (2^33 / 90 kHz)


class BadRequest(ValueError):
    """The request cannot be exported as asked (HTTP 400, the message says why)."""


# --------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    quality: str
    start: float | None = None
    end: float | None = None

    @property
    def kind(self) -> Kind:
        return "full" if self.start is None else "moment"


def parse_request(body: Mapping[str, Any]) -> Request:
    """`{"quality"[, "start", "end"]}` checked for shape (the scene is not known yet)."""
    unknown = sorted(set(body) - {"quality", "start", "end"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    quality = body.get("quality")
    if not isinstance(quality, str) or not layout.is_profile(quality):
        raise BadRequest('\'quality\' must be a rendition name such as "720p" or "1080p"')
    if "start" not in body and "end" not in body:
        return Request(quality)
    if "start" not in body or "end" not in body:
        raise BadRequest("a moment needs both 'start' and 'end' (seconds on the scene timeline)")
    start, end = _seconds(body["start"], "start"), _seconds(body["end"], "end")
    if start < 0:
        raise BadRequest("'start' must be >= 0")
    if end <= start:
        raise BadRequest("'end' must be after 'start'")
    if end - start < MIN_MOMENT_SECONDS - _SECONDS_SLACK:
        raise BadRequest(f"a moment must last at least {MIN_MOMENT_SECONDS:g} s")
    return Request(quality, start, end)


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{name}' must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise BadRequest(f"'{name}' must be a finite number of seconds")
    return seconds


# ------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class SourceClip:
    """One ready clip of the scene, with the rendition the export reads: its rendition
    of the export's quality, or (`fit`) the one the stitched variant of that quality
    plays (`core.playlists.variant_rendition`: a source smaller than the rung, or a
    clip whose refinement has not landed), whose frame is not the export's: every
    frame of it is re-encoded into the export's frame."""

    segment_id: str
    sequence: int
    contributor_id: str
    rendition: Rendition
    fit: bool = False

    @property
    def fps(self) -> Fraction:
        return exact_rate(self.rendition.frame_rate)

    @property
    def duration(self) -> float:
        return sum(self.rendition.durations)

    def segment_frames(self) -> list[int]:
        """Frames in each media segment (EXTINF x fps, rounded)."""
        return [round(d * self.fps) for d in self.rendition.durations]


def h264_level(codecs: str) -> int:
    """level_idc of a CODECS value such as `avc1.4d401f,mp4a.40.2` (RFC 6381): 31."""
    m = re.match(r"^avc[13]\.[0-9a-fA-F]{4}([0-9a-fA-F]{2})(?:,|$)", codecs)
    if not m:
        raise ValueError(f"not an H.264 CODECS value: {codecs!r}")
    return int(m.group(1), 16)


def scene_duration(clips: Sequence[SourceClip]) -> float:
    return sum(c.duration for c in clips)


@dataclass(frozen=True)
class ExportRange:
    """What a moment export (kind "moment") covers: a time range of the scene rounded
    to frames, `start` the time of its first frame, `end` the end of its last
    (seconds, 6 decimals)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def _locate(clips: Sequence[SourceClip], t: float, *, end: bool) -> tuple[int, int, float]:
    """(clip index, frame index, scene time of that frame boundary) nearest `t`. An end
    on a clip boundary belongs to the clip before it, a start to the clip after it."""
    offset = 0.0
    last = len(clips) - 1
    for k, clip in enumerate(clips):
        length = clip.duration
        inside = t < offset + length if not end else t <= offset + length
        if inside or k == last:
            frames = sum(clip.segment_frames())
            i = min(max(round((t - offset) * clip.fps), 0), frames)
            if not end and i == frames and k < last:
                return k + 1, 0, offset + length
            if end and i == 0 and k > 0:
                prev = clips[k - 1]
                n = sum(prev.segment_frames())
                return k - 1, n, offset - prev.duration + float(n / prev.fps)
            return k, i, offset + float(i / clip.fps)
        offset += length
    raise BadRequest("the scene is empty")


def round_moment(clips: Sequence[SourceClip], start: float, end: float) -> ExportRange:
    """`start`/`end` (seconds) rounded to the frames of the clips they fall in."""
    total = scene_duration(clips)
    if end > total + 0.0005:
        raise BadRequest(f"'end' is past the end of the scene ({total:.3f} s)")
    if start >= total:
        raise BadRequest(f"'start' is past the end of the scene ({total:.3f} s)")
    _, _, s = _locate(clips, start, end=False)
    _, _, e = _locate(clips, min(end, total), end=True)
    if e <= s:
        raise BadRequest("the moment is empty once rounded to frames")
    return ExportRange(round(s, 6), round(e, 6))


def dedupe_key(scene_id: str, quality: str, version: int, moment: ExportRange | None) -> str:
    """One export job in flight per scene, version, quality and (rounded) range."""
    key = f"export:{scene_id}:{version}:{quality}"
    if moment is not None:
        key += f":{round(moment.start * 1e6)}-{round(moment.end * 1e6)}"
    return key


# ------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Cut:
    """Frames [first, end) of one media segment (0 = its IDR), to be re-encoded."""

    first: int
    end: int


@dataclass(frozen=True)
class Tail:
    """The media segment after a part's last one in its clip, read for its audio
    only: the transcoder's muxer holds audio back (`max_delay`), so the sound of a
    segment's last moments is in the next segment's file."""

    file: str
    size: int


@dataclass(frozen=True)
class Fit:
    """The picture of a part is re-encoded from the clip's rendition (`width` x
    `height`) into the export's frame, scaled to fit and padded, never cropped; `gop`:
    the frames of the clip's longest media segment (its GOP), the keyframe interval of
    the re-encode, so its encoder (and its parameter sets) are those of the rung's
    own renditions."""

    width: int
    height: int
    gop: int


@dataclass(frozen=True)
class Part:
    """Consecutive media segments of one clip, stream-copied; or (with `cut`) part of
    one segment, re-encoded with the rendition's own encoder settings; or (with `fit`)
    one segment, or a `cut` of it, of a clip without a rendition of the export's
    frame, its picture re-encoded into that frame (a whole segment's sound is copied).
    `tail`: the clip's next segment, when the part ends before the clip does."""

    segment_id: str
    sequence: int
    files: tuple[str, ...]
    sizes: tuple[int, ...]
    fps: Fraction
    duration: float  # seconds this part adds to the export
    cut: Cut | None = None
    tail: Tail | None = None
    fit: Fit | None = None

    @property
    def copied(self) -> bool:
        """Its media segments go into the export as they are."""
        return self.cut is None and self.fit is None

    @property
    def size(self) -> int:
        """Bytes read for it (its segments and its tail)."""
        return sum(self.sizes) + (self.tail.size if self.tail else 0)


@dataclass(frozen=True)
class Span:
    """Where a clip's part lies in an export: its time `start` (seconds from the
    clip's first frame) is at `at` on the export's timeline, for `duration` seconds."""

    segment_id: str
    start: float
    duration: float
    at: float


@dataclass(frozen=True)
class Plan:
    quality: str
    parts: tuple[Part, ...]
    clips: tuple[SourceClip, ...]  # the clips the export shows, in order
    spans: tuple[Span, ...]  # one per clip, in order
    level: int  # highest H.264 level_idc among the renditions of its frame (0: none)
    max_fps: Fraction
    moment: ExportRange | None

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)

    @property
    def refit_duration(self) -> float:
        """Seconds of it whose picture is re-encoded into the export's frame (`Fit`)."""
        return sum(p.duration for p in self.parts if p.fit is not None)

    @property
    def size(self) -> int:
        """Bytes of media segments read (copied or cut)."""
        return sum(p.size for p in self.parts)

    @property
    def kind(self) -> Kind:
        return "full" if self.moment is None else "moment"

    @property
    def file_name(self) -> str:
        return layout.export_file_name(self.quality, moment=self.moment is not None)


def plan_export(
    clips: Sequence[SourceClip], quality: str, moment: ExportRange | None = None
) -> Plan:
    """The parts of an export, in order: whole segments are copied; a segment that a
    moment's start or end cuts into is re-encoded from the cut on (or up to it); every
    segment of a `fit` clip is re-encoded on its own into the export's frame."""
    if not clips:
        raise BadRequest("the scene has no ready clip")
    if moment is None:
        first_k, first_i, last_k, last_i = 0, 0, len(clips) - 1, None
    else:
        first_k, first_i, _ = _locate(clips, moment.start, end=False)
        last_k, last_i, _ = _locate(clips, moment.end, end=True)
    parts: list[Part] = []
    used: list[SourceClip] = []
    spans: list[Span] = []
    for k in range(first_k, last_k + 1):
        clip = clips[k]
        frames = clip.segment_frames()
        lo = first_i if k == first_k else 0
        hi = (last_i if last_i is not None else sum(frames)) if k == last_k else sum(frames)
        if hi <= lo:
            continue
        used.append(clip)
        first_part = len(parts)
        r = clip.rendition
        fit = Fit(r.width, r.height, max(frames)) if clip.fit else None
        run: list[int] = []  # segment indexes (0-based) copied whole
        at = 0
        for j, n in enumerate(frames):
            a, b = max(lo, at), min(hi, at + n)
            at += n
            if b <= a:
                continue
            whole = a == at - n and b == at
            if whole and fit is None:
                run.append(j)
                continue
            if run:
                parts.append(_copy(clip, run))
                run = []
            name = layout.media_segment_name(r.profile, j + 1, r.generation)
            cut = None if whole else Cut(a - (at - n), b - (at - n))
            duration = r.durations[j] if whole else float((b - a) / clip.fps)
            parts.append(
                Part(
                    clip.segment_id,
                    clip.sequence,
                    (name,),
                    (r.sizes[j],),
                    clip.fps,
                    duration,
                    cut,
                    _tail(clip, j),
                    fit,
                )
            )
        if run:
            parts.append(_copy(clip, run))
        begins = spans[-1].at + spans[-1].duration if spans else 0.0
        shown = sum(p.duration for p in parts[first_part:])
        spans.append(Span(clip.segment_id, float(lo / clip.fps), shown, begins))
    if not parts:
        raise BadRequest("the moment is empty once rounded to frames")
    plan = Plan(
        quality=quality,
        parts=tuple(parts),
        clips=tuple(used),
        spans=tuple(spans),
        level=max((h264_level(c.rendition.codecs) for c in used if not c.fit), default=0),
        max_fps=max(c.fps for c in used),
        moment=moment,
    )
    if plan.duration > MAX_EXPORT_SECONDS:
        raise BadRequest(f"an export is limited to {MAX_EXPORT_SECONDS / 3600:g} hours")
    return plan


def _copy(clip: SourceClip, indexes: list[int]) -> Part:
    r = clip.rendition
    return Part(
        clip.segment_id,
        clip.sequence,
        tuple(layout.media_segment_name(r.profile, j + 1, r.generation) for j in indexes),
        tuple(r.sizes[j] for j in indexes),
        clip.fps,
        sum(r.durations[j] for j in indexes),
        tail=_tail(clip, indexes[-1]),
    )


def _tail(clip: SourceClip, last: int) -> Tail | None:
    """The segment after segment `last` (0-based) of the clip, if there is one."""
    r = clip.rendition
    if last + 1 >= len(r.sizes):
        return None
    return Tail(layout.media_segment_name(r.profile, last + 2, r.generation), r.sizes[last + 1])


# -------------------------------------------------------------------- captions


def sidecars(plan: Plan, stored: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """One WebVTT file per language on the export's timeline (language -> text), from
    each clip's captions as stored (segment id -> language -> WebVTT, times from the
    clip's first frame): each clip's part placed where the export shows it (a moment's
    edges cut: a cue partly inside clamped, one outside dropped). The languages are
    those of any clip the export shows; a clip without one adds nothing to it."""
    shown = [
        (span, {lang: captions.stored_cues(vtt) for lang, vtt in found.items()})
        for span in plan.spans
        for found in (stored.get(span.segment_id, {}),)
    ]
    languages = sorted({lang for _, found in shown for lang in found})
    out = {}
    for lang in languages:
        parts = []
        for span, found in shown:
            if lang not in found:
                continue
            at, until = round(span.at * 1000), round((span.at + span.duration) * 1000)
            start = round(span.start * 1000)
            parts.append(captions.place(found[lang], start, start + until - at, at))
        out[lang] = captions.joined(parts)
    return out


# ------------------------------------------------------------------- estimates


def estimate_seconds(
    duration: float, speed: float, *, refit: float = 0.0, frame: tuple[int, int] = (1280, 720)
) -> int:
    """Seconds an export of `duration` seconds of scene should take, at least 1: what
    is copied (or cut) at `speed` (seconds of scene per second of work, measured per
    kind), and the `refit` seconds of it whose picture is re-encoded into the export's
    `frame` at `FIT_SPEED` (scaled by the frame's pixels)."""
    copied = max(duration - refit, 0.0)
    fit_speed = FIT_SPEED * _FIT_FRAME / max(frame[0] * frame[1], 1)
    return max(1, math.ceil(copied / max(speed, 1e-3) + refit / fit_speed))


# ---------------------------------------------------------- manifest, file name


def manifest(
    *,
    scene_id: str,
    export_id: str,
    version: int,
    plan: Plan,
    created_at: datetime,
    duration: float,
    size: int,
    languages: Sequence[str] = (),
) -> dict[str, Any]:
    """`export_manifest.json`: what the MP4 holds, clip by clip, how each part was
    made (`copy`, or `reencode` with its frame range when it is a cut and the size of
    the rendition it was scaled from when that is not the export's frame), and its
    captions sidecars (`languages`)."""
    clips = [
        {
            "id": clip.segment_id,
            "sequence": clip.sequence,
            "contributorId": clip.contributor_id,
            "duration": round(clip.duration, 3),
            "startTime": round(span.at, 3),
            "exportedDuration": round(span.duration, 3),
        }
        for clip, span in zip(plan.clips, plan.spans, strict=True)
    ]
    return {
        "exportId": export_id,
        "sceneId": scene_id,
        "sceneVersion": version,
        "quality": plan.quality,
        "file": plan.file_name,
        "start": plan.moment.start if plan.moment else None,
        "end": plan.moment.end if plan.moment else None,
        "duration": round(duration, 3),
        "size": size,
        "createdAt": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "segments": clips,
        "captions": [
            {"language": lang, "file": layout.export_captions_name(plan.file_name, lang)}
            for lang in languages
        ],
        "parts": [
            {
                "segmentId": p.segment_id,
                "files": list(p.files),
                "mode": "copy" if p.copied else "reencode",
                **({"frames": [p.cut.first, p.cut.end]} if p.cut else {}),
                **({"scaledFrom": [p.fit.width, p.fit.height]} if p.fit else {}),
                "duration": round(p.duration, 6),
            }
            for p in plan.parts
        ],
    }


_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')


def download_name(title: str, moment: ExportRange | None = None) -> str:
    """The file name a download is saved as: the scene title without characters that
    are unsafe in file names or header values, `.mp4`, and the range for a moment."""
    name = unicodedata.normalize("NFC", title)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", _UNSAFE.sub(" ", name)).strip(" .")[:120].strip(" .")
    name = name or "scene"
    if moment is not None:
        name += f" ({_clock(moment.start)}-{_clock(moment.end)})"
    return name + ".mp4"


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII `filename` and the exact UTF-8 `filename*`
    (RFC 6266 §4.1, §4.3; RFC 8187). `filename` is a `download_name`."""
    stem, dot, ext = filename.rpartition(".")
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    folded = re.sub(r"\s+", " ", folded.replace("\\", "").replace('"', "")).strip(" .")
    ascii_name = (folded or "scene") + dot + ext
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value
