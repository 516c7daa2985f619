"""The transcode's ffmpeg command: the ladder, the filter graph, the command line, the
output names and times, its -progress lines and reading the playlists it writes."""

from __future__ import annotations

import re
from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest

from core.playlists import Rendition, clip_media_playlist, target_duration
from workers.media.colour import Colour, chain
from workers.media.encoding import (
    DEFAULT_RUNGS,
    Rung,
    abr,
    at_cap,
    audio_bitrates,
    budget,
    clip_ladder,
    fills_exactly,
    filter_graph,
    first_stage,
    fit_filter,
    fit_scale_filter,
    largest_box,
    loudness_command,
    media_segments,
    over_budget,
    parse_progress,
    parse_progress_lines,
    per_title,
    rung_codecs,
    rung_scaler,
    segment_name,
    segment_sps_command,
    segment_streams_command,
    stream_options,
    tee_slave,
    thumbnail_time,
    timeline_times,
    transcode_command,
)
from workers.media.h264 import level_name, variant_codecs
from workers.media.loudness import GainPlan, Measurement, plan_gain
from workers.media.probe import BadInput, MediaInfo

# ----------------------------------------------------------------- fixtures


def info(**over: Any) -> MediaInfo:
    base: dict[str, Any] = dict(
        duration=9.0,
        width=1920,
        height=1080,
        fps=30.0,
        has_audio=True,
        audio_sample_rate=48000,
        audio_channels=2,
        video_codec="h264",
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        video_stream=0,
        audio_stream=1,
    )
    base.update(over)
    return MediaInfo(**base)


def opt(cmd: list[str], flag: str, start: int = 0) -> str:
    return cmd[cmd.index(flag, start) + 1]


def output_args(cmd: list[str], output: str) -> list[str]:
    """The options of one output: everything after the previous output path."""
    end = cmd.index(output)
    outputs = [
        i
        for i, a in enumerate(cmd[:end])
        if (a.startswith("/work/out/") and cmd[i - 1] != "-hls_segment_filename")
        or cmd[i - 1] == "tee"
    ]
    begin = outputs[-1] + 1 if outputs else cmd.index("-filter_complex") + 2
    return cmd[begin:end]


# -------------------------------------------------------------- ladder/levels


def test_default_ladder_is_the_seeds() -> None:
    assert DEFAULT_RUNGS == (
        Rung("720p", 1280, 720, 1_500_000, 128_000),
        Rung("1080p", 1920, 1080, 4_000_000, 128_000),
    )
    assert [r.profile for r in DEFAULT_RUNGS] == ["main", "high"]
    assert (DEFAULT_RUNGS[0].maxrate, DEFAULT_RUNGS[0].bufsize) == (2_250_000, 3_000_000)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(name="7 20p"),
        dict(name="../x"),
        dict(width=1281),
        dict(height=0),
        dict(video_bitrate=0),
    ],
)
def test_rung_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = dict(name="720p", width=1280, height=720, video_bitrate=1_500_000)
    with pytest.raises(ValueError):
        Rung(**(base | kwargs))


def test_variant_and_rung_codecs() -> None:
    assert variant_codecs("avc1.4d401f") == "avc1.4d401f,mp4a.40.2"
    r720, r1080 = DEFAULT_RUNGS
    assert rung_codecs(r720, 30) == "avc1.4d401f"
    assert rung_codecs(r720, 60) == "avc1.4d4020"
    assert rung_codecs(r1080, 30) == "avc1.640028"
    assert rung_codecs(r1080, 60) == "avc1.64002a"
    assert level_name(31) == "3.1" and level_name(40) == "4.0"


# ------------------------------------------------------------ ffmpeg command

FIT_720 = (
    "scale=w='if(gte(dar*720,1280),1280,2*round(720*dar/2))'"
    ":h='if(gte(dar*720,1280),2*round(1280/dar/2),720)'"
    ",pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1"
)


BT709 = "color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"


def test_fit_filter_expected_string() -> None:
    assert fit_filter(1280, 720) == FIT_720
    # a still: the same scale also makes the JPEG's BT.601 full range (JFIF)
    assert fit_filter(640, 360, jpeg=True) == (
        "scale=w='if(gte(dar*360,640),640,2*round(360*dar/2))'"
        ":h='if(gte(dar*360,640),2*round(640/dar/2),360)'"
        ":in_color_matrix=bt709:out_color_matrix=bt601:in_range=tv:out_range=pc"
        ",format=yuvj420p,pad=640:360:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1"
    )


