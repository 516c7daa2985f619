"""Expected-string tests for core.playlists (globocom/m3u8 style), with the m3u8
library as an independent parser oracle."""

from __future__ import annotations

import dataclasses

import m3u8
import pytest

from core.playlists import (
    Clip,
    Rendition,
    StoryboardCue,
    average_bandwidth,
    clip_master_playlist,
    clip_media_playlist,
    clip_storyboard_vtt,
    peak_bandwidth,
    scene_profiles,
    scene_target_duration,
    stitched_master,
    stitched_media,
    stitched_storyboard_vtt,
    target_duration,
    variant_rendition,
    vtt_time,
)

C720 = "avc1.4d401f,mp4a.40.2"
C1080 = "avc1.640028,mp4a.40.2"


def rendition(
    profile: str,
    durations: tuple[float, ...],
    sizes: tuple[int, ...],
    *,
    codecs: str | None = None,
    frame_rate: float = 30.0,
) -> Rendition:
    width, height = {"720p": (1280, 720), "1080p": (1920, 1080)}[profile]
    return Rendition(
        profile=profile,
        width=width,
        height=height,
        frame_rate=frame_rate,
        codecs=codecs or (C720 if profile == "720p" else C1080),
        durations=durations,
        sizes=sizes,
        bandwidth_peak=peak_bandwidth(durations, sizes, target_duration([durations])),
        bandwidth_average=average_bandwidth(durations, sizes),
    )


def clip(segment_id: str, durations: tuple[float, ...], sizes_720: tuple[int, ...]) -> Clip:
    """A clip whose 1080p rendition has the 720p durations and twice its sizes."""
    return Clip(
        segment_id=segment_id,
        duration=sum(durations),
        renditions={
            "720p": rendition("720p", durations, sizes_720),
            "1080p": rendition("1080p", durations, tuple(2 * s for s in sizes_720)),
        },
    )


# 720p rates: A 1.5 Mb/s throughout; B 1.6 Mb/s; C 2.0 then 1.0 Mb/s.
SCENE = (
    clip("seg_a", (4.0, 4.0, 2.0), (750_000, 750_000, 375_000)),
    clip("seg_b", (4.5,), (900_000,)),
    clip("seg_c", (4.0, 1.5), (1_000_000, 187_500)),
)


def relative(name: str) -> str:
    return name


# ------------------------------------------------------------- per-clip playlists


def test_clip_media_playlist() -> None:
    r = rendition("720p", (4.0, 4.0, 4.0, 2.5), (750_000, 750_000, 750_000, 300_000))
    assert clip_media_playlist(r) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:4\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:4.000,\n"
        "720p_0001.ts\n"
        "#EXTINF:4.000,\n"
        "720p_0002.ts\n"
        "#EXTINF:4.000,\n"
        "720p_0003.ts\n"
        "#EXTINF:2.500,\n"
        "720p_0004.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_clip_media_playlist_prefix_and_shared_target() -> None:
    r = rendition("1080p", (3.2, 0.8333333), (400_000, 100_000))

    def uri_for(rel: str) -> str:
        return "https://cdn.example/v/scn/seg/" + rel

    assert clip_media_playlist(r, target=5, uri_for=uri_for) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:5\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:3.200,\n"
        "https://cdn.example/v/scn/seg/1080p_0001.ts\n"
        "#EXTINF:0.833,\n"
        "https://cdn.example/v/scn/seg/1080p_0002.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_clip_media_playlist_rejects_a_target_below_an_extinf() -> None:
    r = rendition("720p", (4.5,), (1,))
    with pytest.raises(ValueError, match="exceeds target duration 4"):
        clip_media_playlist(r, target=4)


def test_clip_master_playlist_orders_by_bandwidth() -> None:
    hd = Rendition("1080p", 1920, 1080, 30.0, C1080, (4.0,), (2_000_000,), 4_000_000, 3_900_000)
    sd = Rendition("720p", 1280, 720, 29.97, C720, (4.0,), (750_000,), 1_500_000, 1_450_000)
    assert clip_master_playlist([hd, sd]) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=1500000,AVERAGE-BANDWIDTH=1450000,"
        'CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=29.970\n'
        "720p.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=4000000,AVERAGE-BANDWIDTH=3900000,"
        'CODECS="avc1.640028,mp4a.40.2",RESOLUTION=1920x1080,FRAME-RATE=30.000\n'
        "1080p.m3u8\n"
    )


