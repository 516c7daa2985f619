"""Probing an upload: the locked-down ffprobe command, validation of its JSON, and the
readable reasons of a failed probe."""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from workers.media.encoding import DEFAULT_RUNGS, filter_graph, first_frame_command
from workers.media.probe import (
    BadInput,
    Limits,
    MediaInfo,
    check_first_frame,
    ffprobe_command,
    input_url,
    probe_failure_reason,
    validate_probe,
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


# ------------------------------------------------------------------- probing


def test_ffprobe_command_is_locked_down() -> None:
    assert ffprobe_command("/jobs/1/raw_output.mp4") == [
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
    assert input_url("-weird:name|.mp4") == f"file:{tmp_path}/-weird:name|.mp4"


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
    graph = filter_graph(got, DEFAULT_RUNGS, fps=Fraction(30), thumb_at=2, frame_interval=10)
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
    assert probe_failure_reason(stderr, "/up/x.mp4") == reason


@pytest.mark.parametrize("angle", [45, -80, 100.5, 1.0])
def test_a_rotation_that_is_not_a_multiple_of_90_is_refused(angle: float) -> None:
    video = video_stream(side_data_list=[{"side_data_type": "Display Matrix", "rotation": angle}])
    with pytest.raises(BadInput, match=f"display rotation of {angle:g} degrees"):
        validate_probe(probe_json(video, audio_stream()))


def test_a_rotation_within_half_a_degree_of_a_quarter_turn_is_that_turn() -> None:
    video = video_stream(side_data_list=[{"side_data_type": "Display Matrix", "rotation": -89.6}])
    assert validate_probe(probe_json(video, audio_stream())).rotation == 270


def test_the_pixel_rate_is_bounded() -> None:
    eight_k60 = video_stream(width=7680, height=4320, r_frame_rate="60/1", avg_frame_rate="60/1")
    with pytest.raises(BadInput, match=r"7680x4320 at 60 fps is 1991 million pixels per second"):
        validate_probe(probe_json(eight_k60, audio_stream()))
    four_k60 = video_stream(width=3840, height=2160, r_frame_rate="60/1", avg_frame_rate="60/1")
    assert validate_probe(probe_json(four_k60, audio_stream())).width == 3840
    with pytest.raises(BadInput, match="pixels per second"):
        validate_probe(probe_json(four_k60, audio_stream()), Limits(max_pixel_rate=1e8))


# ------------------------------------------------------- first decoded picture


def _declared(width: int, height: int, stream: int = 0) -> MediaInfo:
    return validate_probe(
        probe_json(video_stream(width=width, height=height, index=stream)),
        Limits(max_pixel_rate=1e12),
    )


def test_first_frame_command_decodes_one_key_frame_of_the_video_stream_only() -> None:
    info = _declared(1920, 1080, stream=1)
    cmd = first_frame_command("/up/load.mp4", info)
    assert cmd[cmd.index("-protocol_whitelist") + 1] == "file"
    assert cmd[cmd.index("-f") + 1] == "mov"  # the demuxer the probe found, forced
    # input options before -i: key frames only; output: the first picture, described
    assert cmd.index("-skip_frame") < cmd.index("-i") and "nokey" in cmd
    assert cmd[cmd.index("-i") + 1] == "file:/up/load.mp4"
    assert cmd[cmd.index("-map") + 1] == "0:1"
    assert cmd[cmd.index("-frames:v") + 1] == "1"
    assert cmd[-4:] == ["showinfo", "-f", "null", "-"]


SHOWINFO = (
    "[Parsed_showinfo_0 @ 0x55beb722b200] n:   0 pts:      0 pts_time:0       pos:       48 "
    "fmt:yuv420p sar:1/1 s:{} i:P iskey:1 type:I checksum:EAD758B5\n"
)


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (SHOWINFO.format("1920x1080"), None),
        # a capture starting mid-GOP: errors before its first key frame, then the picture
        (
            "[h264 @ 0x5642] non-existing PPS 0 referenced\n"
            "[h264 @ 0x5642] decode_slice_header error\n" + SHOWINFO.format("1920x1080"),
            None,
        ),
        (
            SHOWINFO.format("64x64"),
            "the stream declares a 1920x1080 picture but its first picture is 64x64: "
            "damaged or crafted",
        ),
        (
            "Input #0, avi, from 'file:/srv/tmp/storyforge-job_x/upload':\n"
            "[rawvideo @ 0x55d1] Invalid buffer size, packet size 6144 < expected frame_size "
            "3110400\nError while decoding stream #0:0: Invalid argument\n",
            "no picture could be decoded at the declared size 1920x1080: Invalid buffer size, "
            "packet size 6144 < expected frame_size 3110400",
        ),
        ("", "no picture could be decoded at the declared size 1920x1080"),
    ],
)
def test_first_picture_must_have_the_declared_size(stderr: str, reason: str | None) -> None:
    info = _declared(1920, 1080)
    if reason is None:
        check_first_frame(stderr, info)
        return
    with pytest.raises(BadInput) as raised:
        check_first_frame(stderr, info)
    assert raised.value.reason == reason
