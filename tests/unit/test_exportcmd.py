"""The export job's ffmpeg commands, against the argument lists they must be, and what it
checks of the MP4 it wrote (ffprobe's JSON, the top-level boxes)."""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from pathlib import Path

import pytest

from core.exportplan import Cut, SourceClip, plan_export
from core.playlists import Rendition
from workers.jobs.export import ExportFailed, top_level_boxes
from workers.media import encoding, exportcmd
from workers.media.encoding import DEFAULT_RUNGS

RUNG_720 = DEFAULT_RUNGS[0]


@pytest.mark.parametrize(
    "fps,grid",
    [(Fraction(50), 1800), (Fraction(30), 3000), (Fraction(30000, 1001), 3003), (60, 1500)]
    + [(Fraction(60000, 1001), 1501), (Fraction(24), 3750)],
)
def test_dts_grid(fps, grid):
    assert exportcmd.dts_grid(Fraction(fps)) == grid


def test_h264_metadata():
    assert exportcmd.h264_metadata(32, Fraction(50)) == (
        "h264_metadata=level=3.2:tick_rate=100/1:fixed_frame_rate_flag=0"
    )
    assert exportcmd.h264_metadata(40, Fraction(30000, 1001)) == (
        "h264_metadata=level=4.0:tick_rate=60000/1001:fixed_frame_rate_flag=0"
    )


def test_remux_command():
    assert exportcmd.remux_command("/tmp/x/full_720p.mp4", level=31, max_fps=Fraction(30)) == [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "warning",
        "-y",
        "-protocol_whitelist",
        "pipe",
        "-f",
        "mpegts",
        "-i",
        "pipe:0",
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-c",
        "copy",
        "-bsf:v",
        "h264_metadata=level=3.1:tick_rate=60/1:fixed_frame_rate_flag=0",
        "-bsf:a",
        "aac_adtstoasc",
        "-copyts",
        "-output_ts_offset",
        "-10",
        "-max_muxing_queue_size",
        "4096",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-tag:v",
        "avc1",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        "file:/tmp/x/full_720p.mp4",
    ]


def test_cut_command_reencodes_with_the_rungs_settings():
    cmd = exportcmd.cut_command(
        "/w/cut_in.ts",
        "/w/cut_out.ts",
        rung=RUNG_720,
        fps=Fraction(24),
        cut=Cut(55, 96),
        first_pts=133_500,  # 1.483333 s
    )
    start, end = 133_500 / 90_000 + 55 / 24, 133_500 / 90_000 + 96 / 24
    assert cmd == [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "warning",
        "-y",
        "-protocol_whitelist",
        "file",
        "-copyts",
        "-f",
        "mpegts",
        "-i",
        "file:/w/cut_in.ts",
        "-filter_complex",
        f"[0:v:0]trim=start_frame=55:end_frame=96,setpts=PTS-{start:.6f}/TB,"
        # the colour chain of every output, for a BT.709 rendition: tags, no pixel changed
        "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv,"
        "format=yuv420p[v];"
        f"[0:a:0]atrim=start={start:.6f}:end={end:.6f},asetpts=PTS-{start:.6f}/TB[a]",
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-map_metadata",
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
        "41",
        "-keyint_min",
        "41",
        "-sc_threshold",
        "0",
        "-flags",
        "+cgop",
        "-forced-idr",
        "1",
        *("-color_primaries", "bt709", "-color_trc", "bt709"),  # the renditions' VUI
        *("-colorspace", "bt709", "-color_range", "tv"),
        "-c:a",
        "aac",
        "-b:a",
        "128000",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-f",
        "mpegts",
        "file:/w/cut_out.ts",
    ]
    assert f"{start:.6f}" == "3.775000"


def test_cut_command_takes_the_level_of_the_clips_rate():
    cmd = exportcmd.cut_command(
        "/a", "/b", rung=RUNG_720, fps=Fraction(50), cut=Cut(0, 10), first_pts=0
    )
    assert cmd[cmd.index("-level:v") + 1] == "3.2"  # 720p50 needs 3.2 (H.264 Table A-1)


