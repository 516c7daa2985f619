"""Pure transcode logic: probe validation, H.264 levels/CODECS, ffmpeg arguments, parsers."""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from workers import media
from workers.media import (
    DEFAULT_LADDER,
    BadInput,
    Limits,
    MediaInfo,
    Rung,
    codecs_string,
    h264_level,
    output_fps,
    parse_progress,
    timeline_times,
    transcode_command,
    validate_probe,
)
from workers.storyboard import (
    StoryboardCue,
    build_storyboard,
    storyboard_cues,
    storyboard_vtt,
    vtt_time,
)

# ----------------------------------------------------------------- fixtures


def video_stream(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "index": 0,
        "codec_name": "h264",
        "codec_type": "video",
        "profile": "High",
        "width": 1920,
        "height": 1080,
        "sample_aspect_ratio": "1:1",
        "pix_fmt": "yuv420p",
        "field_order": "progressive",
        "r_frame_rate": "30/1",
        "avg_frame_rate": "30/1",
        "duration": "9.000000",
        "nb_frames": "270",
        "disposition": {"default": 1, "attached_pic": 0},
    }
    s.update(over)
    return s


def audio_stream(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "index": 1,
        "codec_name": "aac",
        "codec_type": "audio",
        "sample_rate": "48000",
        "channels": 2,
        "channel_layout": "stereo",
        "duration": "9.000000",
    }
    s.update(over)
    return s


def probe_json(*streams: dict[str, Any], **fmt: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "filename": "/in/raw.mp4",
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "duration": "9.000000",
        "size": "17611248",
        "bit_rate": "15654442",
    }
    f.update(fmt)
    return {"streams": list(streams) if streams else [video_stream(), audio_stream()], "format": f}


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
        if a.startswith("/work/out/") and cmd[i - 1] not in ("-hls_segment_filename",)
    ]
    begin = outputs[-1] + 1 if outputs else cmd.index("-filter_complex") + 2
    return cmd[begin:end]


# -------------------------------------------------------------- ladder/levels


def test_default_ladder_is_the_seeds() -> None:
    assert DEFAULT_LADDER == (
        Rung("720p", 1280, 720, 1_500_000, 128_000),
        Rung("1080p", 1920, 1080, 4_000_000, 128_000),
    )
    assert [r.profile for r in DEFAULT_LADDER] == ["main", "high"]
    assert (DEFAULT_LADDER[0].maxrate, DEFAULT_LADDER[0].bufsize) == (2_250_000, 3_000_000)


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


@pytest.mark.parametrize(
    ("w", "h", "fps", "level"),
    [
        (1280, 720, 30, 31),
        (1280, 720, 30000 / 1001, 31),
        (1280, 720, 25, 31),
        (1280, 720, 50, 32),
        (1280, 720, 60, 32),
        (1920, 1080, 24, 40),
        (1920, 1080, 30, 40),
        (1920, 1080, 50, 42),
        (1920, 1080, 60, 42),
        (640, 360, 30, 30),
        (3840, 2160, 30, 51),
        (3840, 2160, 60, 52),
    ],
)
def test_h264_level_table_a1(w: int, h: int, fps: float, level: int) -> None:
    assert h264_level(w, h, fps) == level


def test_h264_level_respects_vbv_max_bitrate() -> None:
    assert h264_level(1280, 720, 30, max_bitrate=14_000_000) == 31
    assert h264_level(1280, 720, 30, max_bitrate=15_000_000) == 32
    # High profile allows 1.25x the Main MaxBR (level 4.0: 25 Mbit/s)
    assert h264_level(1920, 1080, 30, max_bitrate=24_000_000, profile="high") == 40
    assert h264_level(1920, 1080, 30, max_bitrate=24_000_000, profile="main") == 41


@pytest.mark.parametrize(
    ("profile", "level", "codecs"),
    [
        ("main", 31, "avc1.4d401f"),
        ("main", 32, "avc1.4d4020"),
        ("high", 40, "avc1.640028"),
        ("high", 42, "avc1.64002a"),
        ("baseline", 30, "avc1.42c01e"),
    ],
)
def test_codecs_string(profile: media.Profile, level: int, codecs: str) -> None:
    assert codecs_string(profile, level) == codecs