def test_filter_graph_expected_string() -> None:
    graph = filter_graph(info(), DEFAULT_RUNGS, fps=Fraction(30), thumb_at=2.0, frame_interval=10.0)
    parts = graph.split(";")
    assert parts == [
        # an untagged HD picture is BT.709: tagged so, no pixel changed
        "[0:0]fps=fps=30/1:start_time=0,trim=end=9,"
        f"setparams={BT709},format=yuv420p,split=4[s0][s1][sthumb][stl]",
        f"[s0]{FIT_720},format=yuv420p[v0]",
        "[s1]setsar=1,format=yuv420p[v1]",  # the picture is the 1080p frame already
        "[sthumb]select='gte(t,2)*eq(selected_n,0)',split=2[th0][th1]",
        f"[th0]{fit_filter(640, 360, jpeg=True)}[thumb]",
        f"[th1]{fit_filter(1280, 720, jpeg=True)}[thumbl]",
        f"[stl]select='gte(t,selected_n*10)',{fit_filter(160, 90, jpeg=True)}[tl]",
        "[0:1]aresample=48000:async=1:first_pts=0,"
        "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo,apad,atrim=end=9,"
        "asplit=1[a0]",  # both rungs at 128 kbit/s: one AAC encode
    ]


@pytest.mark.parametrize(
    ("over", "fits"),
    [
        ({}, (False, True)),
        ({"width": 1280, "height": 720}, (True, False)),
        ({"sar": (4, 3), "width": 1920, "coded_width": 1440}, (False, False)),
        ({"width": 1080, "height": 1920, "rotation": 90}, (False, False)),
        ({"width": 1920, "height": 1088}, (False, False)),
    ],
)
def test_a_rung_the_picture_already_fills_is_not_scaled(
    over: dict[str, Any], fits: tuple[bool, bool]
) -> None:
    src = info(**over)
    assert tuple(fills_exactly(src, rung) for rung in DEFAULT_RUNGS) == fits
    graph = filter_graph(src, DEFAULT_RUNGS, fps=Fraction(30), thumb_at=2, frame_interval=10)
    for i, (rung, fit) in enumerate(zip(DEFAULT_RUNGS, fits, strict=True)):
        chain = fit_filter(rung.width, rung.height)
        expected = "setsar=1" if fit else chain
        assert f"[s{i}]{expected},format=yuv420p[v{i}]" in graph.split(";")


def test_a_rung_at_ultrafast_is_scaled_bilinear() -> None:
    assert (rung_scaler("ultrafast"), rung_scaler("veryfast"), rung_scaler("")) == (
        "bilinear",
        "bicubic",
        "bicubic",
    )
    assert fit_filter(1280, 720, "bilinear") == FIT_720.replace(
        "scale=w=", "scale=flags=bilinear:w="
    )
    src = info(width=3840, height=2160)  # both rungs scaled
    fast = transcode_command("/in.mp4", "/o", src, DEFAULT_RUNGS, preset="ultrafast")
    mixed = transcode_command(
        "/in.mp4", "/o", src, DEFAULT_RUNGS, preset="medium", presets={"720p": "ultrafast"}
    )
    for cmd, scalers in ((fast, ("bilinear", "bilinear")), (mixed, ("bilinear", "bicubic"))):
        parts = opt(cmd, "-filter_complex").split(";")
        for i, (rung, scaler) in enumerate(zip(DEFAULT_RUNGS, scalers, strict=True)):
            assert (
                f"[s{i}]{fit_filter(rung.width, rung.height, scaler)},format=yuv420p[v{i}]" in parts
            )
        # the stills keep the default
        assert f"[th0]{fit_filter(640, 360, jpeg=True)}[thumb]" in parts


