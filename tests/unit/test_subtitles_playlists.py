"""The subtitles rendition's text (core/playlists.py, core/captions.py): the stitched
master names one subtitles rendition per language and every variant names its group;
the subtitles playlist has the video's segments, durations and discontinuities, an
empty segment (revision 0) for a clip without that language or without a recorded
first PTS; a WebVTT segment holds the cues shown during it, mapped onto its clip's
MPEG-TS clock."""

from __future__ import annotations

from core import captions, layout, playlists
from core.captions import Cue
from core.playlists import Clip, Rendition


def rendition(
    durations: tuple[float, ...], first_pts: int | None, generation: int = 1
) -> Rendition:
    sizes = [100_000] * len(durations)
    codecs = "avc1.64001f,mp4a.40.2"
    return Rendition(
        "360p", 640, 360, 30.0, codecs, durations, sizes, 1_000_000, 800_000, generation, first_pts
    )


A = Clip("seg_aaaaaaaaaaaa", 6.0, {"360p": rendition((4.0, 2.0), 126_000)}, captions={"en": 7})
B = Clip("seg_bbbbbbbbbbbb", 3.0, {"360p": rendition((3.0,), 132_000)})
C = Clip(
    "seg_cccccccccccc",
    9.5,
    {"360p": rendition((4.0, 4.0, 1.5), 129_600, generation=2)},
    captions={"en": 9, "pt-BR": 8},
)


def test_stitched_master_names_the_subtitles_group() -> None:
    assert playlists.stitched_master([A, B, C], ["360p"], uri_for=str) == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="en",LANGUAGE="en",DEFAULT=NO,'
        'AUTOSELECT=YES,FORCED=NO,URI="subs_en.m3u8"\n'
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="pt-BR",LANGUAGE="pt-BR",DEFAULT=NO,'
        'AUTOSELECT=YES,FORCED=NO,URI="subs_pt-BR.m3u8"\n'
        "#EXT-X-STREAM-INF:BANDWIDTH=400000,AVERAGE-BANDWIDTH=259460,"
        'CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=30.000,SUBTITLES="subs"\n'
        "360p.m3u8\n"
    )
    # no captions anywhere: no group at all
    assert "SUBTITLES" not in playlists.stitched_master([B], ["360p"], uri_for=str)


def test_stitched_subtitles_follow_the_video_segments() -> None:
    text = playlists.stitched_subtitles([A, B, C], "en", target=4, uri_for=str)
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:4\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:4.000,\n"
        "seg_aaaaaaaaaaaa/subs_en_g1_r7_0001.vtt\n"
        "#EXTINF:2.000,\n"
        "seg_aaaaaaaaaaaa/subs_en_g1_r7_0002.vtt\n"
        "#EXT-X-DISCONTINUITY\n"
        "#EXTINF:3.000,\n"
        "seg_bbbbbbbbbbbb/subs_en_g1_r0_0001.vtt\n"
        "#EXT-X-DISCONTINUITY\n"
        "#EXTINF:4.000,\n"
        "seg_cccccccccccc/subs_en_g2_r9_0001.vtt\n"
        "#EXTINF:4.000,\n"
        "seg_cccccccccccc/subs_en_g2_r9_0002.vtt\n"
        "#EXTINF:1.500,\n"
        "seg_cccccccccccc/subs_en_g2_r9_0003.vtt\n"
        "#EXT-X-ENDLIST\n"
    )
    video = playlists.stitched_media([A, B, C], "360p", target=4, uri_for=str)
    shape = [line for line in video.splitlines() if line.startswith("#")]
    assert shape == [line for line in text.splitlines() if line.startswith("#")]


def test_a_clip_without_first_pts_gets_empty_segments() -> None:
    old = Clip("seg_dddddddddddd", 2.0, {"360p": rendition((2.0,), None)}, captions={"en": 3})
    assert old.subtitles_revision("en") == 0
    text = playlists.stitched_subtitles([old, A], "en", target=4, uri_for=str)
    assert "seg_dddddddddddd/subs_en_g1_r0_0001.vtt" in text


def test_clip_subtitles_and_master() -> None:
    assert playlists.clip_subtitles(C, "pt-BR", uri_for=lambda u: u + "?t=1") == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:4\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:4.000,\n"
        "subs_pt-BR_g2_r8_0001.vtt?t=1\n"
        "#EXTINF:4.000,\n"
        "subs_pt-BR_g2_r8_0002.vtt?t=1\n"
        "#EXTINF:1.500,\n"
        "subs_pt-BR_g2_r8_0003.vtt?t=1\n"
        "#EXT-X-ENDLIST\n"
    )
    master = playlists.clip_master_playlist(list(A.renditions.values()), languages=["en"])
    assert master.splitlines()[3:] == [
        '#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="en",LANGUAGE="en",DEFAULT=NO,'
        'AUTOSELECT=YES,FORCED=NO,URI="subs_en.m3u8"',
        "#EXT-X-STREAM-INF:BANDWIDTH=1000000,AVERAGE-BANDWIDTH=800000,"
        'CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=30.000,SUBTITLES="subs"',
        "360p.m3u8",
    ]
    assert playlists.subtitles_bounds_ms(C) == [0, 4000, 8000, 9500]


def test_webvtt_segments_hold_the_cues_shown_during_them() -> None:
    cues = captions.clamp([Cue(500, 1500, "a"), Cue(3500, 4500, "b"), Cue(5000, 7000, "c")], 6000)
    assert captions.segment_vtt(cues, 0, 4000, 126_000) == (
        "WEBVTT\n"
        "X-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n"
        "\n"
        "00:00:00.500 --> 00:00:01.500\na\n\n"
        "00:00:03.500 --> 00:00:04.500\nb\n\n"
    )
    assert captions.segment_vtt(cues, 4000, 6000, 126_000) == (
        "WEBVTT\n"
        "X-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n"
        "\n"
        "00:00:03.500 --> 00:00:04.500\nb\n\n"
        "00:00:05.000 --> 00:00:06.000\nc\n\n"
    )
    assert captions.segment_vtt(cues, 6000, 8000, 1) == (
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:1,LOCAL:00:00:00.000\n\n"
    )


def test_subtitles_names() -> None:
    segment = layout.SubtitlesSegment("pt-BR", 2, 8, 3)
    name = layout.subtitles_segment_name(segment)
    assert name == "subs_pt-BR_g2_r8_0003.vtt"
    assert layout.subtitles_segment(name) == segment
    assert layout.is_segment_file(name) and layout.is_segment_file("subs_pt-BR.m3u8")
    assert layout.subtitles_playlist_language("subs_pt-BR.m3u8") == "pt-BR"
    for bad in ("subs_.m3u8", "subs_en.m3u8.bak", "subs_en/x.m3u8", "subs_e n.m3u8"):
        assert layout.subtitles_playlist_language(bad) is None
        assert not layout.is_segment_file(bad)
    assert layout.subtitles_segment("subs_en_g1_r1_1.vtt") is None