def test_variant_and_rung_codecs() -> None:
    assert media.variant_codecs("avc1.4d401f") == "avc1.4d401f,mp4a.40.2"
    r720, r1080 = DEFAULT_LADDER
    assert media.rung_codecs(r720, 30) == "avc1.4d401f"
    assert media.rung_codecs(r720, 60) == "avc1.4d4020"
    assert media.rung_codecs(r1080, 30) == "avc1.640028"
    assert media.rung_codecs(r1080, 60) == "avc1.64002a"
    assert media.level_name(31) == "3.1" and media.level_name(40) == "4.0"


def test_sps_parsing() -> None:
    stream = (
        b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x67\x64\x00\x28\xac\xd9\x40\x00\x00\x01\x68\xeb"
    )
    sps = media.find_sps(stream)
    assert sps is not None and sps[:4] == b"\x67\x64\x00\x28"
    assert media.codecs_from_sps(sps) == "avc1.640028"
    assert media.find_sps(b"\x00\x00\x01\x65\x88") is None
    with pytest.raises(ValueError):
        media.codecs_from_sps(b"\x68\x00")


@pytest.mark.parametrize(
    ("src", "out"),
    [
        (30.0, 30.0),
        (25.0, 25.0),
        (24.0, 24.0),
        (50.0, 50.0),
        (60.0, 60.0),
        (30000 / 1001, 30000 / 1001),
        (24000 / 1001, 24000 / 1001),
        (60000 / 1001, 60000 / 1001),
        (29.93, 30000 / 1001),
        (29.99, 30.0),
        (30.2, 30.0),
        (25.1, 25.0),
        (120.0, 60.0),
        (240.0, 60.0),
        (15.0, 15.0),
        (12.5, 12.5),
        (0.0, 30.0),
        (-1.0, 30.0),
        (math.nan, 30.0),
        (math.inf, 30.0),
        (0.5, 30.0),
    ],
)
def test_output_fps(src: float, out: float) -> None:
    assert output_fps(src) == pytest.approx(out, abs=1e-9)


def test_fps_fraction() -> None:
    assert media.fps_fraction(30000 / 1001) == Fraction(30000, 1001)
    assert media.fps_fraction(30.0) == Fraction(30)
    assert media.fps_fraction(12.5) == Fraction(25, 2)


# ------------------------------------------------------------------- probing


def test_ffprobe_command_is_locked_down() -> None:
    assert media.ffprobe_command("/jobs/1/raw_output.mp4") == [
        "ffprobe",
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mov,matroska,mpegts,avi",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        "file:/jobs/1/raw_output.mp4",
    ]


def test_input_url_is_absolute_and_literal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert media.input_url("-weird:name|.mp4") == f"file:{tmp_path}/-weird:name|.mp4"


def test_validate_probe_good_mp4() -> None:
    got = validate_probe(probe_json())
    assert got == MediaInfo(
        duration=9.0,
        width=1920,
        height=1080,
        fps=30.0,
        has_audio=True,
        audio_sample_rate=48000,
        audio_channels=2,
        video_codec="h264",
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        audio_codec="aac",
        coded_width=1920,
        coded_height=1080,
        rotation=0,
        sar=(1, 1),
        interlaced=False,
        pix_fmt="yuv420p",
        size_bytes=17611248,
        video_stream=0,
        audio_stream=1,
    )
    assert got.demuxer == "mov"


@pytest.mark.parametrize(
    ("rotation_fields", "rotation", "size"),
    [
        (
            {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]},
            270,
            (1080, 1920),
        ),
        (
            {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 90}]},
            90,
            (1080, 1920),
        ),
        (
            {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 180}]},
            180,
            (1920, 1080),
        ),
        ({"tags": {"rotate": "90"}}, 90, (1080, 1920)),
        ({"tags": {"rotate": "270"}}, 270, (1080, 1920)),
        ({}, 0, (1920, 1080)),
    ],
)
def test_validate_probe_rotation(
    rotation_fields: dict[str, Any], rotation: int, size: tuple[int, int]
) -> None:
    got = validate_probe(probe_json(video_stream(**rotation_fields), audio_stream()))
    assert got.rotation == rotation
    assert (got.width, got.height) == size
    assert (got.coded_width, got.coded_height) == (1920, 1080)