def test_an_hdr_first_stage_tone_maps_the_720p_picture() -> None:
    hlg = Colour("arib-std-b67", "bt2020", "bt2020nc", bit_depth=10)
    src = info(colour=hlg, coded_width=1920, coded_height=1080)
    (rung,) = first_stage(DEFAULT_RUNGS)
    graph = filter_graph(
        src, [rung], fps=Fraction(30), thumb_at=2, frame_interval=10, presets={"720p": "ultrafast"}
    )
    head, *_ = graph.split(";")
    # fitted into 1280x720 (the rung and the large thumbnail) before the tone curve and
    # zimg, with the rung's scaler; the rung's own fit then finds its size made
    fit = fit_scale_filter(1280, 720, "bilinear", zimg=True)
    assert fit == FIT_720.split(",pad=")[0].replace("scale=", "zscale=f=bilinear:")
    assert head == (
        f"[0:0]fps=fps=30/1:start_time=0,trim=end=9,{fit},{','.join(chain(hlg, 1920, 1080))},"
        "split=3[s0][sthumb][stl]"
    )
    assert f"[s0]{fit_filter(1280, 720, 'bilinear')},format=yuv420p[v0]" in graph.split(";")
    # the refinement of the same clip: its 1080p rung is the picture's own size
    refined = filter_graph(
        src, DEFAULT_RUNGS, fps=Fraction(30), thumb_at=2, frame_interval=10, stills=False
    )
    assert refined.startswith(
        f"[0:0]fps=fps=30/1:start_time=0,trim=end=9,{chain(hlg, 1920, 1080)[0]},"
    )
    # a 4K source's refinement: fitted into 1080p at the 1080p rung's scaler
    uhd = info(colour=hlg, width=3840, height=2160)
    refined = filter_graph(
        uhd,
        DEFAULT_RUNGS,
        fps=Fraction(30),
        thumb_at=2,
        frame_interval=10,
        stills=False,
        presets={"720p": "medium", "1080p": "medium"},
    )
    assert f"trim=end=9,{fit_scale_filter(1920, 1080, zimg=True)},format=yuv420p10le," in refined


def test_the_largest_box_holds_every_output() -> None:
    small = (Rung("480p", 854, 480, 1_000_000),)
    assert largest_box(small, stills=False) == (854, 480)
    assert largest_box(small, stills=True) == (1280, 720)  # the large thumbnail
    assert largest_box((Rung("portrait", 720, 1280, 2_000_000),), stills=True) == (1280, 1280)
    assert largest_box(DEFAULT_RUNGS, stills=True) == (1920, 1080)


def test_one_audio_encode_per_audio_bit_rate() -> None:
    ladder = (
        Rung("360p", 640, 360, 600_000, 64_000),
        *DEFAULT_RUNGS,
        Rung("1440p", 2560, 1440, 9_000_000, 192_000),
    )
    assert audio_bitrates(ladder) == (64_000, 128_000, 192_000)
    graph = filter_graph(info(), ladder, fps=Fraction(30), thumb_at=2, frame_interval=10)
    assert graph.endswith(",asplit=3[a0][a1][a2]")
    cmd = transcode_command("/in.mp4", "/work/out", info(), ladder)
    maps = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-map"][:7]
    assert maps == ["[v0]", "[v1]", "[v2]", "[v3]", "[a0]", "[a1]", "[a2]"]
    assert [opt(cmd, f"-b:a:{j}") for j in range(3)] == ["64000", "128000", "192000"]
    assert "-b:a:3" not in cmd and "-c:a" not in cmd
    # each HLS output takes its rung's video and the audio at its rung's rate
    slaves = opt(cmd, "tee").split("|")
    assert [slave.split(":f=hls:")[0] for slave in slaves] == [
        "[select=v\\\\:0,a\\\\:0",
        "[select=v\\\\:1,a\\\\:1",
        "[select=v\\\\:2,a\\\\:1",
        "[select=v\\\\:3,a\\\\:2",
    ]


def test_filter_graph_variants() -> None:
    silent = filter_graph(
        info(has_audio=False, audio_channels=None, audio_sample_rate=None),
        DEFAULT_RUNGS,
        fps=Fraction(25),
        thumb_at=0.4,
        frame_interval=5,
    )
    assert silent.split(";")[-1] == "anullsrc=r=48000:cl=stereo,atrim=end=9,asplit=1[a0]"
    assert "[0:a" not in silent
    assert "select='gte(t,0.4)*eq(selected_n,0)'" in silent
    assert "select='gte(t,selected_n*5)'" in silent
    mono = filter_graph(
        info(audio_channels=1, audio_sample_rate=44100),
        DEFAULT_RUNGS[:1],
        fps=Fraction(30000, 1001),
        thumb_at=2,
        frame_interval=10,
    )
    assert "[0:1]channelmap=map=0-FL|0-FR:channel_layout=stereo,aresample=48000" in mono
    assert "fps=fps=30000/1001:start_time=0" in mono
    assert mono.endswith("asplit=1[a0]")
    interlaced = filter_graph(
        info(interlaced=True, duration=6.4),
        DEFAULT_RUNGS,
        fps=Fraction(25),
        thumb_at=2,
        frame_interval=10,
    )
    assert interlaced.startswith(
        "[0:0]yadif=mode=send_frame:deint=interlaced,fps=fps=25/1:start_time=0,trim=end=6.4,"
        f"setparams={BT709},format=yuv420p,split=4"
    )


