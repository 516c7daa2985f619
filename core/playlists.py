"""HLS playlist text for StoryForge: the per-clip master and media playlists the
transcoder stores, the stitched scene master / media playlists and storyboard WebVTT
the origin builds from Postgres rows, the bandwidth and target-duration figures they
declare. (ffmpeg's own playlists are read with the m3u8 library, in
`workers.media.encoding`.)

Pure: no I/O, no asyncio, no clock. The same input always gives the same bytes.
The rules implemented here, with their sources, are listed in HLS-RULES.md. (Over 600
lines: every builder shares the printed-millisecond arithmetic and the timeline, and
splitting them would make those internals public.)

Durations are handled at the precision we print in EXTINF (3 decimals, i.e. whole
milliseconds): target durations, bandwidth windows and storyboard offsets are all
computed from the printed values, in integer arithmetic, so every figure agrees with
what a player reads from the playlist and nothing depends on float summation order.

One module (~600 lines) on purpose: every rule of HLS-RULES.md that shapes playlist
text lives here, next to the figures (target duration, peak bandwidth) it depends on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from core.layout import (
    SubtitlesSegment,
    generation_stem,
    subtitles_playlist_name,
    subtitles_segment_name,
)

__all__ = [
    "HLS_VERSION",
    "Clip",
    "Rendition",
    "StoryboardCue",
    "average_bandwidth",
    "clip_master_playlist",
    "clip_media_playlist",
    "clip_storyboard_vtt",
    "peak_bandwidth",
    "scene_profiles",
    "scene_target_duration",
    "stitched_master",
    "stitched_media",
    "stitched_storyboard_vtt",
    "stitched_subtitles",
    "clip_subtitles",
    "scene_languages",
    "target_duration",
    "timeline_ms",
    "variant_rendition",
    "vtt_time",
]

# RFC 8216 §7: decimal-floating-point EXTINF values need protocol version 3. Nothing
# else we emit needs more (EXT-X-INDEPENDENT-SEGMENTS, EXT-X-PLAYLIST-TYPE and the
# AVERAGE-BANDWIDTH / FRAME-RATE attributes carry no version requirement), so 3 is
# the lowest version our features allow (HLS-RULES: "use the lowest version").
HLS_VERSION = 3

# Names that end up inside URIs and playlist lines: no '/', quotes, spaces, newlines.
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_SHEET_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, init=False)
class Rendition:
    """One HLS rendition of one clip (e.g. its 720p media playlist and .ts files).

    ``durations`` are the EXTINF values of the media segments and ``sizes`` their
    byte sizes, in playlist order; ``bandwidth_peak`` / ``bandwidth_average`` are the
    figures measured by the transcoder (``peak_bandwidth`` / ``average_bandwidth``)
    and are what the clip's own master declares.

    Built for every rendition row of a scene on each cold playlist build (2,000 for a
    1,000-clip scene), so ``__init__`` is written out: it validates, then sets every
    field in one step (a frozen dataclass's generated ``__init__`` sets them one
    ``object.__setattr__`` at a time: 2.7 of the 6.1 us a rendition cost; bench/README
    "Cold build of a 1,000-clip scene").
    """

    profile: str
    width: int
    height: int
    frame_rate: float
    codecs: str
    durations: tuple[float, ...]
    sizes: tuple[int, ...]
    bandwidth_peak: int
    bandwidth_average: int
    # Which encoding of the clip (1: the fast ladder; a refinement publishes the next
    # one under new media segment names, core/layout.py `generation_stem`).
    generation: int = 1
    # Its first video frame's presentation time on the 90 kHz MPEG-TS clock, as the
    # transcode measured it (None: published before it was recorded, migration 0010).
    first_pts: int | None = None
    # Derived: ``durations`` in whole milliseconds as printed in EXTINF.
    durations_ms: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        profile: str,
        width: int,
        height: int,
        frame_rate: float,
        codecs: str,
        durations: Iterable[float],
        sizes: Iterable[int],
        bandwidth_peak: int,
        bandwidth_average: int,
        generation: int = 1,
        first_pts: int | None = None,
    ) -> None:
        if not _NAME_RE.fullmatch(profile):
            raise ValueError(f"rendition profile {profile!r} is not a plain name")
        if width <= 0 or height <= 0:
            raise ValueError(f"rendition {profile}: resolution must be positive")
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise ValueError(f"rendition {profile}: frame rate must be positive")
        # RFC 8216 §4.3.4.2: CODECS is a quoted-string, so no '"' and no line breaks.
        if not codecs or '"' in codecs or "\r" in codecs or "\n" in codecs:
            raise ValueError(f"rendition {profile}: invalid CODECS {codecs!r}")
        if bandwidth_peak < 0 or bandwidth_average < 0:
            raise ValueError(f"rendition {profile}: bandwidth must not be negative")
        if generation < 1:
            raise ValueError(f"rendition {profile}: generation must be >= 1")
        # Rows may hand over lists (asyncpg arrays) or Decimals: store plain tuples.
        seconds = tuple(map(float, durations))
        bytes_ = tuple(map(int, sizes))
        ms = _segments_ms(seconds, bytes_, what=f"rendition {profile}")
        self.__dict__.update(
            profile=profile,
            width=width,
            height=height,
            frame_rate=frame_rate,
            codecs=codecs,
            durations=seconds,
            sizes=bytes_,
            bandwidth_peak=bandwidth_peak,
            bandwidth_average=bandwidth_average,
            generation=generation,
            first_pts=first_pts,
            durations_ms=ms,
        )


@dataclass(frozen=True)
class StoryboardCue:
    """One storyboard thumbnail: a rectangle of a sprite sheet shown from ``start``
    to ``end`` seconds, relative to the start of its clip."""

    start: float
    end: float
    x: int
    y: int
    w: int
    h: int
    sheet: str = "storyboard.jpg"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ValueError("storyboard cue times must be finite")
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"storyboard cue {self.start}..{self.end}: empty or negative")
        if self.x < 0 or self.y < 0 or self.w <= 0 or self.h <= 0:
            raise ValueError(f"storyboard cue {self.x},{self.y},{self.w},{self.h}: bad box")
        if not _SHEET_RE.fullmatch(self.sheet):
            raise ValueError(f"storyboard sheet {self.sheet!r} is not a plain file name")


@dataclass(frozen=True, init=False)
class Clip:
    """A ready segment of a scene (a "clip"): its renditions by profile and its
    storyboard cues. ``duration`` is the clip's probed duration in seconds. (Its
    ``__init__`` is written out, as `Rendition`'s is.)"""

    segment_id: str
    duration: float
    renditions: Mapping[str, Rendition]
    storyboard: tuple[StoryboardCue, ...] = ()
    # its captions: language -> revision (core/subtitles.py)
    captions: Mapping[str, int] = field(default_factory=dict)

    def __init__(
        self,
        segment_id: str,
        duration: float,
        renditions: Mapping[str, Rendition],
        storyboard: Iterable[StoryboardCue] = (),
        captions: Mapping[str, int] | None = None,
    ) -> None:
        if not _NAME_RE.fullmatch(segment_id):
            raise ValueError(f"segment id {segment_id!r} is not a plain name")
        if not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"clip {segment_id}: duration must be positive")
        for profile, rendition in renditions.items():
            if rendition.profile != profile:
                raise ValueError(
                    f"clip {segment_id}: rendition {rendition.profile!r} "
                    f"filed under profile {profile!r}"
                )
        # Frozen means frozen: keep private read-only copies of the mappings.
        self.__dict__.update(
            segment_id=segment_id,
            duration=duration,
            renditions=MappingProxyType(dict(renditions)),
            storyboard=tuple(storyboard),
            captions=MappingProxyType(dict(captions or ())),
        )

    @property
    def generation(self) -> int:
        """The generation of the clip's renditions (one publish writes them all)."""
        return max((r.generation for r in self.renditions.values()), default=1)

    @property
    def first_pts(self) -> int | None:
        """Where its first frame is presented on the MPEG-TS clock (the earliest of
        its renditions': one ffmpeg run writes them all with the same timestamps)."""
        known = [r.first_pts for r in self.renditions.values() if r.first_pts is not None]
        return min(known) if known else None

    def subtitles_revision(self, language: str) -> int:
        """The revision of its captions in `language` its subtitles segments carry: 0
        (empty segments) without captions, or without a first PTS to map them by."""
        return self.captions.get(language, 0) if self.first_pts is not None else 0