def test_validate_probe_anamorphic_and_interlaced() -> None:
    got = validate_probe(
        probe_json(
            video_stream(
                width=1440,
                height=1080,
                sample_aspect_ratio="4:3",
                field_order="tt",
                avg_frame_rate="0/0",
                r_frame_rate="25/1",
            ),
            format_name="mpegts",
        )
    )
    assert (got.width, got.height, got.sar, got.interlaced, got.fps) == (
        1920,
        1080,
        (4, 3),
        True,
        25.0,
    )
    assert got.has_audio is False and got.audio_sample_rate is None
    assert got.demuxer == "mpegts"


def test_validate_probe_webm_duration_from_tags() -> None:
    v = video_stream(codec_name="vp9", tags={"DURATION": "00:00:06.033000000"})
    del v["duration"]
    a = audio_stream(codec_name="opus", channels=1)
    got = validate_probe(probe_json(v, a, format_name="matroska,webm", duration="6.040000"))
    assert got.duration == pytest.approx(6.033)
    assert (got.video_codec, got.audio_codec, got.audio_channels, got.demuxer) == (
        "vp9",
        "opus",
        1,
        "matroska",
    )


def test_validate_probe_cover_art_is_not_video() -> None:
    cover = video_stream(
        index=0, codec_name="mjpeg", disposition={"attached_pic": 1}, nb_frames="1"
    )
    with pytest.raises(BadInput, match="^audio only$"):
        validate_probe(probe_json(cover, audio_stream(index=1)))
    got = validate_probe(probe_json(cover, audio_stream(index=1), video_stream(index=2)))
    assert (got.video_stream, got.audio_stream) == (2, 1)
    graph = media.filter_graph(got, DEFAULT_LADDER, fps=Fraction(30), thumb_at=2, frame_interval=10)
    assert graph.startswith("[0:2]fps=") and "[0:1]aresample=" in graph


BAD_PROBES: list[tuple[str, dict[str, Any], str]] = [
    ("hls", probe_json(format_name="hls"), "not a video container (hls)"),
    ("concat", probe_json(format_name="concat"), "not a video container (concat)"),
    (
        "mp3",
        probe_json(audio_stream(codec_name="mp3"), format_name="mp3"),
        "not a video container (mp3)",
    ),
    (
        "wav",
        probe_json(audio_stream(codec_name="pcm_s16le"), format_name="wav"),
        "not a video container (wav)",
    ),
    (
        "tty",
        probe_json(video_stream(codec_name="ansi"), format_name="tty"),
        "not a video container (tty)",
    ),
    (
        "gif",
        probe_json(video_stream(codec_name="gif"), format_name="gif"),
        "not a video container (gif)",
    ),
    (
        "png_pipe",
        probe_json(video_stream(codec_name="png", nb_frames="1"), format_name="png_pipe"),
        "a still image (png_pipe), not a video",
    ),
    (
        "image2",
        probe_json(video_stream(codec_name="mjpeg"), format_name="image2"),
        "a still image (image2), not a video",
    ),
    (
        "mjpeg in mov",
        probe_json(video_stream(codec_name="mjpeg", nb_frames="1")),
        "a still image (mjpeg), not a video",
    ),
    ("mixed demuxer list", probe_json(format_name="mov,hls"), "not a video container (mov,hls)"),
    (
        "no format",
        {"streams": [video_stream()], "format": {}},
        "not a readable video file: unknown container",
    ),
    ("audio only", probe_json(audio_stream()), "audio only"),
    (
        "nothing",
        {"streams": [], "format": {"format_name": "matroska,webm", "duration": "3"}},
        "no video stream",
    ),
    (
        "data only",
        probe_json({"codec_type": "data", "codec_name": "bin_data"}, format_name="mpegts"),
        "no video stream",
    ),
    (
        "zero duration",
        probe_json(video_stream(duration="0.000000"), duration="0.000000"),
        "duration 0.0 s is below the minimum 0.1 s",
    ),
    (
        "no duration",
        probe_json(video_stream(duration="N/A"), duration="N/A"),
        "could not read duration",
    ),
    (
        "missing duration",
        probe_json(video_stream(duration=None), duration=None),
        "could not read duration",
    ),
    (
        "too long",
        probe_json(video_stream(duration="700.5"), duration="700.5"),
        "duration 700.5 s exceeds the maximum 600 s",
    ),
    (
        "format longer than limit",
        probe_json(video_stream(duration="9"), duration="5000"),
        "duration 5000.0 s exceeds the maximum 600 s",
    ),
    (
        "too large",
        probe_json(video_stream(width=15360, height=8640)),
        "picture 15360x8640 exceeds the maximum 7680x4320",
    ),
    (
        "portrait too large",
        probe_json(video_stream(width=4320, height=8000)),
        "picture 4320x8000 exceeds the maximum 7680x4320",
    ),
    ("no size", probe_json(video_stream(width=0, height=0)), "could not read the picture size"),
    ("tiny", probe_json(video_stream(width=8, height=8)), "picture 8x8 is too small"),
    (
        "unknown codec",
        probe_json(video_stream(codec_name="none")),
        "unsupported video codec (ffmpeg cannot identify it)",
    ),
    (
        "too many bytes",
        probe_json(size=str(5 * 1024**3)),
        "file is 5369 MB, above the limit of 4295 MB",
    ),
]