def test_transcode_command_one_run() -> None:
    cmd = transcode_command("/jobs/1/raw_output.mp4", "/work/out", info(), DEFAULT_RUNGS)
    assert cmd[:18] == [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "warning",
        "-y",
        "-progress",
        "pipe:1",
        "-nostats",
        "-noautorotate",  # the display matrix is baked in by the graph itself
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mov,matroska,mpegts,avi",
        "-f",
        "mov",
        "-i",
        "file:/jobs/1/raw_output.mp4",
    ]
    assert cmd.count("-i") == 1  # one input, decoded once
    assert cmd.count("-filter_complex") == 1
    assert opt(cmd, "-filter_complex") == filter_graph(
        info(), DEFAULT_RUNGS, fps=Fraction(30), thumb_at=2.0, frame_interval=10.0
    )
    outputs = [a for a in cmd if a.startswith("/work/out/") and not a.endswith(".ts")]
    assert opt(cmd, "-f", cmd.index("-filter_complex")) == "tee"  # both renditions
    assert outputs == [
        "/work/out/thumbnail.jpg",
        "/work/out/thumbnail_large.jpg",
        "/work/out/frames/frame_%04d.jpg",
    ]


def test_stream_options() -> None:
    args = ["-c:v", "libx264", "-preset", "fast", "-b:v", "1000000", "-x264-params", "a=1:b=2"]
    assert stream_options(args, "v:1") == [
        *("-c:v:1", "libx264", "-preset:v:1", "fast"),
        *("-b:v:1", "1000000", "-x264-params:v:1", "a=1:b=2"),
    ]
    assert stream_options(["-c:a", "aac", "-ar", "48000"], "a:0") == [
        *("-c:a:0", "aac", "-ar:a:0", "48000"),
    ]
    with pytest.raises(ValueError):
        stream_options(["-b:a", "128000"], "v:0")
    with pytest.raises(ValueError):
        stream_options(["-c:v"], "v:0")


def test_tee_slave_escapes_for_both_levels() -> None:
    assert tee_slave({"select": "v:0,a:0", "f": "hls"}, "/o/a.m3u8") == (
        "[select=v\\\\:0,a\\\\:0:f=hls]/o/a.m3u8"
    )
    # a value: its specials escaped for the options, then everything again for the list
    assert tee_slave({"x": " a'b:c]d|e\\"}, "/o/a.m3u8") == (
        "[x=\\\\\\ a\\\\\\'b\\\\:c\\\\]d\\|e\\\\\\\\]/o/a.m3u8"
    )
    # the target only through the list's level
    assert tee_slave({}, "/o w/a'|b].m3u8") == "[]/o\\ w/a\\'\\|b].m3u8"
    # (tests/integration/test_transcode.py writes through ffmpeg into such a directory)