# ------------------------------------------------------------------ memory

#: what a clip's rows cost in memory, estimated (bytes; measured with a deep
#: sys.getsizeof over clips of 1-15 segments and 0-60 storyboard cues, rounded up):
#: for the byte bounds of the origin's caches (core/lru.py)
CLIP_BYTES = 600
RENDITION_BYTES = 700
SEGMENT_BYTES = 110  # a duration, a size and its milliseconds
CUE_BYTES = 250


def clip_bytes(clip: Clip) -> int:
    """The memory a clip's rows hold, estimated from its shape."""
    segments = sum(len(r.durations) for r in clip.renditions.values())
    return (
        CLIP_BYTES
        + RENDITION_BYTES * len(clip.renditions)
        + SEGMENT_BYTES * segments
        + CUE_BYTES * len(clip.storyboard)
    )


# ------------------------------------------------------------------ number helpers


@lru_cache(maxsize=1 << 16)
def _fmt3(value: float) -> str:
    """Seconds with 3 decimals, as printed in EXTINF and FRAME-RATE."""
    return f"{value:.3f}"


@lru_cache(maxsize=1 << 16)
def _ms(seconds: float) -> int:
    """Whole milliseconds of ``seconds`` exactly as ``_fmt3`` prints it.

    Parsing the printed text (instead of ``round(seconds * 1000)``) guarantees the
    integer agrees with the playlist: 4.0004 prints "4.000" -> 4000, and halfway
    cases follow the formatter, not a second float rounding.
    """
    return int(_fmt3(seconds).replace(".", ""))