def test_fit_command_reencodes_the_picture_into_the_rungs_frame_and_copies_the_sound():
    cmd = exportcmd.fit_command(
        "/w/cut_in.ts", "/w/cut_out.ts", rung=RUNG_720, fps=Fraction(30), gop=120
    )
    cut = exportcmd.cut_command(
        "/w/cut_in.ts", "/w/cut_out.ts", rung=RUNG_720, fps=Fraction(30), cut=Cut(0, 1), first_pts=0
    )
    assert cmd[:13] == cut[:13]  # the segment read as for a cut, its timestamps kept
    assert cmd[13:16] == [
        "-filter_complex",
        "[0:v:0]setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv,"
        "format=yuv420p,"
        # the transcoder's fit: scaled by the display aspect, padded centred, square pixels
        "scale=w='if(gte(dar*720,1280),1280,2*round(720*dar/2))'"
        ":h='if(gte(dar*720,1280),2*round(1280/dar/2),720)'"
        ",pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1[v]",
        "-map",
    ]
    assert cmd[16:20] == ["[v]", "-map", "0:a:0", "-map_metadata"]
    video = cmd[cmd.index("-c:v") : cmd.index("-fps_mode:v")]
    assert video == encoding.video_encoder_args(RUNG_720, 30.0, gop=120, preset="veryfast")
    assert cmd[cmd.index("-fps_mode:v") :] == [
        "-fps_mode:v",
        "passthrough",
        "-enc_time_base:v",
        "-1",
        "-c:a",
        "copy",
        "-f",
        "mpegts",
        "file:/w/cut_out.ts",
    ]


def test_a_fit_cut_scales_after_the_colour_chain():
    cmd = exportcmd.cut_command(
        "/a", "/b", rung=RUNG_720, fps=Fraction(24), cut=Cut(0, 10), first_pts=0, fit=True
    )
    graph = cmd[cmd.index("-filter_complex") + 1]
    assert "format=yuv420p,scale=w=" in graph and ",setsar=1[v];" in graph


def test_export_level_covers_the_reencodes():
    def plan(fps: float, fit: bool):
        clip = SourceClip(
            "seg_0000000000000001",
            1,
            "usr_0123456789abcdef",
            Rendition("720p", 640, 480, fps, "avc1.4d401e", (4.0,), (100,), 1, 1),
            fit,
        )
        return plan_export([clip], "720p")

    assert exportcmd.export_level(plan(30.0, False), RUNG_720) == 30  # the copy's own
    assert exportcmd.export_level(plan(30.0, True), RUNG_720) == 31  # 720p30
    assert exportcmd.export_level(plan(50.0, True), RUNG_720) == 32  # 720p50


def test_check_command_probes_the_mp4_with_the_mov_demuxer_only():
    assert exportcmd.check_command("/w/full_720p.mp4") == [
        "ffprobe",
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "mov",
        "-f",
        "mov",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        "file:/w/full_720p.mp4",
    ]


def test_written_reads_ffprobes_json():
    probe = {
        "streams": [{"codec_name": "h264"}, {"codec_name": "aac"}],
        "format": {"duration": "12.345000"},
    }
    got = exportcmd.written(probe, ["ftyp", "moov", "free", "mdat"])
    assert got == exportcmd.Written(("ftyp", "moov", "free", "mdat"), ("h264", "aac"), 12.345)
    assert got.progressive
    assert not exportcmd.written(probe, ["ftyp", "free", "mdat", "moov"]).progressive
    assert not exportcmd.written(probe, ["ftyp", "mdat"]).progressive
    assert not exportcmd.written(probe, ["ftyp", "moov"]).progressive
    bare = exportcmd.written({}, [])
    assert bare.codecs == () and math.isnan(bare.duration)


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_top_level_boxes_reads_headers_only(tmp_path: Path):
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 5) + b"abcde"  # a 64-bit size
    path = tmp_path / "a.mp4"
    path.write_bytes(box(b"ftyp", b"isom") + box(b"moov", b"x" * 20) + box(b"free") + large)
    assert top_level_boxes(path) == ["ftyp", "moov", "free", "mdat"]
    path.write_bytes(box(b"ftyp") + struct.pack(">I4s", 0, b"mdat") + b"to the end")
    assert top_level_boxes(path) == ["ftyp", "mdat"]  # size 0: the last box


@pytest.mark.parametrize(
    "data",
    [box(b"ftyp") + b"\x00\x00\x00", box(b"ftyp") + struct.pack(">I4s", 4, b"moov")],
    ids=["cut header", "box under 8 bytes"],
)
def test_top_level_boxes_refuses_a_malformed_file(tmp_path: Path, data: bytes):
    path = tmp_path / "bad.mp4"
    path.write_bytes(data)
    with pytest.raises(ExportFailed):
        top_level_boxes(path)