def test_transcode_command_rendition_options() -> None:
    cmd = transcode_command("/in.mp4", "/work/out", info(), DEFAULT_RUNGS)
    renditions = cmd[cmd.index("-filter_complex") + 2 : cmd.index("/work/out/thumbnail.jpg") - 14]
    x264 = {
        "main": ("main", "3.1", "1500000", "2250000", "3000000"),
        "high": ("high", "4.0", "4000000", "6000000", "8000000"),
    }

    def video(i: int, profile: str) -> list[str]:
        name, level, rate, maxrate, bufsize = x264[profile]
        return [
            *(f"-c:v:{i}", "libx264", f"-preset:v:{i}", "veryfast"),
            *(f"-profile:v:{i}", name, f"-level:v:{i}", level),
            *(f"-b:v:{i}", rate, f"-maxrate:v:{i}", maxrate, f"-bufsize:v:{i}", bufsize),
            *(f"-g:v:{i}", "120", f"-keyint_min:v:{i}", "120", f"-sc_threshold:v:{i}", "0"),
            *(f"-flags:v:{i}", "+cgop", f"-forced-idr:v:{i}", "1"),
            # the VUI says BT.709 limited range (H.264 Annex E.2.1)
            *(f"-color_primaries:v:{i}", "bt709", f"-color_trc:v:{i}", "bt709"),
            *(f"-colorspace:v:{i}", "bt709", f"-color_range:v:{i}", "tv"),
            *(f"-force_key_frames:v:{i}", "expr:gte(t,n_forced*4)"),
        ]

    hls = (
        ":f=hls:hls_time=4:hls_playlist_type=vod:hls_flags=independent_segments"
        ":hls_segment_type=mpegts:start_number=1:hls_segment_filename=/work/out/"
    )
    mux = ":max_delay=700000"
    assert renditions == [
        *("-map", "[v0]", "-map", "[v1]", "-map", "[a0]"),
        *("-map_metadata", "-1", "-map_chapters", "-1"),
        *video(0, "main"),
        *video(1, "high"),
        *("-c:a:0", "aac", "-b:a:0", "128000", "-ar:a:0", "48000", "-ac:a:0", "2"),
        "-f",
        "tee",
        f"[select=v\\\\:0,a\\\\:0{hls}720p_%04d.ts{mux}]/work/out/720p.m3u8"
        f"|[select=v\\\\:1,a\\\\:0{hls}1080p_%04d.ts{mux}]/work/out/1080p.m3u8",
    ]
    thumb = output_args(cmd, "/work/out/thumbnail.jpg")
    assert thumb == [
        "-map",
        "[thumb]",
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
    ]
    frames = output_args(cmd, "/work/out/frames/frame_%04d.jpg")
    assert opt(frames, "-map") == "[tl]" and opt(frames, "-fps_mode") == "passthrough"


@pytest.mark.parametrize(
    ("fps", "gop", "levels"),
    [
        (60.0, 240, ("3.2", "4.2")),
        (50.0, 200, ("3.2", "4.2")),
        (30000 / 1001, 120, ("3.1", "4.0")),
        (25.0, 100, ("3.1", "4.0")),
        (120.0, 240, ("3.2", "4.2")),
        (0.0, 120, ("3.1", "4.0")),
    ],
)
def test_transcode_command_levels_follow_output_fps(
    fps: float, gop: int, levels: tuple[str, str]
) -> None:
    cmd = transcode_command("/in.mp4", "/work/out", info(fps=fps), DEFAULT_RUNGS)
    assert [opt(cmd, "-level:v:0"), opt(cmd, "-level:v:1")] == list(levels)
    assert {opt(cmd, "-g:v:0"), opt(cmd, "-g:v:1")} == {str(gop)}
    assert {opt(cmd, "-keyint_min:v:0"), opt(cmd, "-keyint_min:v:1")} == {str(gop)}


def test_transcode_command_containers_and_options() -> None:
    mkv = transcode_command(
        "/in.webm",
        "/o",
        info(format_name="matroska,webm"),
        DEFAULT_RUNGS,
        segment_seconds=6,
        thumb_at=1.5,
        frame_interval=2,
        preset="fast",
        progress="pipe:3",
    )
    assert opt(mkv, "-f") == "matroska"
    assert opt(mkv, "-progress") == "pipe:3"
    assert ":hls_time=6:" in opt(mkv, "tee")
    assert opt(mkv, "-force_key_frames:v:1") == "expr:gte(t,n_forced*6)"
    assert opt(mkv, "-preset:v:1") == "fast" and opt(mkv, "-g:v:1") == "180"
    assert "select='gte(t,1.5)*eq(selected_n,0)'" in opt(mkv, "-filter_complex")
    assert "select='gte(t,selected_n*2)'" in opt(mkv, "-filter_complex")
    with pytest.raises(BadInput):
        transcode_command("/in", "/o", info(format_name="hls"), DEFAULT_RUNGS)
    with pytest.raises(ValueError):
        transcode_command("/in", "/o", info(), [])
    with pytest.raises(ValueError):
        transcode_command("/in", "/o", info(), [DEFAULT_RUNGS[0], DEFAULT_RUNGS[0]])