@pytest.mark.parametrize(("kind", "probe", "reason"), BAD_PROBES, ids=[b[0] for b in BAD_PROBES])
def test_validate_probe_rejects(kind: str, probe: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadInput) as err:
        validate_probe(copy.deepcopy(probe))
    assert err.value.reason == reason
    assert str(err.value) == reason


def test_validate_probe_custom_limits() -> None:
    limits = Limits(max_duration=5, min_duration=1)
    with pytest.raises(BadInput, match=r"^duration 9\.0 s exceeds the maximum 5 s$"):
        validate_probe(probe_json(), limits)
    short = probe_json(video_stream(duration="0.5"), duration="0.5")
    with pytest.raises(BadInput, match=r"^duration 0\.5 s is below the minimum 1 s$"):
        validate_probe(short, limits)


def test_validate_probe_fps_fallbacks() -> None:
    assert validate_probe(
        probe_json(video_stream(avg_frame_rate="30000/1001"))
    ).fps == pytest.approx(29.97, abs=1e-3)
    assert (
        validate_probe(probe_json(video_stream(avg_frame_rate="0/0", r_frame_rate="90000/1"))).fps
        == 0.0
    )
    assert (
        validate_probe(probe_json(video_stream(avg_frame_rate="0/0", r_frame_rate="50/1"))).fps
        == 50.0
    )


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            "[hls @ 0x55d2bda4e4c0] Format not on whitelist 'mov,matroska,mpegts,avi'\n"
            "file:/up/x.mp4: Invalid argument\n",
            "not a video container (hls)",
        ),
        (
            "[concat @ 0x5571e95964c0] Format not on whitelist 'mov,matroska,mpegts,avi'\n",
            "not a video container (concat)",
        ),
        (
            "[png_pipe @ 0x1] Format not on whitelist 'mov,matroska,mpegts,avi'\n",
            "a still image (png_pipe), not a video",
        ),
        (
            "file:/up/x.mp4: Invalid data found when processing input\n",
            "not a readable video file: Invalid data found when processing input",
        ),
        (
            "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55] moov atom not found\n"
            "file:/up/x.mp4: Invalid data found when processing input\n",
            "not a readable video file: Invalid data found when processing input (moov atom not found)",
        ),
        ("", "not a readable video file"),
    ],
)
def test_probe_failure_reason(stderr: str, reason: str) -> None:
    assert media.probe_failure_reason(stderr, "/up/x.mp4") == reason


# ------------------------------------------------------------ ffmpeg command

FIT_720 = (
    "scale=w='if(gte(dar*720,1280),1280,2*round(720*dar/2))'"
    ":h='if(gte(dar*720,1280),2*round(1280/dar/2),720)'"
    ",pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1"
)