def test_clip_master_never_declares_bandwidth_below_average() -> None:
    r = Rendition("720p", 1280, 720, 30.0, C720, (4.0,), (1,), 1_000, 1_200)
    assert "BANDWIDTH=1200,AVERAGE-BANDWIDTH=1200," in clip_master_playlist([r])


def test_clip_master_parses_with_m3u8() -> None:
    parsed = m3u8.loads(clip_master_playlist([c.renditions["720p"] for c in SCENE[:1]]))
    info = parsed.playlists[0].stream_info
    assert (info.bandwidth, info.average_bandwidth) == (1_500_000, 1_500_000)
    assert info.codecs == C720
    assert info.resolution == (1280, 720)
    assert info.frame_rate == 30.0


# ------------------------------------------------------------ stitched playlists


def test_scene_target_duration_covers_every_variant() -> None:
    assert scene_target_duration(SCENE) == 5  # the 4.5 s segment of seg_b
    odd = Clip(
        "seg_x",
        4.0,
        {
            "720p": rendition("720p", (4.0,), (1,)),
            "1080p": rendition("1080p", (4.2,), (1,)),
        },
    )
    assert scene_target_duration([odd]) == 5


def test_stitched_media_three_clips() -> None:
    text = stitched_media(SCENE, "720p", target=scene_target_duration(SCENE), uri_for=relative)
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:5\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:4.000,\n"
        "seg_a/720p_0001.ts\n"
        "#EXTINF:4.000,\n"
        "seg_a/720p_0002.ts\n"
        "#EXTINF:2.000,\n"
        "seg_a/720p_0003.ts\n"
        "#EXT-X-DISCONTINUITY\n"
        "#EXTINF:4.500,\n"
        "seg_b/720p_0001.ts\n"
        "#EXT-X-DISCONTINUITY\n"
        "#EXTINF:4.000,\n"
        "seg_c/720p_0001.ts\n"
        "#EXTINF:1.500,\n"
        "seg_c/720p_0002.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_stitched_media_uses_uri_for_and_is_deterministic() -> None:
    def signed(name: str) -> str:
        return f"https://cdn.example/v/scn_1/{name}?token=t"

    one = stitched_media(SCENE[1:2], "1080p", target=5, uri_for=signed)
    assert one == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:5\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:4.500,\n"
        "https://cdn.example/v/scn_1/seg_b/1080p_0001.ts?token=t\n"
        "#EXT-X-ENDLIST\n"
    )
    assert stitched_media(SCENE, "720p", target=5, uri_for=signed) == stitched_media(
        SCENE, "720p", target=5, uri_for=signed
    )


def test_stitched_media_matches_m3u8_oracle() -> None:
    text = stitched_media(SCENE, "1080p", target=5, uri_for=relative)
    parsed = m3u8.loads(text)
    assert parsed.version == 3
    assert parsed.target_duration == 5
    assert parsed.media_sequence == 0
    assert parsed.playlist_type == "vod"
    assert parsed.is_endlist
    assert parsed.is_independent_segments
    assert [s.duration for s in parsed.segments] == [4.0, 4.0, 2.0, 4.5, 4.0, 1.5]
    assert [s.discontinuity for s in parsed.segments] == [False] * 3 + [True, True, False]
    assert [s.uri for s in parsed.segments] == [
        "seg_a/1080p_0001.ts",
        "seg_a/1080p_0002.ts",
        "seg_a/1080p_0003.ts",
        "seg_b/1080p_0001.ts",
        "seg_c/1080p_0001.ts",
        "seg_c/1080p_0002.ts",
    ]