def test_thumbnail_time_and_timeline_times() -> None:
    assert thumbnail_time(9) == 2.0
    assert thumbnail_time(4) == 2.0
    assert thumbnail_time(3) == 1.5
    assert thumbnail_time(0.8) == 0.4
    # never after the last frame: a one-frame clip's is its only one (issue 24)
    assert thumbnail_time(0.8, Fraction(30)) == 0.4
    assert thumbnail_time(0.1, Fraction(10)) == 0.0
    assert thumbnail_time(3.0, Fraction(1)) == 1.5  # frames at 0, 1 and 2 s
    assert thumbnail_time(1.0, Fraction(1)) == 0.0
    assert thumbnail_time(0.2, Fraction(10)) == 0.05  # before the second frame, at 0.1
    assert timeline_times(25, 10) == [0, 10, 20]
    assert timeline_times(20, 10) == [0, 10]
    assert timeline_times(20.01, 10) == [0, 10, 20]
    assert timeline_times(9, 10) == [0]
    assert timeline_times(0.8, 10) == [0]
    assert timeline_times(1, 0.3) == [0, 0.3, 0.6, 0.9]
    with pytest.raises(ValueError):
        timeline_times(10, 0)


# ----------------------------------------------------------------- progress

PROGRESS = """frame=265
fps=19.41
stream_0_0_q=28.0
bitrate=N/A
total_size=N/A
out_time_us=4500000
out_time_ms=4500000
out_time=00:00:04.500000
dup_frames=2
drop_frames=0
speed=0.656x
progress=continue
frame=270
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
progress=continue
frame=271
out_time_us=9002667
out_time=00:00:09.002667
progress=end
"""


def test_progress_parser_blocks() -> None:
    blocks = parse_progress_lines(PROGRESS.splitlines())
    assert len(blocks) == 3
    assert blocks[0]["out_time_us"] == "4500000" and blocks[0]["speed"] == "0.656x"
    assert blocks[2]["progress"] == "end"
    assert [parse_progress(b, 9.0) for b in blocks] == [50.0, 0.0, 100.0]


@pytest.mark.parametrize(
    ("block", "pct"),
    [
        ({"out_time_us": "3000000", "progress": "continue"}, 50.0),
        (
            {"out_time_ms": "1500000", "progress": "continue"},
            25.0,
        ),  # microseconds, despite its name
        ({"out_time": "00:00:04.500000", "progress": "continue"}, 75.0),
        ({"out_time_us": "9000000", "progress": "continue"}, 100.0),
        ({"out_time_us": "-23000", "progress": "continue"}, 0.0),
        ({"out_time_us": "N/A", "out_time": "N/A", "progress": "continue"}, 0.0),
        ({"progress": "end"}, 100.0),
    ],
)
def test_parse_progress(block: dict[str, str], pct: float) -> None:
    assert parse_progress(block, 6.0) == pytest.approx(pct)


def test_parse_progress_zero_duration() -> None:
    assert parse_progress({"out_time_us": "100"}, 0) == 0.0


# ------------------------------------------------------------ media playlists

FFMPEG_OUTPUT = (
    "#EXTM3U\n"
    "#EXT-X-VERSION:3\n"
    "#EXT-X-TARGETDURATION:4\n"
    "#EXT-X-MEDIA-SEQUENCE:0\n"
    "#EXT-X-PLAYLIST-TYPE:VOD\n"
    "#EXTINF:4.000000,\n"
    "720p_0001.ts\n"
    "#EXTINF:4.004000,\n"
    "720p_0002.ts\n"
    "#EXTINF:1.533333,\n"
    "720p_0003.ts\n"
    "#EXT-X-ENDLIST\n"
)


def _swap(old: str, new: str) -> str:
    assert old in FFMPEG_OUTPUT
    return FFMPEG_OUTPUT.replace(old, new, 1)


def test_media_segments_of_ffmpegs_playlist() -> None:
    durations, uris = media_segments(FFMPEG_OUTPUT)
    assert durations == [4.0, 4.004, 1.533333]
    assert uris == ["720p_0001.ts", "720p_0002.ts", "720p_0003.ts"]
    assert target_duration([durations]) == 5  # 4.004 -> ceil 5; ffmpeg wrote 4
    assert [segment_name(DEFAULT_RUNGS[0], n) for n in (1, 3)] == uris[::2]


def test_media_segments_round_trips_our_playlists() -> None:
    rendition = Rendition(
        profile="1080p",
        width=1920,
        height=1080,
        frame_rate=30.0,
        codecs="avc1.640028,mp4a.40.2",
        durations=(4.0, 1.5),
        sizes=(1000, 400),
        bandwidth_peak=2000,
        bandwidth_average=1800,
    )
    assert media_segments(clip_media_playlist(rendition)) == (
        [4.0, 1.5],
        ["1080p_0001.ts", "1080p_0002.ts"],
    )


