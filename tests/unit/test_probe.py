"""Probing an upload: the locked-down ffprobe command, validation of its JSON, and the
readable reasons of a failed probe."""

from __future__ import annotations

import copy
import dataclasses
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from workers.media.colour import Colour, DolbyVision
from workers.media.encoding import DEFAULT_RUNGS, filter_graph, first_frame_command
from workers.media.probe import (
    BadInput,
    Limits,
    MediaInfo,
    bit_depth,
    check_first_frame,
    counted_frames,
    display_matrix,
    ffprobe_command,
    first_frame_colour,
    frame_count_command,
    input_url,
    needs_frame_count,
    orientation,
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


def _matrix(a: int, b: int, c: int, d: int) -> str:
    """A display matrix as ffprobe dumps it (16.16 fixed point, w in 2.30)."""
    one = 65536
    rows = [(a * one, b * one, 0), (c * one, d * one, 0), (0, 0, 1 << 30)]
    return "\n" + "".join(f"{i:08d}: {x:12d} {y:12d} {z:12d}\n" for i, (x, y, z) in enumerate(rows))


def _display(matrix: str, rotation: float) -> dict[str, Any]:
    side = {"side_data_type": "Display Matrix", "displaymatrix": matrix, "rotation": rotation}
    return {"side_data_list": [side]}


@pytest.mark.parametrize(
    ("rotation_fields", "rotation", "mirrored", "size"),
    [
        # libavutil's rotation is counterclockwise: -90 is a clockwise quarter turn
        (
            {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]},
            90,
            False,
            (1080, 1920),
        ),
        (
            {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 90}]},
            270,
            False,
            (1080, 1920),
        ),
        (
            {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 180}]},
            180,
            False,
            (1920, 1080),
        ),
        # the full matrix, when ffprobe dumps it, says mirrors too (ISO/IEC 14496-12 tkhd)
        (_display(_matrix(0, 1, -1, 0), -90), 90, False, (1080, 1920)),  # an upright iPhone
        (_display(_matrix(0, -1, 1, 0), 90), 270, False, (1080, 1920)),
        (_display(_matrix(-1, 0, 0, -1), 180), 180, False, (1920, 1080)),
        (_display(_matrix(-1, 0, 0, 1), 180), 0, True, (1920, 1080)),  # a mirrored selfie
        (_display(_matrix(1, 0, 0, -1), 0), 180, True, (1920, 1080)),  # upside down mirror
        (_display(_matrix(0, 1, 1, 0), -90), 270, True, (1080, 1920)),  # transposed
        (_display(_matrix(0, -1, -1, 0), 90), 90, True, (1080, 1920)),
        ({"tags": {"rotate": "90"}}, 90, False, (1080, 1920)),
        ({"tags": {"rotate": "270"}}, 270, False, (1080, 1920)),
        ({}, 0, False, (1920, 1080)),
    ],
)
def test_validate_probe_orientation(
    rotation_fields: dict[str, Any], rotation: int, mirrored: bool, size: tuple[int, int]
) -> None:
    got = validate_probe(probe_json(video_stream(**rotation_fields), audio_stream()))
    assert (got.rotation, got.mirrored) == (rotation, mirrored)
    assert (got.width, got.height) == size
    assert (got.coded_width, got.coded_height) == (1920, 1080)


def test_a_display_matrix_turned_by_another_angle_is_refused() -> None:
    one = 65536
    c, s = round(math.cos(math.radians(30)) * one), round(math.sin(math.radians(30)) * one)
    dump = f"\n00000000: {c} {s} 0\n00000001: {-s} {c} 0\n00000002: 0 0 1073741824\n"
    assert display_matrix(dump) == (c, s, 0, -s, c, 0, 0, 0, 1 << 30)
    # named as ffprobe names it (counterclockwise)
    with pytest.raises(BadInput, match="display rotation of -30 degrees is not a multiple of 90"):
        validate_probe(probe_json(video_stream(**_display(dump, -30)), audio_stream()))