def test_stitched_media_errors() -> None:
    with pytest.raises(ValueError, match="at least one ready clip"):
        stitched_media([], "720p", target=4, uri_for=relative)
    with pytest.raises(ValueError, match="no clip has a 2160p rendition"):
        stitched_media(SCENE, "2160p", target=5, uri_for=relative)
    with pytest.raises(ValueError, match="seg_b 720p: EXTINF 4.500 exceeds target duration 4"):
        stitched_media(SCENE, "720p", target=4, uri_for=relative)


def test_stitched_master_three_clips() -> None:
    # Scene target 5 -> windows of 2.5..7.5 s over the stitched 720p list
    # 4.0@1.5M 4.0@1.5M 2.0@1.5M | 4.5@1.6M | 4.0@2.0M 1.5@1.0M: the best window is
    # seg_c's lone 4.0 s segment at 2.0 Mb/s (4.0+1.5 averages 1.727 Mb/s; 1.5 alone
    # is too short). Average: 3,962,500 B * 8 / 20.0 s = 1,585,000 (1080p: twice).
    text = stitched_master(SCENE, ["1080p", "720p"], uri_for=relative)
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=2000000,AVERAGE-BANDWIDTH=1585000,"
        'CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=30.000\n'
        "720p.m3u8\n"
        "#EXT-X-STREAM-INF:BANDWIDTH=4000000,AVERAGE-BANDWIDTH=3170000,"
        'CODECS="avc1.640028,mp4a.40.2",RESOLUTION=1920x1080,FRAME-RATE=30.000\n'
        "1080p.m3u8\n"
    )
    parsed = m3u8.loads(text)
    assert [p.uri for p in parsed.playlists] == ["720p.m3u8", "1080p.m3u8"]
    assert [p.stream_info.bandwidth for p in parsed.playlists] == [2_000_000, 4_000_000]


def test_stitched_master_measures_windows_across_clip_boundaries() -> None:
    # Clip 1 ends with a short 10 Mb/s tail, clip 2 starts with a 5 Mb/s segment.
    # Per clip (target 4, windows 2..6 s): clip 1 peaks at (4*1M + 1.2*10M)/5.2 =
    # 3.08 Mb/s, clip 2 at 5 Mb/s. The stitched window tail+head is
    # (1.2*10M + 4*5M)/5.2 = 6,153,846.15 -> 6,153,847 b/s. Average: 40 Mbit / 13.2 s.
    first = clip("seg_1", (4.0, 1.2), (500_000, 1_500_000))
    second = clip("seg_2", (4.0, 4.0), (2_500_000, 500_000))
    assert (
        max(first.renditions["720p"].bandwidth_peak, second.renditions["720p"].bandwidth_peak)
        == 5_000_000
    )
    text = stitched_master([first, second], ["720p"], uri_for=lambda n: f"/v/scn/{n}")
    assert text.splitlines()[3:] == [
        "#EXT-X-STREAM-INF:BANDWIDTH=6153847,AVERAGE-BANDWIDTH=3030304,"
        'CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=30.000',
        "/v/scn/720p.m3u8",
    ]


def small(segment_id: str, durations: tuple[float, ...], sizes: tuple[int, ...]) -> Clip:
    """A 640x480 source: its one rendition, the lowest rung's, at its own size and level
    (workers/media/encoding.py `clip_ladder`)."""
    r = dataclasses.replace(
        rendition("720p", durations, sizes), width=640, height=480, codecs="avc1.4d401e,mp4a.40.2"
    )
    return Clip(segment_id, sum(durations), {"720p": r})


