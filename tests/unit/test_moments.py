"""A thumbnail at any moment, pure parts (origin/playback/moments.py): the query checked, the
moment placed on the scene's or the clip's timeline (clip, rendition, `.ts`, frame),
the frame-grab command and the names it is kept under."""

from __future__ import annotations

from collections import Counter

import pytest

from core import layout
from origin.playback.moments import (
    BadMoment,
    OutsideTimeline,
    Still,
    grab_command,
    locate,
    locate_in_clip,
    parse_request,
    pick_rendition,
)
from tests.helpers.timeline import timeline_clip


def parse(**query: str) -> tuple[int, int]:
    return parse_request(query, Counter(query.keys()))


@pytest.mark.parametrize(
    "query,expected",
    [
        ({"time": "0"}, (0, 640)),
        ({"time": "12.5"}, (12_500_000, 640)),
        ({"time": "12.000001", "width": "160"}, (12_000_001, 160)),
        ({"time": "0009.25", "width": "1280"}, (9_250_000, 1280)),
        ({"time": "3", "width": "320", "exp": "1", "sig": "x"}, (3_000_000, 320)),
    ],
)
def test_parse(query: dict[str, str], expected: tuple[int, int]) -> None:
    assert parse(**query) == expected


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"width": "640"},
        {"time": ""},
        {"time": "-1"},
        {"time": "1e3"},
        {"time": "nan"},
        {"time": "inf"},
        {"time": "0x10"},
        {"time": "1,5"},
        {"time": "1.2345678"},  # below a microsecond
        {"time": "12345678"},  # over 7 digits of seconds
        {"time": " 1"},
        {"time": "1.5", "width": "641"},
        {"time": "1.5", "width": "0640"},
        {"time": "1.5", "width": ""},
    ],
)
def test_parse_refuses(query: dict[str, str]) -> None:
    with pytest.raises(BadMoment):
        parse(**query)


def test_parse_refuses_repeats() -> None:
    with pytest.raises(BadMoment, match="more than once"):
        parse_request({"time": "1"}, {"time": 2})
    with pytest.raises(BadMoment, match="more than once"):
        parse_request({"time": "1", "width": "160"}, {"time": 1, "width": 2})


SCENE = [
    timeline_clip("seg_a", [4.0, 4.0, 2.0]),  # 0 .. 10 s, frames 0..299
    timeline_clip("seg_b", [3.0]),  # 10 .. 13 s
    timeline_clip("seg_c", [4.004, 4.004, 0.934], frame_rate=29.97),  # 13 .. 21.942 s
]


@pytest.mark.parametrize(
    "seconds,segment,number,frame,in_segment",
    [
        ("0", "seg_a", 1, 0, 0),
        ("0.0333", "seg_a", 1, 0, 0),  # frame 1 starts at 0.03333...
        ("0.033334", "seg_a", 1, 1, 1),
        ("3.999", "seg_a", 1, 119, 119),
        ("4", "seg_a", 2, 120, 0),  # a segment's first frame: its IDR
        ("9.99", "seg_a", 3, 299, 59),
        ("10", "seg_b", 1, 0, 0),  # the next clip, on the stitched timeline
        ("12.999999", "seg_b", 1, 89, 89),
        ("13", "seg_c", 1, 0, 0),
        ("17.004", "seg_c", 2, 120, 0),  # 4.004 s in at 30000/1001: frame 120 exactly
        ("17.003999", "seg_c", 1, 119, 119),
        ("21.941", "seg_c", 3, 267, 27),  # the last frame (8.942 s = 268 frames)
    ],
)
def test_locate(seconds: str, segment: str, number: int, frame: int, in_segment: int) -> None:
    micros, _ = parse(time=seconds)
    m = locate(SCENE, micros, 640)
    assert (m.segment_id, m.segment_number, m.frame, m.frame_in_segment) == (
        segment,
        number,
        frame,
        in_segment,
    )
    assert (m.profile, m.width, m.source_width) == ("720p", 640, 1280)


@pytest.mark.parametrize("seconds", ["21.942", "22", "1000"])
def test_outside_the_scene(seconds: str) -> None:
    with pytest.raises(OutsideTimeline):
        locate(SCENE, parse(time=seconds)[0], 640)
    with pytest.raises(OutsideTimeline):
        locate([], 0, 640)


def test_locate_in_one_clip() -> None:
    m = locate_in_clip(SCENE[1], 1_500_000, 1280)
    assert (m.segment_id, m.frame, m.width, m.source_width) == ("seg_b", 45, 1280, 1280)
    with pytest.raises(OutsideTimeline):
        locate_in_clip(SCENE[1], 3_000_000, 640)


def test_pick_rendition() -> None:
    both = SCENE[0]
    assert [pick_rendition(both, w).profile for w in (160, 320, 640, 1280)] == ["720p"] * 4
    assert pick_rendition(both, 1281).profile == "1080p"
    only_720 = timeline_clip("seg_d", [2.0], profiles=["720p"])
    assert pick_rendition(only_720, 1920).profile == "720p"  # the widest there is


def test_moment_names_and_grab_command() -> None:
    m = Still("seg_a", "720p", 2, 130, 10, 320, 1280)
    assert m.media_name == "720p_0002.ts"
    assert m.still_name == "720p_f000130_w320_j.jpg"
    assert m.etag == '"seg_a-720p-130-320-j"'
    assert (
        layout.still_key("scn_x", "seg_a", m.still_name)
        == "scn_x/seg_a/stills/720p_f000130_w320_j.jpg"
    )
    # (a still stored before JPEG's colours, without `_j`, is not one of ours any more)
    for bad in (
        "../720p.jpg",
        "720p_f1_w320_j.jpg",
        "x/720p_f000001_w320_j.jpg",
        "720p_f000130_w320.jpg",
    ):
        with pytest.raises(ValueError):
            layout.still_key("scn_x", "seg_a", bad)
    assert grab_command("/store/v/scn_x/seg_a/720p_0002.ts", m) == [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mpegts",
        "-f",
        "mpegts",
        "-i",
        "file:/store/v/scn_x/seg_a/720p_0002.ts",
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-vf",
        "select='eq(n,10)',scale=320:-2:flags=bicubic:in_color_matrix=bt709"
        ":out_color_matrix=bt601:in_range=tv:out_range=pc,format=yuvj420p",
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
    full = Still("seg_a", "720p", 1, 0, 0, 1280, 1280)
    # at its own width: no resize, the JPEG's colours all the same
    assert "select='eq(n,0)',scale=in_color_matrix=bt709:" in ",".join(grab_command("/s.ts", full))