def test_media_segments_tolerates_crlf_titles_and_other_tags() -> None:
    text = (
        "#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n#EXT-X-DISCONTINUITY\r\n"
        "#EXTINF:2,intro\r\n\r\na.ts\r\n#EXT-X-ENDLIST"
    )
    assert media_segments(text) == ([2.0], ["a.ts"])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no #EXT-X-ENDLIST"),
        (_swap("#EXT-X-ENDLIST\n", ""), "no #EXT-X-ENDLIST"),
        (_swap("#EXTINF:4.000000,", "#EXTINF:abc,"), "unreadable playlist"),
        (_swap("#EXTINF:4.000000,", "#EXTINF:-4,"), "segment 1: EXTINF duration -4.0 must be"),
        (_swap("#EXTINF:4.000000,", "#EXTINF:0,"), "segment 1: EXTINF duration 0.0 must be"),
        (_swap("#EXTINF:4.000000,", "#EXTINF:nan,"), "segment 1: EXTINF duration nan must"),
        (_swap("720p_0003.ts\n", ""), "segment 3: #EXTINF has no segment URI"),
        (_swap("#EXT-X-TARGETDURATION:4\n", ""), "no #EXT-X-TARGETDURATION"),
        (_swap("#EXT-X-TARGETDURATION:4", "#EXT-X-TARGETDURATION:4.5"), "unreadable playlist"),
        (_swap("#EXT-X-TARGETDURATION:4", "#EXT-X-TARGETDURATION:3"), "exceeds"),
        (_swap("#EXTINF:4.000000,", "#EXT-X-BYTERANGE:100@0\n#EXTINF:4,"), "BYTERANGE"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p.m3u8\n", "a master playlist"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-ENDLIST\n", "has no segments"),
    ],
)
def test_media_segments_rejects_what_is_not_a_finished_media_playlist(
    text: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        media_segments(text)


def test_read_back_commands_open_only_the_local_segment() -> None:
    assert segment_streams_command("/work/out/720p_0001.ts") == [
        "ffprobe",
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_streams",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mpegts",
        "-f",
        "mpegts",
        "-i",
        "file:/work/out/720p_0001.ts",
    ]
    assert segment_sps_command("/work/out/720p_0001.ts") == [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mpegts",
        "-f",
        "mpegts",
        "-i",
        "file:/work/out/720p_0001.ts",
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


# ------------------------------------------------------------ loudness matching


def test_measurement_command_measures_what_the_transcode_normalises() -> None:
    mono = info(duration=6.5, audio_sample_rate=44100, audio_channels=1)
    cmd = loudness_command("/in/upload", mono)
    assert cmd == [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "info",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mov,matroska,mpegts,avi",
        "-f",
        "mov",
        "-i",
        "file:/in/upload",
        "-map",
        "0:1",
        "-vn",
        "-sn",
        "-dn",
        "-af",
        "channelmap=map=0-FL|0-FR:channel_layout=stereo,aresample=48000:async=1:first_pts=0,"
        "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo,atrim=end=6.5,"
        "ebur128=peak=true:framelog=verbose",
        "-f",
        "null",
        "-",
    ]
    # the transcode's audio starts with the very same chain, then the gain, then padding
    measured = Measurement(-30.0, -20.0, 3.0, -40.0)
    p = plan_gain(measured, target=-16.0, max_gain=20.0, has_audio=True)
    graph = filter_graph(
        mono, DEFAULT_RUNGS, fps=Fraction(30), thumb_at=2.0, frame_interval=10.0, loudness=p
    )
    audio = next(part for part in graph.split(";") if part.startswith("[0:1]"))
    measured_chain = cmd[cmd.index("-af") + 1].split(",atrim=")[0]
    assert audio == (
        f"[0:1]{measured_chain},volume=volume=14.00dB:precision=float,apad,atrim=end=6.5,"
        "asplit=1[a0]"
    )
    # no gain without a plan (LOUDNESS_TARGET=off) or without audio
    plain = filter_graph(mono, DEFAULT_RUNGS, fps=Fraction(30), thumb_at=2.0, frame_interval=10)
    assert "volume" not in plain and "loudnorm" not in plain
    silent = filter_graph(
        info(duration=6.5, has_audio=False, audio_stream=None, audio_channels=None),
        DEFAULT_RUNGS,
        fps=Fraction(30),
        thumb_at=2.0,
        frame_interval=10.0,
        loudness=GainPlan("no_audio", target=-16.0),
    )
    assert "anullsrc=r=48000:cl=stereo,atrim=end=6.5,asplit=1[a0]" in silent


# ------------------------------------------------- issue 26: which rungs, what rate


@pytest.mark.parametrize(
    ("width", "height", "made"),
    [
        (1920, 1080, ["720p:1280x720", "1080p:1920x1080"]),
        (1080, 1920, ["720p:1280x720", "1080p:1920x1080"]),  # portrait: downscaled, padded
        (1440, 1080, ["720p:1280x720", "1080p:1920x1080"]),  # 4:3 fills 1080p's height
        (1904, 1072, ["720p:1280x720", "1080p:1920x1080"]),  # within the 2% tolerance
        (1600, 900, ["720p:1280x720"]),  # would be enlarged 1.2x into 1080p
        (1280, 720, ["720p:1280x720"]),
        (640, 480, ["720p:640x480"]),  # smaller than every rung: its own size
        (853, 480, ["720p:852x480"]),  # (even sides)
        (8, 16, ["720p:16x16"]),  # never below the smallest side
    ],
)
def test_a_source_smaller_than_a_rung_is_not_upscaled_into_it(
    width: int, height: int, made: list[str]
) -> None:
    ladder = clip_ladder(info(width=width, height=height), DEFAULT_RUNGS)
    assert [f"{r.name}:{r.width}x{r.height}" for r in ladder] == made
    assert first_stage(ladder) == ladder[:1]


def test_a_small_sources_rendition_is_neither_scaled_up_nor_padded() -> None:
    src = info(width=640, height=480)
    (rung,) = clip_ladder(src, DEFAULT_RUNGS)
    assert fills_exactly(src, rung)
    graph = filter_graph(src, [rung], fps=Fraction(30), thumb_at=2, frame_interval=10)
    assert "[s0]setsar=1,format=yuv420p[v0]" in graph
    assert rung_codecs(rung, 30.0) == "avc1.4d401e"  # Main 3.0: its own frame's level


def test_per_title_is_capped_crf_under_the_abr_ladders_cap() -> None:
    ladder = per_title(DEFAULT_RUNGS, {"720p": 23.0, "1080p": 24.5}.__getitem__)
    cmd = transcode_command("/in.mp4", "/w", info(), ladder)
    assert [opt(cmd, "-crf:v:0"), opt(cmd, "-crf:v:1")] == ["23", "24.5"]
    assert "-b:v:0" not in cmd and "-b:v:1" not in cmd
    # the cap is the ABR ladder's VBV: maxrate 1.5x, bufsize 2x the rung's bit rate
    assert [opt(cmd, "-maxrate:v:1"), opt(cmd, "-bufsize:v:1")] == ["6000000", "8000000"]
    # headers stay the ABR cuts' (pic_init_qp 26: x264's stitchable)
    assert opt(cmd, "-x264-params:v:0") == "stitchable=1"
    fast = transcode_command("/in.mp4", "/w", info(), ladder, preset="ultrafast")
    assert opt(fast, "-x264-params:v:1").endswith(":8x8dct=1:stitchable=1")
    assert abr(ladder) == DEFAULT_RUNGS
    abr_cmd = transcode_command("/in.mp4", "/w", info(), abr(ladder))
    assert "-crf:v:0" not in abr_cmd and opt(abr_cmd, "-b:v:0") == "1500000"
    with pytest.raises(ValueError, match="CRF 52"):
        Rung("720p", 1280, 720, 1_500_000, crf=52)


def test_over_budget_is_a_capped_crf_rendition_above_what_abr_spends() -> None:
    rung = Rung("720p", 1280, 720, 1_500_000, crf=23.0)
    assert budget(rung) == 1_628_000
    # 8 s: 1,628,000 b/s * 8 s / 8 = 1,628,000 bytes is the budget itself
    assert not over_budget(rung, (4.0, 4.0), (814_000, 814_000))
    assert over_budget(rung, (4.0, 4.0), (814_000, 814_001))
    assert not over_budget(replace(rung, crf=None), (4.0, 4.0), (9_999_999, 1))


def test_at_cap_is_a_capped_crf_rendition_against_its_vbv_cap() -> None:
    rung = Rung("720p", 1280, 720, 1_500_000, crf=23.0)
    # cap: maxrate 2,250,000 + audio 128,000 b/s; 90% of it is 2,140,200 b/s
    assert at_cap(rung, (4.0,), (1_070_100,))
    assert not at_cap(rung, (4.0,), (1_070_099,))
    assert not at_cap(replace(rung, crf=None), (4.0,), (9_999_999,))