def test_a_variant_plays_the_largest_real_rendition_of_a_clip_without_it() -> None:
    """Behaviour change (issue 26): a clip without a profile no longer takes the
    variant away from the scene; it plays its largest real rendition there."""
    scene = [*SCENE, small("seg_z", (4.0,), (250_000,))]
    assert scene_profiles(scene) == ["720p", "1080p"]
    text = stitched_master(scene, ["720p", "1080p"], uri_for=relative)
    lines = text.splitlines()
    # 1080p: seg_a..c's 1080p (twice the 720p sizes: peak 4 Mb/s) then seg_z's 640x480;
    # average (2 * 3,962,500 + 250,000) B * 8 / 24 s; CODECS covers both (High, the
    # highest level), RESOLUTION the largest frame
    assert lines[5:] == [
        "#EXT-X-STREAM-INF:BANDWIDTH=4000000,AVERAGE-BANDWIDTH=2725000,"
        'CODECS="avc1.640028,mp4a.40.2",RESOLUTION=1920x1080,FRAME-RATE=30.000',
        "1080p.m3u8",
    ]
    assert 'CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720' in lines[3]
    target = scene_target_duration(scene)
    media = stitched_media(scene, "1080p", target=target, uri_for=relative)
    assert media.splitlines()[-4:] == [
        "#EXT-X-DISCONTINUITY",
        "#EXTINF:4.000,",
        "seg_z/720p_0001.ts",
        "#EXT-X-ENDLIST",
    ]
    # every variant has the same EXTINF list and discontinuities (RFC 8216 §6.2.4)
    shape = [ln for ln in media.splitlines() if not ln.startswith("seg_")]
    other = stitched_media(scene, "720p", target=target, uri_for=relative)
    assert shape == [ln for ln in other.splitlines() if not ln.startswith("seg_")]


def test_a_lone_small_clip_has_the_variant_of_its_own_rung_only() -> None:
    scene = [small("seg_z", (4.0,), (250_000,))]
    assert scene_profiles(scene) == ["720p"]
    text = stitched_master(scene, ["720p", "1080p"], uri_for=relative)
    assert "1080p.m3u8" not in text
    assert 'CODECS="avc1.4d401e,mp4a.40.2",RESOLUTION=640x480' in text
    with pytest.raises(ValueError, match="present in any clip"):
        stitched_master(SCENE, ["2160p"], uri_for=relative)


def test_variant_rendition_takes_the_largest_below_else_the_lowest() -> None:
    a, b = SCENE[0], small("seg_z", (4.0,), (250_000,))
    order = ["360p", "720p", "1080p"]
    assert variant_rendition(a, "1080p", order) is a.renditions["1080p"]
    assert variant_rendition(b, "1080p", order) is b.renditions["720p"]
    # a clip made with another ladder: nothing at or below 360p, so its lowest
    assert variant_rendition(a, "360p", order) is a.renditions["720p"]


def test_profiles_rank_by_their_largest_frame() -> None:
    """A scene whose only 720p renditions were 640x480 still puts 720p below 1080p
    once a 1080p clip arrives; then by name on ties."""
    big = clip("seg_a", (4.0,), (750_000,))
    assert scene_profiles([small("seg_z", (4.0,), (1,)), big]) == ["720p", "1080p"]


def test_codecs_of_a_variant_cover_every_segment() -> None:
    # Clips disagree on CODECS: the most capable profile (High > Main > Baseline),
    # its first entry, at the highest level of them all; frame rate is the maximum.
    def c(seg: str, codecs: str, fps: float) -> Clip:
        return Clip(
            seg,
            4.0,
            {"1080p": rendition("1080p", (4.0,), (1_000_000,), codecs=codecs, frame_rate=fps)},
        )

    mixed = [
        c("seg_1", "avc1.640028,mp4a.40.2", 30.0),
        c("seg_2", "avc1.64002a,mp4a.40.2", 60.0),
        c("seg_3", "avc1.4d002a,mp4a.40.2", 29.97),
    ]
    line = stitched_master(mixed, ["1080p"], uri_for=relative).splitlines()[3]
    assert 'CODECS="avc1.64002a,mp4a.40.2"' in line
    assert line.endswith("FRAME-RATE=60.000")
    # Main at a higher level than the High entry: High, at Main's level
    mixed = [c("seg_1", "avc1.640028,mp4a.40.2", 30.0), c("seg_2", "avc1.4d4032,mp4a.40.2", 30.0)]
    line = stitched_master(mixed, ["1080p"], uri_for=relative).splitlines()[3]
    assert 'CODECS="avc1.640032,mp4a.40.2"' in line
    # not avc1 at all: the first clip's string
    mixed = [c("seg_1", "hvc1.1.6.L93.B0", 30.0), c("seg_2", "hvc1.2.4.L120.B0", 30.0)]
    line = stitched_master(mixed, ["1080p"], uri_for=relative).splitlines()[3]
    assert 'CODECS="hvc1.1.6.L93.B0"' in line