def test_a_degenerate_display_matrix_is_refused() -> None:
    with pytest.raises(BadInput, match="degenerate"):
        orientation((0, 0, 0, 0, 0, 0, 0, 0, 1 << 30))
    assert display_matrix("not a matrix") is None


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
    assert validate_probe(probe_json(video, audio_stream())).rotation == 90


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


# ------------------------------------------------------------------- colour

HDR10_SIDE_DATA = [
    {
        "side_data_type": "Mastering display metadata",
        "red_x": "34000/50000",
        "max_luminance": "10000000/10000",
        "min_luminance": "50/10000",
    },
    {"side_data_type": "Content light level metadata", "max_content": 1000, "max_average": 400},
]


def test_the_probe_reads_the_colour_of_the_stream() -> None:
    sdr = validate_probe(probe_json())
    assert sdr.colour == Colour()  # untagged 8-bit
    phone = video_stream(
        codec_name="hevc",
        pix_fmt="yuv420p10le",
        color_range="tv",
        color_space="bt2020nc",
        color_transfer="smpte2084",
        color_primaries="bt2020",
        side_data_list=HDR10_SIDE_DATA,
    )
    got = validate_probe(probe_json(phone, audio_stream())).colour
    assert got == Colour(
        transfer="smpte2084",
        primaries="bt2020",
        matrix="bt2020nc",
        bit_depth=10,
        mastering_peak=1000.0,
        max_cll=1000,
        max_fall=400,
    )
    assert got.dynamic == "pq" and got.peak == 1000.0
    jpeg_range = video_stream(pix_fmt="yuvj420p", color_space="unknown", color_transfer="reserved")
    assert validate_probe(probe_json(jpeg_range, audio_stream())).colour == Colour(full_range=True)
    assert bit_depth({"bits_per_raw_sample": "12", "pix_fmt": "yuv422p12le"}) == 12
    assert bit_depth({"pix_fmt": "p010le"}) == 10
    assert bit_depth({"pix_fmt": "yuv420p"}) == 8


def dovi(profile: int, compatibility: int, bl: int = 1) -> dict[str, Any]:
    return {
        "side_data_type": "DOVI configuration record",
        "dv_version_major": 1,
        "dv_version_minor": 0,
        "dv_profile": profile,
        "dv_level": 5,
        "rpu_present_flag": 1,
        "el_present_flag": 0,
        "bl_present_flag": bl,
        "dv_bl_signal_compatibility_id": compatibility,
    }


def test_dolby_vision_8_4_plays_its_hlg_base_layer_and_profile_5_is_refused() -> None:
    iphone = video_stream(
        codec_name="hevc",
        pix_fmt="yuv420p10le",
        color_transfer="arib-std-b67",
        color_primaries="bt2020",
        color_space="bt2020nc",
        side_data_list=[_display(_matrix(0, 1, -1, 0), -90)["side_data_list"][0], dovi(8, 4)],
    )
    got = validate_probe(probe_json(iphone, audio_stream()))
    assert got.colour.dovi == DolbyVision(8, 5, 4, True, True, False)
    assert got.colour.dynamic == "hlg" and got.rotation == 90
    profile5 = video_stream(codec_name="hevc", pix_fmt="yuv420p10le", side_data_list=[dovi(5, 0)])
    with pytest.raises(BadInput, match=r"^Dolby Vision profile 5 without a base layer"):
        validate_probe(probe_json(profile5, audio_stream()))


SHOWINFO_HDR = (
    "[Parsed_showinfo_0 @ 0x5561] config in time_base: 1/15360, frame_rate: 30/1\n"
    "[Parsed_showinfo_0 @ 0x5561] n:   0 pts:      0 pts_time:0       pos:       44 "
    "fmt:yuv420p10le sar:1/1 s:1920x1080 i:P iskey:1 type:I checksum:743233F4\n"
    "[Parsed_showinfo_0 @ 0x5561]   side data - mastering display: has_primaries:1 "
    "has_luminance:1 r(0.6800,0.3200) g(0.2650,0.6900) b(0.1500 0.0600) wp(0.3127, 0.3290) "
    "min_luminance=0.005000, max_luminance=4000.000000\n"
    "[Parsed_showinfo_0 @ 0x5561]   side data - Content Light Level information: "
    "MaxCLL=1200, MaxFALL=300\n"
    "[Parsed_showinfo_0 @ 0x5561] color_range:tv color_space:bt2020nc color_primaries:bt2020 "
    "color_trc:smpte2084\n"
)