def _ceil_div(num: int, den: int) -> int:
    return -(-num // den)


def _segments_ms(durations: Sequence[float], sizes: Sequence[int], *, what: str) -> tuple[int, ...]:
    """Validate a segment list; return its durations in printed milliseconds."""
    if len(durations) == 0:
        raise ValueError(f"{what}: no media segments")
    if len(durations) != len(sizes):
        raise ValueError(f"{what}: {len(durations)} durations but {len(sizes)} sizes")
    try:
        ms = tuple(map(_ms, durations))
    except ValueError:  # "nan" / "inf" printed: not a number of milliseconds
        ms = (0,)
    # A segment must print as a positive EXTINF ("0.000" would be a zero-length
    # segment that no player can place on the timeline).
    if min(ms) <= 0:
        bad = next(d for d in durations if not (math.isfinite(d) and _ms(d) > 0))
        raise ValueError(f"{what}: segment duration {bad!r} must be >= 0.0005 s")
    if min(sizes) < 0:
        raise ValueError(f"{what}: segment size {min(sizes)} must not be negative")
    return ms


# --------------------------------------------------------------- bandwidth, target


def _cross(xs: list[int], ys: list[int], o: int, a: int, b: int) -> int:
    """z of (P_a - P_o) x (P_b - P_o): > 0 when P_o -> P_a -> P_b turns left."""
    ox, oy = xs[o], ys[o]
    return (xs[a] - ox) * (ys[b] - oy) - (ys[a] - oy) * (xs[b] - ox)


def _tangent(hull: list[int], reverse: bool, xs: list[int], ys: list[int], j: int) -> int:
    """Index of the hull point maximising the slope to point ``j`` (right of all).

    ``hull`` is a lower convex hull of prefix points, left to right (or right to
    left when ``reverse``). Along a lower hull the slope to a point on its right is
    unimodal: it grows while ``j`` lies on or above the line of the next edge, so a
    binary search finds the first edge that ``j`` lies strictly below.
    """
    m = len(hull)
    lo, hi = 0, m - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if reverse:
            a, b = hull[m - 1 - mid], hull[m - 2 - mid]
        else:
            a, b = hull[mid], hull[mid + 1]
        if _cross(xs, ys, a, b, j) < 0:
            hi = mid
        else:
            lo = mid + 1
    return hull[m - 1 - lo] if reverse else hull[lo]


def peak_bandwidth(durations: Sequence[float], sizes: Sequence[int], target_duration: int) -> int:
    """Peak segment bit rate in bits/s, rounded up (RFC 8216 §4.1, §4.3.4.2).

    "The largest bit rate of any contiguous set of segments whose total duration is
    between 0.5 and 1.5 times the target duration"; a set's rate is the sum of its
    sizes over the sum of its durations. When no set qualifies (a playlist shorter
    than half the target), the largest single-segment rate is returned.

    Durations count at EXTINF precision (ms), so bounds and rates are exact.

    Algorithm, O(n log n): with prefix points P_k = (ms before segment k, bytes before
    segment k), the window (i, j] has rate slope(P_i, P_j). For each right end j the
    admissible left ends i form a range whose both ends only move right (durations are
    positive), i.e. a queue. The best i is the tangent from P_j to the lower convex
    hull of the queued points. The queue is kept as two stacks, each with its hull:
    the back stack's hull is grown by Andrew's monotone chain; when the front stack
    runs empty the back stack moves over, built right to left while recording what
    each insertion popped, so dropping the oldest point is an exact undo. Every point
    is pushed, moved and undone once; each query is a binary search.
    """
    if target_duration < 1:
        raise ValueError(f"target duration {target_duration} must be >= 1")
    return _peak_ms(_segments_ms(durations, sizes, what="bandwidth"), sizes, target_duration)


def _peak_ms(ms: Sequence[int], sizes: Sequence[int], target_duration: int) -> int:
    """``peak_bandwidth`` on validated durations in milliseconds."""
    n = len(ms)
    xs = [0] * (n + 1)
    ys = [0] * (n + 1)
    for k in range(n):
        xs[k + 1] = xs[k] + ms[k]
        ys[k + 1] = ys[k] + sizes[k]
    lo_ms = 500 * target_duration  # 0.5 x target, in ms
    hi_ms = 1500 * target_duration  # 1.5 x target, in ms

    best_num, best_den = -1, 1  # best bytes / ms; -1 = no admissible window yet
    back: list[int] = []  # newer queued points, left to right
    back_hull: list[int] = []  # lower hull of `back`, left to right
    front_hull: list[int] = []  # lower hull of the front stack, right to left
    undo: list[list[int]] = []  # per front point (oldest last): hull points it popped
    pushed = 0  # prefix points 0..pushed-1 have entered the queue
    head = 0  # oldest prefix point still queued

    for j in range(1, n + 1):
        xj = xs[j]
        # Left ends far enough back for a window of >= 0.5 x target enter the queue.
        while pushed < j and xj - xs[pushed] >= lo_ms:
            p = pushed
            while len(back_hull) >= 2 and _cross(xs, ys, back_hull[-2], back_hull[-1], p) <= 0:
                back_hull.pop()
            back_hull.append(p)
            back.append(p)
            pushed += 1
        # Left ends too far back (window > 1.5 x target) leave it, oldest first.
        while head < pushed and xj - xs[head] > hi_ms:
            if not undo:  # front stack empty: move the back stack over
                for p in reversed(back):
                    popped: list[int] = []
                    while (
                        len(front_hull) >= 2
                        and _cross(xs, ys, p, front_hull[-1], front_hull[-2]) <= 0
                    ):
                        popped.append(front_hull.pop())
                    front_hull.append(p)
                    undo.append(popped)
                back.clear()
                back_hull.clear()
            front_hull.pop()
            front_hull.extend(reversed(undo.pop()))
            head += 1
        if head == pushed:
            continue  # no admissible window ends at segment j
        for hull, reverse in ((front_hull, True), (back_hull, False)):
            if hull:
                i = _tangent(hull, reverse, xs, ys, j)
                num, den = ys[j] - ys[i], xj - xs[i]
                if num * best_den > best_num * den:
                    best_num, best_den = num, den

    if best_num < 0:  # no window qualifies: fall back to the largest segment rate
        for size, d in zip(sizes, ms, strict=True):
            if size * best_den > best_num * d:
                best_num, best_den = size, d
    return _ceil_div(8000 * best_num, best_den)  # bytes/ms -> bits/s


def average_bandwidth(durations: Sequence[float], sizes: Sequence[int]) -> int:
    """Average segment bit rate in bits/s, rounded up: total bits / total duration
    (RFC 8216 §4.3.4.2 AVERAGE-BANDWIDTH)."""
    ms = _segments_ms(durations, sizes, what="bandwidth")
    return _ceil_div(8000 * sum(sizes), sum(ms))  # bytes/ms -> bits/s


def target_duration(durations_lists: Iterable[Sequence[float]]) -> int:
    """EXT-X-TARGETDURATION for playlists holding these EXTINF lists: the ceiling of
    the largest EXTINF as printed (3 decimals), at least 1 (RFC 8216 §4.3.3.1).

    Rounding to the printed precision first keeps 4.0004 ("4.000") at 4, while
    4.001 gives 5. Pass every variant of a master so they share one value
    (RFC 8216 §6.2.4).
    """
    longest = 0
    for durations in durations_lists:
        if durations:
            longest = max(longest, _ms(max(durations)))
    return max(1, _ceil_div(longest, 1000))


def scene_target_duration(clips: Sequence[Clip]) -> int:
    """The one target duration for every variant of a stitched scene: ceil of the
    largest EXTINF over all renditions of all clips (RFC 8216 §6.2.4)."""
    longest = max((max(r.durations_ms) for c in clips for r in c.renditions.values()), default=0)
    return max(1, _ceil_div(longest, 1000))


# ----------------------------------------------------------------- playlist pieces


def _media_header(target: int) -> list[str]:
    return [
        "#EXTM3U",
        f"#EXT-X-VERSION:{HLS_VERSION}",  # RFC 8216 §4.3.1.2, §7
        f"#EXT-X-TARGETDURATION:{target}",  # RFC 8216 §4.3.3.1
        "#EXT-X-MEDIA-SEQUENCE:0",  # RFC 8216 §4.3.3.2
        "#EXT-X-PLAYLIST-TYPE:VOD",  # RFC 8216 §4.3.3.5; Apple 8.6
        "#EXT-X-INDEPENDENT-SEGMENTS",  # RFC 8216 §4.3.5.1; Apple 9.11
    ]


def _check_target(target: int, durations_ms: Sequence[int], where: str) -> None:
    # RFC 8216 §4.3.3.1: each EXTINF rounded to the nearest integer <= target;
    # Apple 7.7: no segment longer than target + 0.5 s.
    if target < 1:
        raise ValueError(f"target duration {target} must be >= 1")
    longest = max(durations_ms)
    if longest >= target * 1000 + 500:
        raise ValueError(
            f"{where}: EXTINF {_fmt3(longest / 1000)} exceeds target duration {target}"
        )


def _stream_inf(
    *, bandwidth: int, average: int, codecs: str, width: int, height: int, frame_rate: float
) -> str:
    # RFC 8216 §4.3.4.2. BANDWIDTH is the measured peak, but never below the
    # average: a sequence that cannot be tiled by 0.5-1.5 x target windows can have
    # its RFC peak under its mean, and declaring less than the mean would make ABR
    # under-budget the variant (Apple 1.26/1.27 want both within 10% of measured).
    return (
        f"#EXT-X-STREAM-INF:BANDWIDTH={max(bandwidth, average)},"
        f"AVERAGE-BANDWIDTH={average},"  # Apple 9.14 (MUST)
        f'CODECS="{codecs}",'  # Apple 9.1 (MUST)
        f"RESOLUTION={width}x{height},"  # Apple 9.2 (MUST)
        f"FRAME-RATE={_fmt3(frame_rate)}"  # Apple 9.15 (MUST)
    )


SUBTITLES_GROUP = "subs"


def _subtitles_media(languages: Sequence[str], uri_for: Callable[[str], str]) -> list[str]:
    """One subtitles rendition per language (RFC 8216 §4.3.4.1): NAME and LANGUAGE the
    tag, not the default, chosen by the player for a viewer of that language
    (AUTOSELECT), not forced."""
    return [
        f'#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="{SUBTITLES_GROUP}",NAME="{lang}",'
        f'LANGUAGE="{lang}",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,'
        f'URI="{uri_for(subtitles_playlist_name(lang))}"'
        for lang in languages
    ]


def scene_languages(clips: Sequence[Clip]) -> list[str]:
    """Every language some clip has captions in, sorted."""
    return sorted({lang for clip in clips for lang in clip.captions})


def _master(variants: list[tuple[int, str, str]], subtitles: Sequence[str] = ()) -> str:
    """variants: (declared bandwidth, EXT-X-STREAM-INF line, URI); subtitles: the
    EXT-X-MEDIA lines, and then every variant names their group."""
    lines = [
        "#EXTM3U",
        # The version covers "its associated media" (RFC 8216 §4.3.1.2): the same
        # version as the media playlists below it.
        f"#EXT-X-VERSION:{HLS_VERSION}",
        # RFC 8216 §4.3.5.1: in a master it applies to every media playlist.
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    lines.extend(subtitles)
    group = f',SUBTITLES="{SUBTITLES_GROUP}"' if subtitles else ""
    # Variants by bandwidth ascending; sorted() is stable, so ties keep input order.
    for _, inf, uri in sorted(variants, key=lambda v: v[0]):
        lines.append(inf + group)
        lines.append(uri)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- per-clip playlists


def clip_media_playlist(
    rendition: Rendition,
    *,
    target: int | None = None,
    uri_for: Callable[[str], str] = str,
) -> str:
    """A clip's own media playlist (``{profile}.m3u8``), segment URIs
    ``uri_for("{profile}_{NNNN}.ts")`` numbered from 0001 (relative to the playlist
    by default; ``{profile}_g{N}_{NNNN}.ts`` from generation 2 on).

    ``target`` defaults to this rendition's own ceil(max EXTINF); pass
    ``target_duration`` over all of the clip's renditions when they could differ,
    so the clip's variants agree (RFC 8216 §6.2.4).
    """
    if target is None:
        target = target_duration([rendition.durations])
    _check_target(target, rendition.durations_ms, f"rendition {rendition.profile}")
    lines = _media_header(target)
    stem = generation_stem(rendition.profile, rendition.generation)
    for n, d in enumerate(rendition.durations, 1):
        lines.append(f"#EXTINF:{_fmt3(d)},")  # RFC 8216 §4.3.2.1
        lines.append(uri_for(f"{stem}{n:04d}.ts"))
    lines.append("#EXT-X-ENDLIST")  # RFC 8216 §4.3.3.4
    return "\n".join(lines) + "\n"


def clip_master_playlist(
    renditions: Sequence[Rendition],
    *,
    uri_for: Callable[[str], str] = str,
    languages: Sequence[str] = (),
) -> str:
    """A clip's own master playlist (``master.m3u8``): one variant per rendition, URI
    ``uri_for("{profile}.m3u8")``, from the rendition's measured bandwidths; one
    subtitles rendition per language of ``languages`` (``subs_{lang}.m3u8``)."""
    if not renditions:
        raise ValueError("a master playlist needs at least one rendition")
    variants = []
    for r in renditions:
        inf = _stream_inf(
            bandwidth=r.bandwidth_peak,
            average=r.bandwidth_average,
            codecs=r.codecs,
            width=r.width,
            height=r.height,
            frame_rate=r.frame_rate,
        )
        variants.append(
            (max(r.bandwidth_peak, r.bandwidth_average), inf, uri_for(f"{r.profile}.m3u8"))
        )
    return _master(variants, _subtitles_media(languages, uri_for))


# ------------------------------------------------------------ stitched playlists


_AVC_RE = re.compile(r"(?:avc1|avc3)\.([0-9A-Fa-f]{6})")


def _codecs_level(codecs: str) -> int:
    """H.264 level_idc of an ``avc1.PPCCLL`` entry (-1 when there is none)."""
    match = _AVC_RE.search(codecs)
    return int(match.group(1)[4:], 16) if match else -1


#: H.264 profile_idc by what a decoder of it can decode: a High profile decoder decodes
#: Main and constrained Baseline streams (H.264 A.2.4), a Main one constrained Baseline.
_PROFILE_RANK = {0x42: 0, 0x4D: 1, 0x64: 2}


def _pick_codecs(codecs: Iterable[str]) -> str:
    """CODECS for a stitched variant: one that covers every segment of it (RFC 8216
    §4.3.4.2: a variant must not declare less decoder capability than any of its
    segments needs; HLS-RULES level table). The clips' rungs normally share one
    string. A variant that plays a smaller clip's largest real rendition (a clip
    smaller than the rung, or one whose refinement has not landed) mixes H.264
    profiles and levels: the entry of the most capable profile (Baseline < Main <
    High; the first clip's on ties) with the highest level of them all. Entries that
    are not ``avc1.PPCCLL``: the first clip's string."""
    distinct = list(dict.fromkeys(codecs))
    if len(distinct) == 1:
        return distinct[0]
    best, best_rank, level = "", -2, -1
    for value in distinct:
        match = _AVC_RE.search(value)
        if match is None:
            continue
        rank = _PROFILE_RANK.get(int(match.group(1)[:2], 16), -1)
        if rank > best_rank:
            best, best_rank = value, rank
        level = max(level, _codecs_level(value))
    if not best:
        return distinct[0]
    match = _AVC_RE.search(best)
    assert match is not None
    start = match.start(1) + 4  # the level's two hex digits in `best`
    return f"{best[:start]}{level:02x}{best[start + 2 :]}"


def _require_clips(clips: Sequence[Clip]) -> None:
    if not clips:
        raise ValueError("a stitched scene needs at least one ready clip")


def scene_profiles(clips: Sequence[Clip]) -> list[str]:
    """The variants of a stitched scene, lowest first: every profile some clip has.
    A profile ranks by the largest frame filed under it (then its name): a clip
    smaller than a rung files its one rendition under the lowest rung at its own size
    (workers/media/encoding.py `clip_ladder`), so the frame of any one clip's
    rendition could misplace the profile. Adding a clip, or a clip's refinement,
    never takes a variant away."""
    area: dict[str, int] = {}
    for clip in clips:
        for profile, r in clip.renditions.items():
            area[profile] = max(area.get(profile, 0), r.width * r.height)
    return sorted(area, key=lambda p: (area[p], p))


def variant_rendition(clip: Clip, profile: str, order: Sequence[str]) -> Rendition:
    """The rendition of `clip` that the stitched variant `profile` plays (`order`: the
    scene's profiles, lowest first, `scene_profiles`): the clip's own rendition of
    that profile; else its largest real rendition below it (DESIGN "Transcode": a
    source smaller than a rung is not upscaled into it; a clip in its first stage has
    its lowest rung alone); else its lowest. hls.js switches resolution across the
    discontinuity before the clip (HLS-RULES "How hls.js plays a stitched playlist")."""
    own = clip.renditions.get(profile)
    if own is not None:
        return own
    rank = {p: i for i, p in enumerate(order)}
    mine = sorted(clip.renditions, key=lambda p: rank.get(p, -1))
    if not mine:
        raise ValueError(f"clip {clip.segment_id} has no rendition")
    limit = rank.get(profile, len(order))
    below = [p for p in mine if rank.get(p, -1) < limit]
    return clip.renditions[below[-1] if below else mine[0]]


def stitched_master(
    clips: Sequence[Clip], profiles: Sequence[str], *, uri_for: Callable[[str], str]
) -> str:
    """The scene master playlist: one variant per profile of ``profiles`` that some
    clip has, URI ``uri_for("{profile}.m3u8")``, ordered by bandwidth ascending; a clip
    without a profile plays its ``variant_rendition`` in that variant. One subtitles
    rendition per language some clip has captions in (``subs_{lang}.m3u8``,
    ``stitched_subtitles``), named by every variant.

    BANDWIDTH is measured on the stitched variant itself (``peak_bandwidth`` over
    all its segments in order, with the scene target duration): RFC 8216 §4.1 defines
    the peak on the playlist the player reads, and windows straddling a clip
    boundary or a larger scene target make the per-clip peaks wrong in both
    directions. AVERAGE-BANDWIDTH is total bits / total duration. CODECS: see
    ``_pick_codecs``; RESOLUTION and FRAME-RATE: the largest over the renditions the
    variant plays.
    """
    _require_clips(clips)
    order = scene_profiles(clips)
    present = [p for p in dict.fromkeys(profiles) if p in order]
    if not present:
        raise ValueError(f"no profile of {list(profiles)} is present in any clip")
    target = scene_target_duration(clips)
    variants = []
    for profile in present:
        rends = [variant_rendition(c, profile, order) for c in clips]
        ms = [m for r in rends for m in r.durations_ms]
        sizes = [s for r in rends for s in r.sizes]
        peak = _peak_ms(ms, sizes, target)
        average = _ceil_div(8000 * sum(sizes), sum(ms))
        inf = _stream_inf(
            bandwidth=peak,
            average=average,
            codecs=_pick_codecs(r.codecs for r in rends),
            width=max(r.width for r in rends),
            height=max(r.height for r in rends),
            frame_rate=max(r.frame_rate for r in rends),
        )
        variants.append((max(peak, average), inf, uri_for(f"{profile}.m3u8")))
    return _master(variants, _subtitles_media(scene_languages(clips), uri_for))


def stitched_media(
    clips: Sequence[Clip], profile: str, *, target: int, uri_for: Callable[[str], str]
) -> str:
    """The scene media playlist of one profile: every clip's segments in order, URI
    ``uri_for("{segment_id}/{profile}_{NNNN}.ts")`` (in the clip's generation; a clip
    without the profile: its ``variant_rendition``'s), ``#EXT-X-DISCONTINUITY`` at
    every clip boundary. ``target`` must be ``scene_target_duration(clips)`` so all
    variants agree (RFC 8216 §6.2.4); a target some EXTINF would exceed raises, and
    so does a profile no clip has.

    Discontinuities depend only on the clip sequence, never on the profile, so every
    variant has them at the same points (RFC 8216 §6.2.4; Apple 8.15); every
    rendition of a clip has the same EXTINF list, so the variants' lists agree too.
    """
    _require_clips(clips)
    if target < 1:
        raise ValueError(f"target duration {target} must be >= 1")
    longest_ms = target * 1000 + 500  # Apple 7.7 (`_check_target`), checked inline
    order: list[str] | None = None  # scene_profiles, made once a clip lacks `profile`
    own = False
    lines = _media_header(target)
    append = lines.append
    extinf: dict[float, str] = {}  # EXTINF lines formatted once per distinct value
    first = True
    for clip in clips:
        rendition = clip.renditions.get(profile)
        if rendition is None:
            order = order or scene_profiles(clips)
            rendition = variant_rendition(clip, profile, order)
        else:
            own = True
        if max(rendition.durations_ms) >= longest_ms:
            _check_target(target, rendition.durations_ms, f"clip {clip.segment_id} {profile}")
        if first:
            first = False
        else:
            # RFC 8216 §4.3.2.3: each clip restarts its timestamps. None before the
            # first segment; no EXT-X-DISCONTINUITY-SEQUENCE needed as it starts at 0
            # (RFC 8216 §4.3.3.3).
            append("#EXT-X-DISCONTINUITY")
        stem = f"{clip.segment_id}/{generation_stem(rendition.profile, rendition.generation)}"
        for n, d in enumerate(rendition.durations, 1):
            line = extinf.get(d)
            if line is None:
                line = extinf[d] = f"#EXTINF:{d:.3f},"  # RFC 8216 §4.3.2.1
            append(line)
            append(uri_for(f"{stem}{n:04d}.ts"))
    if not own:
        raise ValueError(f"no clip has a {profile} rendition")
    append("#EXT-X-ENDLIST")  # RFC 8216 §4.3.3.4; Apple 8.7 (VOD)
    return "\n".join(lines) + "\n"


def _clip_extinfs(clip: Clip) -> tuple[float, ...]:
    """The clip's EXTINF list (the same in every rendition by design)."""
    return next(iter(clip.renditions.values())).durations


def _subtitles_segments(
    lines: list[str], clip: Clip, language: str, prefix: str, uri_for: Callable[[str], str]
) -> None:
    revision = clip.subtitles_revision(language)
    for n, d in enumerate(_clip_extinfs(clip), 1):
        name = subtitles_segment_name(SubtitlesSegment(language, clip.generation, revision, n))
        lines.append(f"#EXTINF:{_fmt3(d)},")
        lines.append(uri_for(prefix + name))


def stitched_subtitles(
    clips: Sequence[Clip], language: str, *, target: int, uri_for: Callable[[str], str]
) -> str:
    """The scene's subtitles playlist in ``language``: for every clip one WebVTT
    segment per media segment, with its EXTINF, and ``#EXT-X-DISCONTINUITY`` at every
    clip boundary, so boundaries, durations and discontinuities are the video
    variants' (Apple 6.x; RFC 8216 §6.2.4). URIs ``uri_for("{segment_id}/subs_{lang}_g
    {generation}_r{revision}_{NNNN}.vtt")``; revision 0 (an empty segment) for a clip
    without captions in that language. ``target``: ``scene_target_duration(clips)``."""
    _require_clips(clips)
    lines = _media_header(target)
    for i, clip in enumerate(clips):
        if i:
            lines.append("#EXT-X-DISCONTINUITY")
        _subtitles_segments(lines, clip, language, f"{clip.segment_id}/", uri_for)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def clip_subtitles(clip: Clip, language: str, *, uri_for: Callable[[str], str] = str) -> str:
    """A clip's own subtitles playlist in ``language`` (``subs_{lang}.m3u8`` beside its
    media playlists): its WebVTT segments, one per media segment."""
    target = target_duration(r.durations for r in clip.renditions.values())
    lines = _media_header(target)
    _subtitles_segments(lines, clip, language, "", uri_for)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def subtitles_bounds_ms(clip: Clip) -> list[int]:
    """Where the clip's WebVTT segments start and end on its own timeline, in ms:
    ``[0, end of segment 1, ..., end]`` (printed EXTINFs, as a player places them)."""
    bounds = [0]
    for ms in next(iter(clip.renditions.values())).durations_ms:
        bounds.append(bounds[-1] + ms)
    return bounds


def _clip_timeline_ms(clip: Clip) -> int:
    """Length of a clip on the stitched timeline: the sum of its printed EXTINFs
    (identical in every rendition by design), i.e. where a player puts the next
    clip's first segment. Falls back to the probed duration without renditions."""
    for rendition in clip.renditions.values():
        return sum(rendition.durations_ms)
    return _ms(clip.duration)


def timeline_ms(clips: Sequence[Clip]) -> list[int]:
    """Clip boundaries on the stitched timeline, in ms: ``[0, end of clip 1, ...,
    total]`` (one more than ``clips``). The same offsets as the storyboard's and the
    stitched media playlists' (where each ``#EXT-X-DISCONTINUITY`` falls)."""
    bounds = [0]
    for clip in clips:
        bounds.append(bounds[-1] + _clip_timeline_ms(clip))
    return bounds


def vtt_time(ms: int) -> str:
    """WebVTT timestamp ``hh:mm:ss.ttt`` of ``ms`` milliseconds."""
    seconds, milli = divmod(ms, 1000)
    minutes, sec = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours:02d}:{minute:02d}:{sec:02d}.{milli:03d}"


def _storyboard_cues(
    blocks: list[str], clip: Clip, offset: int, uri_for: Callable[[str], str]
) -> int:
    """Append the clip's cues shifted by ``offset`` ms; returns the clip's length."""
    length = _clip_timeline_ms(clip)
    for cue in clip.storyboard:
        start = _ms(cue.start)
        end = min(_ms(cue.end), length)
        if end <= start:
            continue  # the cue lies past the end of its clip
        blocks.append(
            f"{vtt_time(offset + start)} --> {vtt_time(offset + end)}\n"
            f"{uri_for(cue.sheet)}#xywh={cue.x},{cue.y},{cue.w},{cue.h}"
        )
    return length


def _under(uri_for: Callable[[str], str], prefix: str) -> Callable[[str], str]:
    return lambda rel: uri_for(prefix + rel)


def clip_storyboard_vtt(clip: Clip, *, uri_for: Callable[[str], str] = str) -> str:
    """A clip's own storyboard WebVTT (JW Player thumbnail convention): cue times on
    the clip's timeline, clipped to its length; payload ``uri_for(sheet)#xywh=...``."""
    blocks = ["WEBVTT"]
    _storyboard_cues(blocks, clip, 0, uri_for)
    return "\n\n".join(blocks) + "\n"


def stitched_storyboard_vtt(clips: Sequence[Clip], *, uri_for: Callable[[str], str]) -> str:
    """One storyboard WebVTT for the scene (JW Player thumbnail convention).

    Cue times are clip-relative cue times shifted by the cumulative timeline length
    of the earlier clips; that length is the sum of their EXTINFs, the time a player
    actually shows (hls.js maps each discontinuity onto the playlist time), so cues
    cannot drift from the video over many clips. Cues are clipped to their clip so
    they never overlap the next clip's. Each cue's payload is
    ``uri_for("{segment_id}/{sheet}")#xywh=x,y,w,h``.
    """
    blocks = ["WEBVTT"]
    offset = 0
    for clip in clips:
        offset += _storyboard_cues(blocks, clip, offset, _under(uri_for, f"{clip.segment_id}/"))
    return "\n\n".join(blocks) + "\n"