# ---------------------------------------------------------------------- storyboard


def test_stitched_storyboard_vtt_offsets_past_one_hour() -> None:
    hour = Clip(
        "seg_long",
        3600.02,  # probed duration; the timeline uses the EXTINF sum, 3600.000 s
        {"720p": rendition("720p", (4.0,) * 900, (1,) * 900)},
        storyboard=(StoryboardCue(0.0, 10.0, 0, 0, 160, 90),),
    )
    short = Clip(
        "seg_next",
        7.5,
        {"720p": rendition("720p", (4.0, 3.5), (1, 1))},
        storyboard=(
            StoryboardCue(0.0, 5.0, 0, 0, 160, 90),
            StoryboardCue(5.0, 10.0, 160, 0, 160, 90),  # clipped at 7.5 s
            StoryboardCue(10.0, 15.0, 320, 0, 160, 90, sheet="storyboard_2.jpg"),  # dropped
        ),
    )
    vtt = stitched_storyboard_vtt([hour, short], uri_for=lambda n: f"https://cdn/v/s/{n}")
    assert vtt == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:10.000\n"
        "https://cdn/v/s/seg_long/storyboard.jpg#xywh=0,0,160,90\n"
        "\n"
        "01:00:00.000 --> 01:00:05.000\n"
        "https://cdn/v/s/seg_next/storyboard.jpg#xywh=0,0,160,90\n"
        "\n"
        "01:00:05.000 --> 01:00:07.500\n"
        "https://cdn/v/s/seg_next/storyboard.jpg#xywh=160,0,160,90\n"
    )


def test_stitched_storyboard_vtt_empty() -> None:
    assert stitched_storyboard_vtt([], uri_for=relative) == "WEBVTT\n"
    assert stitched_storyboard_vtt(SCENE, uri_for=relative) == "WEBVTT\n"


def test_vtt_time_of_milliseconds() -> None:
    assert vtt_time(0) == "00:00:00.000"
    assert vtt_time(10_000) == "00:00:10.000"
    assert vtt_time(3_725_001) == "01:02:05.001"
    assert vtt_time(59_999) == "00:00:59.999"
    assert vtt_time(100 * 3_600_000) == "100:00:00.000"


# ----------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("durations", "sizes", "target", "expected"),
    [
        # Windows 2..6 s hold one 4 s segment each: the 2 Mb/s middle one wins.
        ((4.0, 4.0, 4.0), (500_000, 1_000_000, 500_000), 4, 2_000_000),
        # The 1 s segment (4 Mb/s) is too short alone; 4+1 s gives 8 Mbit / 5 s.
        ((4.0, 1.0), (500_000, 500_000), 4, 1_600_000),
        # Lower bound inclusive: 2.0 s alone counts (1 Mb/s); 1.9 s (4 Mb/s) does not;
        # 2.0+1.9 s = 9.6 Mbit / 3.9 s = 2,461,538.46 -> 2,461,539.
        ((2.0, 1.9), (250_000, 950_000), 4, 2_461_539),
        # Upper bound inclusive: 1+4+1 = 6.0 s = 1.5 x 4 counts: 16 Mbit / 6 s.
        ((1.0, 4.0, 1.0), (1_000_000, 0, 1_000_000), 4, 2_666_667),
        # ... and 6.001 s does not: best is 1+4 s, 8 Mbit / 5 s.
        ((1.0, 4.0, 1.001), (1_000_000, 0, 1_000_000), 4, 1_600_000),
        # No window qualifies (0.8 s < 0.5 x 2 s): the single-segment rate.
        ((0.8,), (100_000,), 2, 1_000_000),
        # 0.4+0.5 = 0.9 s < 1 s: largest single rate, 0.8 Mbit / 0.5 s.
        ((0.4, 0.5), (50_000, 100_000), 2, 1_600_000),
        # Target 1: 0.8 s is inside 0.5..1.5 s, so it is a window itself.
        ((0.8,), (100_000,), 1, 1_000_000),
        # Rounded up: 8 bits / 3 s.
        ((3.0,), (1,), 4, 3),
    ],
)
def test_peak_bandwidth_by_hand(
    durations: tuple[float, ...], sizes: tuple[int, ...], target: int, expected: int
) -> None:
    assert peak_bandwidth(durations, sizes, target) == expected