def test_the_first_picture_completes_the_colour() -> None:
    # the HEVC SEI of an HDR10 stream whose container repeats none of it
    bare = _declared(1920, 1080)
    got = first_frame_colour(SHOWINFO_HDR, bare).colour
    assert (got.transfer, got.primaries, got.matrix, got.full_range) == (
        "smpte2084",
        "bt2020",
        "bt2020nc",
        False,
    )
    assert (got.mastering_peak, got.max_cll, got.max_fall) == (4000.0, 1200, 300)
    # what the container said stands, except the transfer the bitstream overrides (an
    # HEVC alternative transfer characteristics SEI: HLG inside a BT.2020 SDR stream)
    said = dataclasses.replace(
        bare, colour=Colour("bt2020-10", "bt2020", "bt2020nc", mastering_peak=1000.0)
    )
    hlg = SHOWINFO_HDR.replace("color_trc:smpte2084", "color_trc:arib-std-b67")
    got = first_frame_colour(hlg, said).colour
    assert (got.transfer, got.mastering_peak, got.max_cll) == ("arib-std-b67", 1000.0, 1200)
    # a picture that says nothing changes nothing
    assert first_frame_colour(SHOWINFO.format("1920x1080"), bare) is bare


# --------------------------------------------------------------- frame rate


@pytest.mark.parametrize(
    ("rates", "frames", "fps", "vfr"),
    [
        (("30/1", "30/1"), None, 30.0, False),
        (("30000/1001", "30000/1001"), None, 30000 / 1001, False),
        # a phone's MP4: timestamps on a 600 Hz clock, jittered, a frame dropped now and then
        (("600/1", "33300/1189"), None, 33300 / 1189, True),
        # Matroska/WebM from a browser or phone: a 1000 "fps" time base, no mean rate
        (("1000/1", "0/0"), 270, 30.0, True),
        (("90000/1", "0/0"), 250, 250 / 9, True),  # MPEG-TS likewise
        (("1000/1", "0/0"), None, 0.0, False),  # nothing counted: unknown, never 1000
        (("25/1", "0/0"), None, 25.0, False),
    ],
)
def test_frame_rate(rates: tuple[str, str], frames: int | None, fps: float, vfr: bool) -> None:
    video = video_stream(r_frame_rate=rates[0], avg_frame_rate=rates[1])
    got = validate_probe(probe_json(video, audio_stream()), frames=frames)
    assert got.fps == pytest.approx(fps)
    assert got.vfr == vfr


def test_frames_are_counted_only_where_the_container_gives_no_mean_rate() -> None:
    assert needs_frame_count(probe_json()) is None
    mkv = probe_json(
        audio_stream(index=0), video_stream(index=1, r_frame_rate="1000/1", avg_frame_rate="0/0")
    )
    assert needs_frame_count(mkv) == 1
    assert frame_count_command("/up/x.mkv", 1) == [
        "ffprobe",
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mov,matroska,mpegts,avi",
        "-count_packets",
        "-select_streams",
        "1",
        "-show_entries",
        "stream=nb_read_packets",
        "-print_format",
        "json",
        "-i",
        "file:/up/x.mkv",
    ]
    assert counted_frames({"streams": [{"nb_read_packets": "1799"}]}) == 1799
    assert counted_frames({}) is None
    # the count keeps a 1080p clip within the pixel rate its real rate has
    big = video_stream(width=1920, height=1080, r_frame_rate="1000/1", avg_frame_rate="0/0")
    assert validate_probe(probe_json(big, audio_stream()), frames=270).fps == 30.0