def test_fit_filter_expected_string() -> None:
    assert media.fit_filter(1280, 720) == FIT_720


def test_filter_graph_expected_string() -> None:
    graph = media.filter_graph(
        info(), DEFAULT_LADDER, fps=Fraction(30), thumb_at=2.0, frame_interval=10.0
    )
    parts = graph.split(";")
    assert parts == [
        "[0:0]fps=fps=30/1:start_time=0,trim=end=9,split=4[s0][s1][sthumb][stl]",
        f"[s0]{FIT_720},format=yuv420p[v0]",
        f"[s1]{media.fit_filter(1920, 1080)},format=yuv420p[v1]",
        "[sthumb]select='gte(t,2)*eq(selected_n,0)',split=2[th0][th1]",
        f"[th0]{media.fit_filter(640, 360)}[thumb]",
        f"[th1]{FIT_720}[thumbl]",
        f"[stl]select='gte(t,selected_n*10)',{media.fit_filter(160, 90)}[tl]",
        "[0:1]aresample=48000:async=1:first_pts=0,"
        "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo,apad,atrim=end=9,"
        "asplit=2[a0][a1]",
    ]


def test_filter_graph_variants() -> None:
    silent = media.filter_graph(
        info(has_audio=False, audio_channels=None, audio_sample_rate=None),
        DEFAULT_LADDER,
        fps=Fraction(25),
        thumb_at=0.4,
        frame_interval=5,
    )
    assert silent.split(";")[-1] == "anullsrc=r=48000:cl=stereo,atrim=end=9,asplit=2[a0][a1]"
    assert "[0:a" not in silent
    assert "select='gte(t,0.4)*eq(selected_n,0)'" in silent
    assert "select='gte(t,selected_n*5)'" in silent
    mono = media.filter_graph(
        info(audio_channels=1, audio_sample_rate=44100),
        DEFAULT_LADDER[:1],
        fps=Fraction(30000, 1001),
        thumb_at=2,
        frame_interval=10,
    )
    assert "[0:1]channelmap=map=0-FL|0-FR:channel_layout=stereo,aresample=48000" in mono
    assert "fps=fps=30000/1001:start_time=0" in mono
    assert mono.endswith("asplit=1[a0]")
    interlaced = media.filter_graph(
        info(interlaced=True, duration=6.4),
        DEFAULT_LADDER,
        fps=Fraction(25),
        thumb_at=2,
        frame_interval=10,
    )
    assert interlaced.startswith(
        "[0:0]yadif=mode=send_frame:deint=interlaced,fps=fps=25/1:start_time=0,trim=end=6.4,split=4"
    )


def test_transcode_command_one_run() -> None:
    cmd = transcode_command("/jobs/1/raw_output.mp4", "/work/out", info(), DEFAULT_LADDER)
    assert cmd[:17] == [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "warning",
        "-y",
        "-progress",
        "pipe:1",
        "-nostats",
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
    assert opt(cmd, "-filter_complex") == media.filter_graph(
        info(), DEFAULT_LADDER, fps=Fraction(30), thumb_at=2.0, frame_interval=10.0
    )
    outputs = [a for a in cmd if a.startswith("/work/out/") and not a.endswith(".ts")]
    assert outputs == [
        "/work/out/720p.m3u8",
        "/work/out/1080p.m3u8",
        "/work/out/thumbnail.jpg",
        "/work/out/thumbnail_large.jpg",
        "/work/out/frames/frame_%04d.jpg",
    ]


def test_transcode_command_rendition_options() -> None:
    cmd = transcode_command("/in.mp4", "/work/out", info(), DEFAULT_LADDER)
    r720 = output_args(cmd, "/work/out/720p.m3u8")
    assert r720 == [
        "-map",
        "[v0]",
        "-map",
        "[a0]",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "main",
        "-level:v",
        "3.1",
        "-b:v",
        "1500000",
        "-maxrate",
        "2250000",
        "-bufsize",
        "3000000",
        "-g",
        "120",
        "-keyint_min",
        "120",
        "-sc_threshold",
        "0",
        "-flags",
        "+cgop",
        "-forced-idr",
        "1",
        "-force_key_frames",
        "expr:gte(t,n_forced*4)",
        "-c:a",
        "aac",
        "-b:a",
        "128000",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-f",
        "hls",
        "-hls_time",
        "4",
        "-hls_playlist_type",
        "vod",
        "-hls_flags",
        "independent_segments",
        "-hls_segment_type",
        "mpegts",
        "-start_number",
        "1",
        "-hls_segment_filename",
        "/work/out/720p_%04d.ts",
    ]
    r1080 = output_args(cmd, "/work/out/1080p.m3u8")
    assert opt(r1080, "-profile:v") == "high" and opt(r1080, "-level:v") == "4.0"
    assert opt(r1080, "-map") == "[v1]" and opt(r1080, "-b:v") == "4000000"
    assert opt(r1080, "-maxrate") == "6000000" and opt(r1080, "-bufsize") == "8000000"
    assert opt(r1080, "-hls_segment_filename") == "/work/out/1080p_%04d.ts"
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
    cmd = transcode_command("/in.mp4", "/work/out", info(fps=fps), DEFAULT_LADDER)
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "-level:v"] == list(levels)
    assert {cmd[i + 1] for i, a in enumerate(cmd) if a == "-g"} == {str(gop)}
    assert {cmd[i + 1] for i, a in enumerate(cmd) if a == "-keyint_min"} == {str(gop)}