def test_average_bandwidth_by_hand() -> None:
    # 15,280,000 bits / 10.5 s = 1,455,238.10 -> 1,455,239
    assert average_bandwidth((4.0, 4.0, 2.5), (750_000, 760_000, 400_000)) == 1_455_239
    assert average_bandwidth((2.0,), (250_000,)) == 1_000_000


def test_bandwidth_input_errors() -> None:
    with pytest.raises(ValueError, match="2 durations but 1 sizes"):
        peak_bandwidth((4.0, 4.0), (1,), 4)
    with pytest.raises(ValueError, match="no media segments"):
        average_bandwidth((), ())
    with pytest.raises(ValueError, match="must be >= 0.0005"):
        peak_bandwidth((0.0002,), (1,), 1)
    with pytest.raises(ValueError, match="target duration 0"):
        peak_bandwidth((1.0,), (1,), 0)


@pytest.mark.parametrize(
    ("durations_lists", "expected"),
    [
        ([[4.000]], 4),
        ([[4.000000]], 4),
        ([[4.0004]], 4),  # prints as 4.000
        ([[3.9999999]], 4),
        ([[4.001]], 5),
        ([[4.0006]], 5),  # prints as 4.001
        ([[2.0, 4.0], [4.001]], 5),  # across variants
        ([[0.2]], 1),
        ([[]], 1),
        ([], 1),
    ],
)
def test_target_duration_float_edges(durations_lists: list[list[float]], expected: int) -> None:
    assert target_duration(durations_lists) == expected


# --------------------------------------------------------- per-clip storyboard


def test_clip_storyboard_vtt_is_the_stitched_one_of_a_single_clip() -> None:
    clip = dataclasses.replace(
        SCENE[0],
        storyboard=(
            StoryboardCue(0.0, 5.0, 0, 0, 160, 90),
            StoryboardCue(5.0, 12.0, 160, 0, 160, 90),  # clipped at 10 s
        ),
    )
    vtt = clip_storyboard_vtt(clip)
    assert vtt == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:05.000\nstoryboard.jpg#xywh=0,0,160,90\n\n"
        "00:00:05.000 --> 00:00:10.000\nstoryboard.jpg#xywh=160,0,160,90\n"
    )
    assert vtt == stitched_storyboard_vtt(
        [clip], uri_for=lambda rel: rel.removeprefix(f"{clip.segment_id}/")
    )
    marked = clip_storyboard_vtt(clip, uri_for=lambda rel: "x/" + rel)
    assert marked.count("x/") == len(clip.storyboard) > 0


# -------------------------------------------------------------------- data checks


def test_data_validation() -> None:
    with pytest.raises(ValueError, match="not a plain name"):
        Clip("../etc", 1.0, {})
    with pytest.raises(ValueError, match="filed under profile"):
        Clip("seg_a", 1.0, {"1080p": rendition("720p", (1.0,), (1,))})
    with pytest.raises(ValueError, match="invalid CODECS"):
        rendition("720p", (1.0,), (1,), codecs='avc1"')
    with pytest.raises(ValueError, match="empty or negative"):
        StoryboardCue(5.0, 5.0, 0, 0, 160, 90)
    with pytest.raises(ValueError, match="plain file name"):
        StoryboardCue(0.0, 5.0, 0, 0, 160, 90, sheet="../x.jpg")
    renditions = {"720p": rendition("720p", (1.0,), (1,))}
    c = Clip("seg_a", 1.0, renditions)
    renditions.clear()
    assert list(c.renditions) == ["720p"]  # the clip kept its own read-only copy
    with pytest.raises(TypeError):
        c.renditions["1080p"] = c.renditions["720p"]  # type: ignore[index]
