"""Property tests for core.playlists: random stitched scenes (clips of different sizes
and frame rates, some with the lowest rung alone) keep the HLS rules of HLS-RULES.md,
and peak_bandwidth agrees with a brute-force reading of RFC 8216 §4.1."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import m3u8
from hypothesis import given, settings
from hypothesis import strategies as st

from core.playlists import (
    Clip,
    Rendition,
    average_bandwidth,
    peak_bandwidth,
    scene_profiles,
    scene_target_duration,
    stitched_master,
    stitched_media,
    target_duration,
    variant_rendition,
)

#: H.264 profile_idc (hex) by what its decoders decode: Main < High
RANK = {"4d": 1, "64": 2}

PROFILES = ("720p", "1080p")
BOX = {"720p": (1280, 720, "avc1.4d401f,mp4a.40.2"), "1080p": (1920, 1080, "avc1.640028,mp4a.40.2")}
#: A source smaller than 720p: the lowest rung at its own size (encoding.clip_ladder).
SMALL = (640, 480, "avc1.4d401e,mp4a.40.2")
#: full: both rungs; first: the first stage's lowest rung alone; small: a 640x480 source
KINDS = {"full": PROFILES, "first": PROFILES[:1], "small": PROFILES[:1]}

durations_st = st.floats(min_value=0.1, max_value=4.5, allow_nan=False, allow_infinity=False)


@st.composite
def clips_st(draw: st.DrawFn, index: int) -> Clip:
    """A clip as the transcoder makes it: every rendition shares one EXTINF list; some
    clips have the lowest rung alone (their first stage, or a source smaller than
    the next rung), at frame rates of their own."""
    durations = tuple(draw(st.lists(durations_st, min_size=1, max_size=6)))
    kind = draw(st.sampled_from(sorted(KINDS)))
    fps = draw(st.sampled_from([25.0, 29.97, 30.0, 50.0, 60.0]))
    renditions = {}
    for profile in KINDS[kind]:
        sizes = tuple(
            draw(
                st.lists(
                    st.integers(0, 3_000_000), min_size=len(durations), max_size=len(durations)
                )
            )
        )
        width, height, codecs = SMALL if kind == "small" else BOX[profile]
        renditions[profile] = Rendition(
            profile=profile,
            width=width,
            height=height,
            frame_rate=fps,
            codecs=codecs,
            durations=durations,
            sizes=sizes,
            bandwidth_peak=peak_bandwidth(durations, sizes, target_duration([durations])),
            bandwidth_average=average_bandwidth(durations, sizes),
        )
    return Clip(f"seg_{index:03d}", sum(durations), renditions)


@st.composite
def scenes_st(draw: st.DrawFn) -> list[Clip]:
    count = draw(st.integers(1, 30))
    return [draw(clips_st(i)) for i in range(count)]


def uri_for(name: str) -> str:
    return f"https://cdn.example/v/scn_1/{name}?sig=x"


def _tag_value(lines: list[str], tag: str) -> str:
    values = [line.split(":", 1)[1] for line in lines if line.startswith(tag + ":")]
    assert len(values) == 1, tag
    return values[0]


def _structure(lines: list[str]) -> list[str]:
    """EXTINF values and discontinuities, in order (URIs left out)."""
    return [line for line in lines if line.startswith(("#EXTINF:", "#EXT-X-DISCONTINUITY"))]


@settings(max_examples=150, deadline=None)
@given(scenes_st())
def test_stitched_scene_keeps_the_hls_rules(clips: list[Clip]) -> None:
    target = scene_target_duration(clips)
    variants = scene_profiles(clips)
    # a variant is never lost to a clip that lacks it (issue 26)
    assert variants == [p for p in PROFILES if any(p in c.renditions for c in clips)]
    texts = {p: stitched_media(clips, p, target=target, uri_for=uri_for) for p in variants}
    structures = []
    for profile, text in texts.items():
        lines = text.splitlines()
        assert text.endswith("\n") and lines[0] == "#EXTM3U"
        assert _tag_value(lines, "#EXT-X-VERSION") == "3"
        assert _tag_value(lines, "#EXT-X-MEDIA-SEQUENCE") == "0"
        assert _tag_value(lines, "#EXT-X-PLAYLIST-TYPE") == "VOD"
        assert int(_tag_value(lines, "#EXT-X-TARGETDURATION")) == target
        assert lines[-1] == "#EXT-X-ENDLIST" and lines.count("#EXT-X-ENDLIST") == 1
        assert lines.count("#EXT-X-DISCONTINUITY") == len(clips) - 1
        # No discontinuity before the first segment.
        first_segment = next(i for i, line in enumerate(lines) if line.startswith("#EXTINF"))
        assert "#EXT-X-DISCONTINUITY" not in lines[:first_segment]

        # RFC 8216 §4.3.3.1: every EXTINF, rounded to the nearest integer, <= target.
        extinfs = [Decimal(line[8:-1]) for line in lines if line.startswith("#EXTINF:")]
        assert all(e.quantize(Decimal(1), ROUND_HALF_UP) <= target for e in extinfs)
        assert target == max(1, math.ceil(max(extinfs)))

        # The m3u8 library reads the same playlist.
        parsed = m3u8.loads(text)
        assert parsed.target_duration == target
        assert parsed.version == 3 and parsed.media_sequence == 0 and parsed.is_endlist
        assert [Decimal(str(s.duration)) for s in parsed.segments] == extinfs
        flags = [s.discontinuity for s in parsed.segments]
        starts = [0]
        for c in clips[:-1]:
            starts.append(starts[-1] + len(variant_rendition(c, profile, variants).durations))
        assert [i for i, flag in enumerate(flags) if flag] == starts[1:]
        # a clip without the profile plays its largest real rendition (the lowest here)
        first = profile if profile in clips[0].renditions else "720p"
        assert parsed.segments[0].uri == uri_for(f"{clips[0].segment_id}/{first}_0001.ts")
        structures.append(_structure(lines))

    # Same EXTINF lists and discontinuities at the same points in every variant
    # (RFC 8216 §6.2.4, Apple 8.15 / 8.22).
    assert all(s == structures[0] for s in structures)
    # Byte-identical for identical input.
    assert stitched_media(clips, "720p", target=target, uri_for=uri_for) == texts["720p"]

    master = m3u8.loads(stitched_master(clips, list(PROFILES), uri_for=uri_for))
    assert len(master.playlists) == len(variants)
    bandwidths = [p.stream_info.bandwidth for p in master.playlists]
    assert bandwidths == sorted(bandwidths)
    for playlist in master.playlists:
        info = playlist.stream_info
        assert info.bandwidth >= info.average_bandwidth
        profile = playlist.uri.rsplit("/", 1)[1].split(".m3u8")[0]
        played = [variant_rendition(c, profile, variants) for c in clips]
        # CODECS covers every segment (profile and level), RESOLUTION and FRAME-RATE
        # are the largest the variant plays (RFC 8216 §4.3.4.2)
        video = info.codecs.split(",")[0]
        for r in played:
            mine = r.codecs.split(",")[0]
            assert RANK[video[5:7]] >= RANK[mine[5:7]] and video[9:] >= mine[9:]
        assert info.resolution == (max(r.width for r in played), max(r.height for r in played))
        assert info.frame_rate == max(r.frame_rate for r in played)


def reference_peak(durations: list[float], sizes: list[int], target: int) -> int:
    """RFC 8216 §4.1 read literally, O(n^2), durations as printed (3 decimals)."""
    seconds = [Fraction(Decimal(f"{d:.3f}")) for d in durations]
    best: Fraction | None = None
    for i in range(len(durations)):
        total, bits = Fraction(0), 0
        for j in range(i, len(durations)):
            total += seconds[j]
            bits += 8 * sizes[j]
            if Fraction(target, 2) <= total <= Fraction(3 * target, 2):
                rate = bits / total
                best = rate if best is None or rate > best else best
    if best is None:
        best = max(8 * s / d for s, d in zip(sizes, seconds, strict=True))
    return math.ceil(best)


@st.composite
def segment_lists(draw: st.DrawFn) -> tuple[list[float], list[int], int]:
    n = draw(st.integers(1, 25))
    duration = st.one_of(
        durations_st,
        st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 4.0004, 4.001]),
    )
    durations = draw(st.lists(duration, min_size=n, max_size=n))
    sizes = draw(
        st.lists(
            st.one_of(st.integers(0, 5_000_000), st.sampled_from([0, 1, 1000])),
            min_size=n,
            max_size=n,
        )
    )
    target = draw(st.integers(1, 8))
    return durations, sizes, target


@settings(max_examples=400, deadline=None)
@given(segment_lists())
def test_peak_bandwidth_matches_brute_force(case: tuple[list[float], list[int], int]) -> None:
    durations, sizes, target = case
    assert peak_bandwidth(durations, sizes, target) == reference_peak(durations, sizes, target)


@settings(max_examples=200, deadline=None)
@given(segment_lists())
def test_average_is_total_bits_over_total_duration(
    case: tuple[list[float], list[int], int],
) -> None:
    durations, sizes, _ = case
    seconds = sum(Fraction(Decimal(f"{d:.3f}")) for d in durations)
    assert average_bandwidth(durations, sizes) == math.ceil(8 * sum(sizes) / seconds)
