"""What an export is, without I/O: requests checked, moments rounded to frames, the plan
of copied segments and re-encoded cuts, dedupe keys, estimates, the manifest and the
download's name, the captions sidecars."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from core import exportplan
from core.catalog import Scene, SceneClip, SceneView, User
from core.exportplan import (
    BadRequest,
    Cut,
    ExportRange,
    Fit,
    Request,
    SourceClip,
    Tail,
    content_disposition,
    download_name,
    h264_level,
    parse_request,
    plan_export,
    round_moment,
)
from core.exports import source_clips
from core.playlists import Clip, Rendition
from core.settings import DEFAULT_LADDER


def clip(
    n: int,
    fps: float,
    durations: list[float],
    codecs: str = "avc1.4d401f,mp4a.40.2",
    *,
    size: tuple[int, int] = (1280, 720),
    fit: bool = False,
):
    rendition = Rendition(
        profile="720p",
        width=size[0],
        height=size[1],
        frame_rate=fps,
        codecs=codecs,
        durations=tuple(durations),
        sizes=tuple(1000 * (i + 1) for i in range(len(durations))),
        bandwidth_peak=2,
        bandwidth_average=1,
    )
    return SourceClip(f"seg_{n:016d}", n, "usr_0123456789abcdef", rendition, fit)


# clip 1: 24 fps, 4 s + 1 s; clip 2: 30 fps, 4 s + 4 s + 2 s; clip 3: 50 fps, 4 s
SCENE = [
    clip(1, 24.0, [4.0, 1.0]),
    clip(2, 30.0, [4.0, 4.0, 2.0]),
    clip(3, 50.0, [4.0], "avc1.4d4020,mp4a.40.2"),
]


@pytest.mark.parametrize(
    "body,expected",
    [
        ({"quality": "720p"}, Request("720p")),
        ({"quality": "1080p", "start": 0, "end": 1}, Request("1080p", 0.0, 1.0)),
        ({"quality": "720p", "start": 2.5, "end": 10}, Request("720p", 2.5, 10.0)),
    ],
)
def test_parse_request(body, expected):
    assert parse_request(body) == expected


@pytest.mark.parametrize(
    "body,reason",
    [
        ({}, "quality"),
        ({"quality": "4k"}, "quality"),
        ({"quality": None}, "quality"),
        ({"quality": "720p", "start": 1}, "both"),
        ({"quality": "720p", "end": 1}, "both"),
        ({"quality": "720p", "start": "1", "end": 3}, "number"),
        ({"quality": "720p", "start": False, "end": 3}, "number"),
        ({"quality": "720p", "start": float("nan"), "end": 3}, "finite"),
        ({"quality": "720p", "start": 0, "end": float("inf")}, "finite"),
        ({"quality": "720p", "start": -0.5, "end": 3}, ">= 0"),
        ({"quality": "720p", "start": 3, "end": 3}, "after"),
        ({"quality": "720p", "start": 3, "end": 3.999}, "at least 1 s"),
        ({"quality": "720p", "extra": 1}, "unknown field"),
    ],
)
def test_parse_request_refuses(body, reason):
    with pytest.raises(BadRequest, match=reason):
        parse_request(body)


def test_a_moment_of_start_plus_one_second_is_one_second():
    # (1.304618710695823 + 1.0) - 1.304618710695823 == 0.9999999999999998 in floats
    start = 1.304618710695823
    assert parse_request({"quality": "720p", "start": start, "end": start + 1.0}) == Request(
        "720p", start, start + 1.0
    )


def test_h264_level():
    assert h264_level("avc1.4d401f,mp4a.40.2") == 31
    assert h264_level("avc1.64002a") == 42
    with pytest.raises(ValueError):
        h264_level("hvc1.1.6.L93.B0")


@pytest.mark.parametrize(
    "start,end,expected",
    [
        (0, 5, (0.0, 5.0)),
        (2.3, 6.7, (55 / 24, 5 + 51 / 30)),  # mid clip 1 to mid clip 2
        (4.99, 6.0, (5.0, 6.0)),  # rounds to clip 1's end: clip 2's first frame
        (1.0, 5.005, (1.0, 5.0)),  # rounds to clip 2's frame 0: clip 1's end
        (14.5, 19.0, (14.5, 19.0)),  # up to the scene's end
        (0.01, 18.999, (0.0, 19.0)),
    ],
)
def test_round_moment(start, end, expected):
    m = round_moment(SCENE, start, end)
    assert (m.start, m.end) == pytest.approx(expected, abs=1e-6)


def test_round_moment_refuses_past_the_end():
    with pytest.raises(BadRequest, match="past the end"):
        round_moment(SCENE, 1, 19.5)
    with pytest.raises(BadRequest, match="past the end"):
        round_moment(SCENE, 19, 20)


def parts(plan):
    return [
        (p.sequence, p.files, None if p.cut is None else (p.cut.first, p.cut.end))
        for p in plan.parts
    ]


def test_full_plan_copies_every_segment_clip_by_clip():
    plan = plan_export(SCENE, "720p")
    assert parts(plan) == [
        (1, ("720p_0001.ts", "720p_0002.ts"), None),
        (2, ("720p_0001.ts", "720p_0002.ts", "720p_0003.ts"), None),
        (3, ("720p_0001.ts",), None),
    ]
    assert plan.duration == 19.0 and plan.size == 3000 + 6000 + 1000
    assert plan.level == 32 and plan.max_fps == 50 and plan.kind == "full"
    assert plan.file_name == "full_720p.mp4" and plan.clips == tuple(SCENE)


def test_moment_plan_reencodes_only_the_gops_its_ends_cut():
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 2.3, 6.7))
    assert parts(plan) == [
        (1, ("720p_0001.ts",), (55, 96)),
        (1, ("720p_0002.ts",), None),
        (2, ("720p_0001.ts",), (0, 51)),
    ]
    assert plan.duration == pytest.approx(41 / 24 + 1.0 + 51 / 30)
    assert plan.clips == tuple(SCENE[:2]) and plan.level == 31 and plan.max_fps == 30
    assert plan.kind == "moment" and plan.file_name == "moment_720p.mp4"


def test_moment_on_keyframes_copies_everything():
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 5.0, 13.0))
    assert parts(plan) == [(2, ("720p_0001.ts", "720p_0002.ts"), None)]


def test_moment_inside_one_gop_is_one_cut():
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 5.5, 7.0))
    assert parts(plan) == [(2, ("720p_0001.ts",), (15, 60))]
    assert plan.parts[0].duration == pytest.approx(1.5)


def test_moment_across_three_clips():
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 4.5, 16.0))
    assert parts(plan) == [
        (1, ("720p_0002.ts",), (12, 24)),
        (2, ("720p_0001.ts", "720p_0002.ts", "720p_0003.ts"), None),
        (3, ("720p_0001.ts",), (0, 50)),
    ]


def test_plan_needs_clips_and_limits_length():
    with pytest.raises(BadRequest):
        plan_export([], "720p")
    day = clip(1, 25.0, [4.0] * 22_000)
    with pytest.raises(BadRequest, match="hours"):
        plan_export([day], "720p")


def test_dedupe_keys():
    key = exportplan.dedupe_key
    assert key("scn_a", "720p", 7, None) == "export:scn_a:7:720p"
    assert (
        key("scn_a", "720p", 7, ExportRange(55 / 24, 6.7)) == "export:scn_a:7:720p:2291667-6700000"
    )
    assert key("scn_a", "720p", 8, None) != key("scn_a", "720p", 7, None)
    assert key("scn_a", "1080p", 7, None) != key("scn_a", "720p", 7, None)


@pytest.mark.parametrize(
    "duration,speed,seconds", [(600, 50, 12), (600, 7, 86), (0.5, 30, 1), (10, 0, 10_000)]
)
def test_estimate_seconds(duration, speed, seconds):
    assert exportplan.estimate_seconds(duration, speed) == seconds


def test_estimate_seconds_counts_the_re_encoded_seconds_at_their_own_speed():
    fit = exportplan.FIT_SPEED
    # 60 s copied at 30 s/s, 20 s re-encoded into the export's frame
    assert exportplan.estimate_seconds(80, 30, refit=20) == math.ceil(60 / 30 + 20 / fit)
    assert exportplan.estimate_seconds(20, 30, refit=20) == math.ceil(20 / fit)
    assert exportplan.estimate_seconds(80, 30, refit=20) > exportplan.estimate_seconds(80, 30)
    # into 1080p: 2.25x the pixels of 720p, 2.25x the time
    at_1080 = exportplan.estimate_seconds(20, 30, refit=20, frame=(1920, 1080))
    assert at_1080 == math.ceil(20 / (fit / 2.25))


def test_manifest():
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 2.3, 6.7))
    doc = exportplan.manifest(
        scene_id="scn_0123456789abcdef",
        export_id="exp_0123456789abcdef",
        version=4,
        plan=plan,
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        duration=4.4,
        size=123,
    )
    assert (
        doc["sceneVersion"] == 4 and doc["quality"] == "720p" and doc["file"] == "moment_720p.mp4"
    )
    assert doc["createdAt"] == "2026-01-02T03:04:05Z"
    assert (doc["start"], doc["end"]) == (round(55 / 24, 6), 6.7)
    assert [(s["sequence"], s["duration"], s["startTime"]) for s in doc["segments"]] == [
        (1, 5.0, 0.0),
        (2, 10.0, round(41 / 24 + 1, 3)),
    ]
    assert [p["mode"] for p in doc["parts"]] == ["reencode", "copy", "reencode"]
    assert doc["parts"][0]["frames"] == [55, 96] and "frames" not in doc["parts"][1]


@pytest.mark.parametrize(
    "title,moment,name",
    [
        ("The Signal", None, "The Signal.mp4"),
        ('a/b\\c"d:e*f?g<h>i|j;k', None, "a b c d e f g h i j k.mp4"),
        ("  ..dots..  ", None, "dots.mp4"),
        ("\x00\x1b[31m", None, "[31m.mp4"),
        ("\u202etxt.exe", None, "txt.exe.mp4"),  # bidi override dropped
        ("", None, "scene.mp4"),
        ("x" * 300, None, "x" * 120 + ".mp4"),
        ("Night", ExportRange(65.2, 130.0), "Night (1m05s-2m10s).mp4"),
    ],
)
def test_download_name(title, moment, name):
    assert download_name(title, moment) == name


def test_content_disposition():
    assert content_disposition("The Signal.mp4") == 'attachment; filename="The Signal.mp4"'
    value = content_disposition("Ünïcode ☂.mp4")
    assert value == (
        "attachment; filename=\"Unicode.mp4\"; filename*=UTF-8''%C3%9Cn%C3%AFcode%20%E2%98%82.mp4"
    )
    assert content_disposition("☂.mp4").startswith('attachment; filename="scene.mp4"; filename*=')


def test_cut_parts_are_single_segments():
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 0.5, 1.5))
    (only,) = plan.parts
    assert only.cut == Cut(12, 36) and only.files == ("720p_0001.ts",)
    assert only.tail == Tail("720p_0002.ts", 2000) and only.size == 1000 + 2000


def tails(plan):
    return [(p.sequence, p.tail.file if p.tail else None) for p in plan.parts]


def test_a_part_ending_before_its_clip_reads_the_next_segment_for_its_audio():
    # whole clips end with their clip's last segment: nothing more to read
    assert tails(plan_export(SCENE, "720p")) == [(1, None), (2, None), (3, None)]
    # a cut or a run of copies ending inside its clip: the segment after it
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 2.3, 6.7))
    assert tails(plan) == [(1, "720p_0002.ts"), (1, None), (2, "720p_0002.ts")]
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 5.0, 13.0))
    assert tails(plan) == [(2, "720p_0003.ts")]
    assert plan.size == 1000 + 2000 + 3000  # what is read: the copies and their tail
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 4.5, 16.0))
    assert tails(plan) == [(1, None), (2, None), (3, None)]


# ------------------------------------------- clips without the export's frame (issue 26)


def scene_view(*renditions: dict[str, tuple[int, int]]) -> SceneView:
    """A scene whose clip n has renditions {profile: frame}, 24 fps, 4 s + 1 s."""
    user = User("usr_0123456789abcdef", "ada")
    clips = []
    for n, frames in enumerate(renditions, 1):
        rends = {
            profile: Rendition(
                profile=profile,
                width=w,
                height=h,
                frame_rate=24.0,
                codecs="avc1.4d401f,mp4a.40.2",
                durations=(4.0, 1.0),
                sizes=(1000, 500),
                bandwidth_peak=2,
                bandwidth_average=1,
            )
            for profile, (w, h) in frames.items()
        }
        clips.append(SceneClip(Clip(f"seg_{n:016d}", 5.0, rends), n, user))
    scene = Scene("scn_0123456789abcdef", "t", 3, datetime(2026, 1, 1, tzinfo=UTC))
    return SceneView(scene, tuple(clips))


FULL = {"720p": (1280, 720), "1080p": (1920, 1080)}


def test_source_clips_read_the_stitched_variants_rendition_and_fit_it():
    view = scene_view(
        FULL,
        {"720p": (640, 480)},  # a source smaller than every rung: its own size
        {"720p": (1280, 720)},  # a 1080p source in its first stage: the lowest rung
    )
    got = source_clips(view, "1080p", DEFAULT_LADDER)
    assert [(c.rendition.profile, c.rendition.width, c.fit) for c in got] == [
        ("1080p", 1920, False),
        ("720p", 640, True),
        ("720p", 1280, True),
    ]
    got = source_clips(view, "720p", DEFAULT_LADDER)
    assert [(c.rendition.profile, c.rendition.width, c.fit) for c in got] == [
        ("720p", 1280, False),
        ("720p", 640, True),
        ("720p", 1280, False),
    ]


def test_source_clips_refuse_what_the_scene_or_the_ladder_lacks():
    view = scene_view(FULL, {"720p": (640, 480)})
    with pytest.raises(BadRequest, match="exported at 720p, 1080p"):
        source_clips(view, "2160p", DEFAULT_LADDER)
    with pytest.raises(BadRequest, match="exported at 720p$"):  # no clip has 1080p
        source_clips(scene_view({"720p": (640, 480)}), "1080p", DEFAULT_LADDER)
    with pytest.raises(BadRequest, match="exported at 720p$"):  # not a rung any more
        source_clips(view, "1080p", DEFAULT_LADDER[:1])


def fits(plan):
    return [
        (p.sequence, p.files, None if p.cut is None else (p.cut.first, p.cut.end), p.fit)
        for p in plan.parts
    ]


# clip 1 of the frame; clip 2 (30 fps, 4 s + 4 s + 2 s) a 640x480 rendition
FIT_SCENE = [
    SCENE[0],
    clip(2, 30.0, [4.0, 4.0, 2.0], "avc1.4d401e,mp4a.40.2", size=(640, 480), fit=True),
]
SMALL = Fit(640, 480, 120)


def test_every_segment_of_a_fit_clip_is_reencoded_on_its_own():
    plan = plan_export(FIT_SCENE, "720p")
    assert fits(plan) == [
        (1, ("720p_0001.ts", "720p_0002.ts"), None, None),
        (2, ("720p_0001.ts",), None, SMALL),
        (2, ("720p_0002.ts",), None, SMALL),
        (2, ("720p_0003.ts",), None, SMALL),
    ]
    assert plan.duration == 15.0 and plan.size == 3000 + (1000 + 2000) + (2000 + 3000) + 3000
    assert [p.copied for p in plan.parts] == [True, False, False, False]
    assert plan.refit_duration == 10.0 and plan_export(SCENE, "720p").refit_duration == 0
    assert tails(plan) == [(1, None), (2, "720p_0002.ts"), (2, "720p_0003.ts"), (2, None)]
    assert plan.level == 31  # the copied renditions' (a fit clip's comes from the re-encode)
    assert plan_export(FIT_SCENE[1:], "720p").level == 0
    doc = exportplan.manifest(
        scene_id="scn_0123456789abcdef",
        export_id="exp_0123456789abcdef",
        version=1,
        plan=plan,
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        duration=15.0,
        size=1,
    )
    assert [(p["mode"], p.get("frames"), p.get("scaledFrom")) for p in doc["parts"]] == [
        ("copy", None, None),
        ("reencode", None, [640, 480]),
        ("reencode", None, [640, 480]),
        ("reencode", None, [640, 480]),
    ]


def test_a_moment_cutting_into_a_fit_clip_fits_its_cuts():
    plan = plan_export(FIT_SCENE, "720p", round_moment(FIT_SCENE, 2.3, 5 + 8.5))
    assert fits(plan) == [
        (1, ("720p_0001.ts",), (55, 96), None),
        (1, ("720p_0002.ts",), None, None),
        (2, ("720p_0001.ts",), None, SMALL),
        (2, ("720p_0002.ts",), None, SMALL),
        (2, ("720p_0003.ts",), (0, 15), SMALL),
    ]
    assert plan.duration == pytest.approx(41 / 24 + 1.0 + 8.0 + 0.5)
    assert plan.refit_duration == pytest.approx(8.5)


# captions sidecars (issue 27): stored captions, times from each clip's first frame
EN_1 = "WEBVTT\n\n1\n00:00.500 --> 00:01.500\none\n\n2\n00:04.000 --> 00:05.000\ntwo\n"
EN_3 = "WEBVTT\n\n1\n00:00.000 --> 00:01.000 align:start\nthree\n\n00:03.500 --> 00:04.500\nfour\n"
FR_3 = "WEBVTT\n\n00:02.000 --> 00:03.000\nquatre\n"
CAPTIONED = {
    SCENE[0].segment_id: {"en": EN_1},
    SCENE[2].segment_id: {"en": EN_3, "fr": FR_3},
}


@pytest.mark.parametrize(
    "moment,spans,expected",
    [
        (  # a whole export: each clip's cues shifted by its start on the export
            None,
            [(0.0, 5.0, 0.0), (0.0, 10.0, 5.0), (0.0, 4.0, 15.0)],
            {
                "en": "WEBVTT\n\n"
                "1\n00:00:00.500 --> 00:00:01.500\none\n\n"
                "2\n00:00:04.000 --> 00:00:05.000\ntwo\n\n"
                # clip 3 starts at 15 s; its "1" is clip 1's identifier already: dropped
                "00:00:15.000 --> 00:00:16.000 align:start\nthree\n\n"
                "00:00:18.500 --> 00:00:19.000\nfour\n\n",  # clamped to the clip's end
                "fr": "WEBVTT\n\n00:00:17.000 --> 00:00:18.000\nquatre\n\n",
            },
        ),
        (  # a moment: shifted and trimmed
            (4.5, 16.0),
            [(4.5, 0.5, 0.0), (0.0, 10.0, 0.5), (0.0, 1.0, 10.5)],
            {
                # "one" is before the moment; "two" starts before it: clamped to its start
                "en": "WEBVTT\n\n"
                "2\n00:00:00.000 --> 00:00:00.500\ntwo\n\n"
                "1\n00:00:10.500 --> 00:00:11.500 align:start\nthree\n\n",  # "1" unique here
                # clip 3 is in the moment, its French cue is not: an empty file
                "fr": "WEBVTT\n\n",
            },
        ),
    ],
)
def test_sidecars_place_each_clips_cues_on_the_exports_timeline(moment, spans, expected):
    plan = plan_export(SCENE, "720p", moment and round_moment(SCENE, *moment))
    assert [(s.start, s.duration, s.at) for s in plan.spans] == spans
    assert exportplan.sidecars(plan, CAPTIONED) == expected


def test_sidecars_of_a_moment_start_on_a_frame():
    # a moment of 24 fps frames: its start is a frame's time, to the millisecond
    plan = plan_export(SCENE, "720p", round_moment(SCENE, 4.03, 5.0))
    assert plan.spans[0].start == pytest.approx(97 / 24)
    assert exportplan.sidecars(plan, CAPTIONED)["en"] == (
        "WEBVTT\n\n2\n00:00:00.000 --> 00:00:00.958\ntwo\n\n"  # 5 s - 97/24 s
    )


def test_sidecars_only_for_languages_of_the_clips_shown():
    assert (
        exportplan.sidecars(plan_export(SCENE, "720p", round_moment(SCENE, 6, 9)), CAPTIONED) == {}
    )
    assert exportplan.sidecars(plan_export(SCENE, "720p"), {}) == {}