def test_transcode_command_containers_and_options() -> None:
    mkv = transcode_command(
        "/in.webm",
        "/o",
        info(format_name="matroska,webm"),
        DEFAULT_LADDER,
        segment_seconds=6,
        thumb_at=1.5,
        frame_interval=2,
        preset="fast",
        progress="pipe:3",
    )
    assert opt(mkv, "-f") == "matroska"
    assert opt(mkv, "-progress") == "pipe:3"
    assert (
        opt(mkv, "-hls_time") == "6" and opt(mkv, "-force_key_frames") == "expr:gte(t,n_forced*6)"
    )
    assert opt(mkv, "-preset") == "fast" and opt(mkv, "-g") == "180"
    assert "select='gte(t,1.5)*eq(selected_n,0)'" in opt(mkv, "-filter_complex")
    assert "select='gte(t,selected_n*2)'" in opt(mkv, "-filter_complex")
    with pytest.raises(BadInput):
        transcode_command("/in", "/o", info(format_name="hls"), DEFAULT_LADDER)
    with pytest.raises(ValueError):
        transcode_command("/in", "/o", info(), [])
    with pytest.raises(ValueError):
        transcode_command("/in", "/o", info(), [DEFAULT_LADDER[0], DEFAULT_LADDER[0]])


def test_thumbnail_time_and_timeline_times() -> None:
    assert media.thumbnail_time(9) == 2.0
    assert media.thumbnail_time(4) == 2.0
    assert media.thumbnail_time(3) == 1.5
    assert media.thumbnail_time(0.8) == 0.4
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
    blocks = media.parse_progress_lines(PROGRESS.splitlines())
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


# ----------------------------------------------------------------- playlists

PLAYLIST = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXTINF:4.000000,
720p_0001.ts
#EXTINF:4.000000,
720p_0002.ts
#EXTINF:0.800000,
720p_0003.ts
#EXT-X-ENDLIST
"""


# ----------------------------------------------------------------- storyboard


def test_vtt_time() -> None:
    assert vtt_time(0) == "00:00:00.000"
    assert vtt_time(10) == "00:00:10.000"
    assert vtt_time(3725.0006) == "01:02:05.001"
    assert vtt_time(59.9999) == "00:01:00.000"


def test_storyboard_cues_and_vtt() -> None:
    cues = storyboard_cues(3, interval=10, duration=25.5)
    assert cues == [
        StoryboardCue(0, 10, "storyboard.jpg", 0, 0, 160, 90),
        StoryboardCue(10, 20, "storyboard.jpg", 160, 0, 160, 90),
        StoryboardCue(20, 25.5, "storyboard.jpg", 320, 0, 160, 90),
    ]
    assert storyboard_vtt(cues) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:10.000\nstoryboard.jpg#xywh=0,0,160,90\n\n"
        "00:00:10.000 --> 00:00:20.000\nstoryboard.jpg#xywh=160,0,160,90\n\n"
        "00:00:20.000 --> 00:00:25.500\nstoryboard.jpg#xywh=320,0,160,90\n"
    )
    # a frame past the end (rounding) is dropped; the last kept cue ends at the duration
    assert storyboard_cues(3, interval=10, duration=20)[-1] == StoryboardCue(
        10, 20, "storyboard.jpg", 160, 0, 160, 90
    )
    assert storyboard_cues(0, interval=10, duration=5) == []
    assert storyboard_vtt([]) == "WEBVTT\n"


def test_storyboard_cues_wrap_rows_and_sheets() -> None:
    cues = storyboard_cues(105, interval=1, duration=105, grid=(10, 10))
    assert cues[9] == StoryboardCue(9, 10, "storyboard.jpg", 1440, 0, 160, 90)
    assert cues[10] == StoryboardCue(10, 11, "storyboard.jpg", 0, 90, 160, 90)
    assert cues[99] == StoryboardCue(99, 100, "storyboard.jpg", 1440, 810, 160, 90)
    assert cues[100] == StoryboardCue(100, 101, "storyboard_2.jpg", 0, 0, 160, 90)
    assert cues[104].end == 105


def test_build_storyboard_writes_sheets(tmp_path: Path) -> None:
    frames = []
    for i in range(103):
        p = tmp_path / f"frame_{i + 1:04d}.jpg"
        Image.new("RGB", (160, 90), (i * 2, 255 - i * 2, 0)).save(p)
        frames.append(p)
    odd = tmp_path / "odd.jpg"  # a wrong-sized frame is padded into its tile
    Image.new("RGB", (100, 100), "white").save(odd)
    frames[5] = odd
    cues = build_storyboard(frames, tmp_path, interval=10, duration=1025)
    assert len(cues) == 103 and cues[-1].end == 1025
    with Image.open(tmp_path / "storyboard.jpg") as sheet:
        assert sheet.size == (1600, 900)
        px = sheet.convert("RGB").getpixel((cues[1].x + 80, cues[1].y + 45))
        assert abs(px[0] - 2) < 12 and abs(px[1] - 253) < 12
    with Image.open(tmp_path / "storyboard_2.jpg") as sheet2:
        assert sheet2.size == (480, 90)
    assert {c.sheet for c in cues} == {"storyboard.jpg", "storyboard_2.jpg"}


# ------------------------------------------------------- ffmpeg failure triage


def _log(*lines: str) -> Any:
    from workers.ffmpeg import _BoundedLog

    log = _BoundedLog(head=2, tail=3)
    for ln in lines:
        log.add(ln)
    return log


def test_bounded_log_keeps_head_and_tail() -> None:
    log = _log(*(f"line {i}" for i in range(10)))
    assert log.text() == "line 0\nline 1\n... 5 lines omitted ...\nline 7\nline 8\nline 9\n"
    assert log.last(2) == ["line 8", "line 9"]


def test_failure_triage() -> None:
    from workers.ffmpeg import TranscodeFailed, _failure

    bad = _failure(
        1,
        _log(
            "[h264 @ 0x1] error while decoding MB 3 4",
            "file:/in.mp4: Invalid data found when processing input",
        ),
    )
    assert isinstance(bad, BadInput)
    assert (
        bad.reason
        == "the video could not be decoded: file:/in.mp4: Invalid data found when processing input"
    )
    disk = _failure(
        1,
        _log(
            "[hls @ 0x1] Invalid data found when processing input",
            "/out/720p_0003.ts: No space left on device",
        ),
    )
    assert isinstance(disk, TranscodeFailed) and "No space left on device" in disk.reason
    killed = _failure(-9, _log("frame=1"))
    assert isinstance(killed, TranscodeFailed) and killed.reason.startswith(
        "ffmpeg killed by signal 9"
    )
    other = _failure(187, _log("Conversion failed!"))
    assert isinstance(other, TranscodeFailed)
    assert (
        other.reason == "ffmpeg exited with 187: Conversion failed!"
        and other.log_tail == "Conversion failed!"
    )
