"""Real ffmpeg on lavfi clips: one run per clip -> aligned HLS ladder, thumbnails, storyboard.

Also: hostile or broken uploads are rejected by `probe` with a readable reason and without
ffprobe opening anything they reference; ffmpeg dies on cancel, timeout and worker death.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import m3u8
import pytest
from PIL import Image

from core.framerate import exact_rate
from tests.helpers.clips import (
    FFPROBE,
    HAVE_FFMPEG,
    NO_FFMPEG_REASON,
    SMALL_PAIR,
    make_audio_only,
    make_clip,
    make_png,
)
from workers.jobs.transcode import clip_renditions, storyboard_document
from workers.media import ffmpeg
from workers.media.encoding import DEFAULT_RUNGS, Rung, ladder_of, rung_codecs, timeline_times
from workers.media.h264 import codecs_string
from workers.media.probe import BadInput, MediaInfo, input_url, parse_rate

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]

ROOT = Path(__file__).resolve().parents[2]
# Two small rungs for the cases about the source (orientation, rate, audio, container):
# the same filters and muxers at a fraction of the cost. The 1080p30 and 720p60 cases
# encode the full ladder: its frames, profiles and levels are checked there, on a clip
# of FULL_LADDER_SECONDS.
SMALL = ladder_of(SMALL_PAIR)
# Two segments, a whole 4 s one and a 0.5 s tail: every check of the segmenting still
# has a boundary to look at (same durations and an IDR at the same time in both rungs,
# the 4 s target), at a fraction of the cost of encoding 720p and 1080p (at 60 fps).
FULL_LADDER_SECONDS = 4.5


@dataclass(frozen=True)
class Case:
    id: str
    clip: dict[str, Any]
    display: tuple[int, int]  # expected display size of the source
    fps: float  # expected output frame rate
    duration: float
    ladder: tuple[Rung, ...] = SMALL


CASES = [
    Case(
        "1080p30_stereo",
        dict(width=1920, height=1080, fps=30, duration=FULL_LADDER_SECONDS, audio="stereo48"),
        (1920, 1080),
        30,
        FULL_LADDER_SECONDS,
        DEFAULT_RUNGS,
    ),
    Case("portrait_720x1280", dict(width=720, height=1280, fps=30, duration=6), (720, 1280), 30, 6),
    Case(
        "no_audio_25fps",
        dict(width=1280, height=720, fps=25, duration=6, audio=None),
        (1280, 720),
        25,
        6,
    ),
    Case(
        "720p60",
        dict(width=1280, height=720, fps=60, duration=FULL_LADDER_SECONDS),
        (1280, 720),
        60,
        FULL_LADDER_SECONDS,
        DEFAULT_RUNGS,
    ),
    Case(
        "mono44_mov",
        dict(
            width=1280,
            height=720,
            fps=30,
            duration=6,
            audio="mono44",
            container="mov",
            audio_delay=0.3,
        ),
        (1280, 720),
        30,
        6,
    ),
    Case("short_0.8s", dict(width=1280, height=720, fps=30, duration=0.8), (1280, 720), 30, 0.8),
    Case(
        "phone_rotated_mp4",
        dict(width=1280, height=720, fps=30, duration=4, rotate=90),
        (720, 1280),
        30,
        4,
    ),
    Case(
        "anamorphic_mpeg2_ts_5.1",
        dict(
            width=960,
            height=720,
            fps=25,
            duration=4,
            codec="mpeg2video",
            container="ts",
            audio="surround48",
            extra=["-aspect", "16:9"],
        ),
        (1280, 720),
        25,
        4,
    ),
    Case(
        "webm_vp9_opus_ntsc",
        dict(
            width=640,
            height=360,
            fps="30000/1001",
            duration=4,
            codec="libvpx-vp9",
            container="webm",
        ),
        (640, 360),
        30000 / 1001,
        4,
    ),
]


@dataclass
class Result:
    case: Case
    source: Path
    info: MediaInfo
    out: ffmpeg.TranscodeOutput
    progress: list[float] = field(default_factory=list)
    seconds: float = 0.0
    spawned: list[list[str]] = field(default_factory=list)  # argv of every process transcode ran


def ffprobe_json(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-of", "json", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def result(request: pytest.FixtureRequest, clips: Path) -> Result:
    case: Case = request.param
    ext = case.clip.get("container", "mp4")
    src = make_clip(clips / f"{case.id}.{ext}", **case.clip)
    # every character ffmpeg's tee muxer unescapes, in the directory it writes to
    work = clips / f"{case.id} out|i:s'[h]e\\re "
    progress: list[float] = []

    async def on_progress(pct: float) -> None:
        progress.append(pct)

    spawned: list[list[str]] = []

    class CountingPopen(subprocess.Popen):  # every process, whichever way it is started
        def __init__(self, args: Any, *rest: Any, **kw: Any) -> None:
            spawned.append([os.fsdecode(a) for a in args])
            super().__init__(args, *rest, **kw)

    async def run() -> Result:
        info = await ffmpeg.probe(src)
        t0 = time.monotonic()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(subprocess, "Popen", CountingPopen)
            out = await ffmpeg.transcode(
                src,
                work,
                info,
                case.ladder,
                on_progress=on_progress,
                progress_interval=0.2,
                timeout=300,
            )
        return Result(case, src, info, out, progress, time.monotonic() - t0, spawned)

    return asyncio.run(run())


# ------------------------------------------------------------------ ladder


def test_probe_sees_display_size(result: Result) -> None:
    assert (result.info.width, result.info.height) == result.case.display
    assert result.info.duration == pytest.approx(result.case.duration, abs=0.1)


def test_one_ffmpeg_run_wrote_everything(result: Result) -> None:
    out = result.out
    ladder = result.case.ladder
    names = sorted(p.name for p in out.log.parent.iterdir())
    for r in ladder:
        assert f"{r.name}.m3u8" in names
    assert {
        "thumbnail.jpg",
        "thumbnail_large.jpg",
        "storyboard.jpg",
        "transcode_log.txt",
        "frames",
    } <= set(names)
    assert [r.name for r in out.renditions] == [r.name for r in ladder]
    # exactly one process reads the upload: the ffmpeg run that writes every output
    runs = [argv for argv in result.spawned if input_url(result.source) in argv]
    assert len(runs) == 1, f"{len(runs)} processes read the upload: {runs}"
    run = runs[0]
    assert Path(run[0]).name == "ffmpeg"
    work = out.log.parent
    outputs = ["thumbnail.jpg", "thumbnail_large.jpg", "frames/frame_%04d.jpg"]
    assert {str(work / name) for name in outputs} <= set(run)
    # the renditions: one output, the tee muxer, and an HLS muxer behind it per rung
    assert run[run.index("tee") + 1].count("f=hls") == len(ladder)
    # the other processes only read back what it wrote (one segment per rendition)
    others = [argv for argv in result.spawned if argv is not run]
    assert others and all(any(a.startswith(f"file:{work}/") for a in argv) for argv in others)
    log = out.log.read_text()
    assert log.startswith(f"$ {' '.join(run)}\n# exit 0 ")


def test_renditions_have_identical_segments(result: Result) -> None:
    low, high = result.out.renditions
    fps = result.case.fps
    assert len(low.segments) == len(high.segments) >= 1
    assert low.durations == high.durations
    assert all(d == pytest.approx(4.0, abs=1 / fps + 1e-3) for d in low.durations[:-1])
    assert sum(low.durations) == pytest.approx(result.case.duration, abs=1 / fps + 1e-3)
    assert result.out.duration == pytest.approx(sum(low.durations))
    assert all(size > 0 for r in result.out.renditions for size in r.sizes)
    assert [p.stat().st_size for p in high.segments] == list(high.sizes)


def _segment(path: Path) -> dict[str, Any]:
    data = ffprobe_json(
        "-show_entries",
        "stream=codec_type,codec_name,profile,level,width,height,r_frame_rate,sample_rate,channels"
        ":packet=codec_type,pts_time,duration_time,flags",
        str(path),
    )
    first = ffprobe_json(
        "-select_streams",
        "v:0",
        "-read_intervals",
        "%+#1",
        "-show_entries",
        "frame=key_frame,pict_type",
        str(path),
    )
    data["first_frame"] = first["frames"][0]
    return data


def test_every_segment_starts_with_an_idr_at_the_same_time(result: Result) -> None:
    low, high = result.out.renditions
    for s_low, s_high in zip(low.segments, high.segments, strict=True):
        starts = []
        for seg in (s_low, s_high):
            data = _segment(seg)
            video = [p for p in data["packets"] if p["codec_type"] == "video"]
            assert video[0]["flags"].startswith("K"), f"{seg.name} does not start with a keyframe"
            first = data["first_frame"]
            assert (first["key_frame"], first["pict_type"]) == (1, "I"), seg.name
            starts.append(min(float(p["pts_time"]) for p in video))
        assert starts[0] == starts[1], f"{s_low.name}/{s_high.name} start at different times"


def test_output_streams(result: Result) -> None:
    expected_fps = exact_rate(result.case.fps)
    for rung, r in zip(result.case.ladder, result.out.renditions, strict=True):
        for seg in r.segments:
            streams = {s["codec_type"]: s for s in _segment(seg)["streams"]}
            v, a = streams["video"], streams["audio"]
            assert (v["codec_name"], v["width"], v["height"]) == ("h264", rung.width, rung.height)
            assert parse_rate(v["r_frame_rate"]) == pytest.approx(float(expected_fps))
            assert (a["codec_name"], a["profile"], a["sample_rate"], a["channels"]) == (
                "aac",
                "LC",
                "48000",
                2,
            )
        assert (r.width, r.height, r.audio_sample_rate, r.audio_channels) == (
            rung.width,
            rung.height,
            48000,
            2,
        )
        assert r.fps == pytest.approx(float(expected_fps), abs=1e-3)


def test_audio_frames_share_pes_packets(result: Result) -> None:
    """As in a file ffmpeg muxes itself (its -muxdelay): several AAC frames per PES
    packet, not one each, which costs 1.5% of a 720p rendition's bytes in TS headers."""
    segment = result.out.renditions[0].segments[0]
    packets = ffprobe_json(
        "-select_streams", "a", "-show_entries", "packet=pos", "-show_packets", str(segment)
    )["packets"]  # fmt: skip
    pes = [p for p in packets if "pos" in p]  # a PES packet's first frame has its position
    assert len(packets) >= 5 * len(pes), (len(packets), len(pes))


def test_codecs_match_the_real_stream(result: Result) -> None:
    for rung, r in zip(result.case.ladder, result.out.renditions, strict=True):
        v = next(
            s
            for s in ffprobe_json("-show_streams", str(r.segments[-1]))["streams"]
            if s["codec_type"] == "video"
        )
        profile = {"Main": "main", "High": "high"}[v["profile"]]
        assert profile == rung.profile
        assert r.video_codecs == codecs_string(profile, v["level"])
        assert r.video_codecs == rung_codecs(rung, result.case.fps)
        assert r.codecs == r.video_codecs + ",mp4a.40.2"
        assert (r.profile, r.level) == (v["profile"], v["level"])
    if result.case.ladder != DEFAULT_RUNGS:
        return
    if result.case.fps == 60:
        assert [r.video_codecs for r in result.out.renditions] == ["avc1.4d4020", "avc1.64002a"]
    if result.case.fps == 30:
        assert [r.video_codecs for r in result.out.renditions] == ["avc1.4d401f", "avc1.640028"]


def test_audio_covers_exactly_the_video(result: Result) -> None:
    for r in result.out.renditions:
        packets = [p for seg in r.segments for p in _segment(seg)["packets"]]
        spans = {}
        for kind in ("video", "audio"):
            ps = [p for p in packets if p["codec_type"] == kind]
            start = min(float(p["pts_time"]) for p in ps)
            end = max(float(p["pts_time"]) + float(p["duration_time"]) for p in ps)
            spans[kind] = (start, end)
        frame = 1 / result.case.fps
        aac_frame = 1024 / 48000
        assert spans["audio"][0] == pytest.approx(spans["video"][0], abs=aac_frame + 1e-3)
        assert spans["audio"][1] == pytest.approx(spans["video"][1], abs=frame + aac_frame + 1e-3)


def test_playlists_parse_with_m3u8(result: Result) -> None:
    for r in result.out.renditions:
        pl = m3u8.load(str(r.playlist))
        assert pl.playlist_type == "vod" and pl.is_endlist and pl.is_independent_segments
        assert pl.media_sequence == 1
        assert [s.uri for s in pl.segments] == [p.name for p in r.segments]
        assert [s.uri for s in pl.segments][0] == f"{r.name}_0001.ts"
        assert tuple(s.duration for s in pl.segments) == r.durations
        assert all(round(d) <= pl.target_duration for d in r.durations)


def _is_black(px: tuple[int, int, int]) -> bool:
    return max(px) < 24


def test_thumbnails(result: Result) -> None:
    for path, size in (
        (result.out.thumbnail, (640, 360)),
        (result.out.thumbnail_large, (1280, 720)),
    ):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == size
            rgb = im.convert("RGB")
            w, h = size
            edge, centre = rgb.getpixel((2, h // 2)), rgb.getpixel((w // 2, h // 2))
            assert not _is_black(centre)
            portrait = result.case.display[1] > result.case.display[0]
            assert _is_black(edge) == portrait, (
                f"{path.name}: pillarbox {'missing' if portrait else 'unexpected'}"
            )


def test_storyboard(result: Result) -> None:
    out = result.out
    times = timeline_times(out.duration, 10.0)
    assert len(out.frames) == len(times) == len(out.storyboard_cues)
    assert [c.start for c in out.storyboard_cues] == times
    assert out.storyboard_cues[-1].end == out.duration
    # the stored storyboard.vtt: core.playlists' WebVTT of these cues and renditions
    renditions, _ = clip_renditions(out)
    text = storyboard_document("seg_x", out.duration, renditions, out.storyboard_cues).decode()
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> ")
    last = text.rstrip("\n").rsplit("\n\n", 1)[-1]
    assert last.endswith("\nstoryboard.jpg#xywh=0,0,160,90"), last
    end = last.split(" --> ")[1].split("\n")[0]
    h, m, sec = end.split(":")
    assert abs(int(h) * 3600 + int(m) * 60 + float(sec) - out.duration) <= 0.001, (end, out)
    for frame in out.frames:
        with Image.open(frame) as im:
            assert im.size == (160, 90)
    for sheet in out.storyboard_sheets:
        with Image.open(sheet) as im:
            cues = [c for c in out.storyboard_cues if c.sheet == sheet.name]
            assert im.size == (max(c.x + c.w for c in cues), max(c.y + c.h for c in cues))


def test_progress_reported(result: Result) -> None:
    assert result.progress and result.progress[-1] == 100.0
    assert result.progress == sorted(result.progress)
    assert all(0 <= p <= 100 for p in result.progress)


# ------------------------------------------------------------ longer clips


def test_storyboard_of_a_longer_clip(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "long.mp4", width=320, height=180, fps=15, duration=25, audio=None)

    async def run() -> ffmpeg.TranscodeOutput:
        info = await ffmpeg.probe(src)
        small = (Rung("180p", 320, 180, 300_000), Rung("360p", 640, 360, 600_000))
        return await ffmpeg.transcode(src, tmp_path / "out", info, small, frame_interval=10.0)

    out = asyncio.run(run())
    # 320x180@15 fits level 1.2 by MB rate but its VBV max rate (450 kbit/s) needs 1.3;
    # 640x360 is 920 MBs per frame: above 2.1's 792, so 2.2
    assert [r.video_codecs for r in out.renditions] == ["avc1.4d400d", "avc1.4d4016"]
    assert len(out.renditions[0].durations) == 7 and out.renditions[0].durations[
        -1
    ] == pytest.approx(1.0)
    assert [(c.start, c.end, c.x) for c in out.storyboard_cues] == [
        (0, 10, 0),
        (10, 20, 160),
        (20, 25, 320),
    ]
    with Image.open(out.storyboard_sheets[0]) as im:
        assert im.size == (480, 90)


# ------------------------------------------------------------- bad inputs


def _fifo_has_reader(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        assert e.errno == errno.ENXIO
        return False
    os.close(fd)
    return True


@pytest.fixture
def bad_dir(tmp_path: Path) -> Iterator[Path]:
    """Uploads that reference `secret.ts`, a FIFO: whoever opens it blocks and is visible."""
    d = tmp_path / "bad"
    d.mkdir()
    os.mkfifo(d / "secret.ts")
    (d / "hls.mp4").write_text(
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n{d / 'secret.ts'}\n#EXT-X-ENDLIST\n"
    )
    (d / "concat.mp4").write_text("ffconcat version 1.0\nfile secret.ts\nduration 4\n")
    yield d
    assert not _fifo_has_reader(d / "secret.ts")


@pytest.fixture(scope="module")
def real_clip(clips: Path) -> Path:
    return make_clip(clips / "real.mp4", width=640, height=360, fps=30, duration=4)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.mp4", "empty upload"),
        (
            "truncated.mp4",
            "not a readable video file: Invalid data found when processing input (moov atom not found)",
        ),
        (
            "text.mp4",
            "not a readable video file: Invalid data found when processing input (moov atom not found)",
        ),
        ("text.txt", "not a video container (tty)"),
        ("image.png", "a still image (png_pipe), not a video"),
        ("image_as.mp4", "a still image (png_pipe), not a video"),
        ("audio.mp4", "audio only"),
        ("hls.mp4", "not a video container (hls)"),
        ("concat.mp4", "not a video container (concat)"),
        (
            "tilted.mp4",
            "display rotation of 80 degrees is not a multiple of 90: the clip would play "
            "tilted; export it upright",
        ),
    ],
)
def test_probe_rejects_bad_uploads(bad_dir: Path, real_clip: Path, name: str, reason: str) -> None:
    path = bad_dir / name
    if name == "empty.mp4":
        path.write_bytes(b"")
    elif name == "truncated.mp4":  # moov atom at the end (no faststart): the first half is useless
        data = real_clip.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif name.startswith("text"):
        path.write_text("hello, this is not a video\n" * 20)
    elif name in ("image.png", "image_as.mp4"):
        make_png(path)
    elif name == "audio.mp4":
        make_audio_only(path)
    elif name == "tilted.mp4":
        make_clip(path, width=320, height=180, fps=25, duration=1, rotate=80)
    t0 = time.monotonic()
    with pytest.raises(BadInput) as err:
        asyncio.run(ffmpeg.probe(path, timeout=10))
    assert err.value.reason == reason
    assert time.monotonic() - t0 < 8, "probe blocked: it opened the referenced FIFO"


@pytest.mark.parametrize("name", ["hls.mp4", "concat.mp4"])
def test_naive_probe_would_open_referenced_files(bad_dir: Path, name: str) -> None:
    """Control for the FIFO trick: without -format_whitelist, ffprobe does open the reference."""
    proc = subprocess.Popen(
        [
            FFPROBE or "ffprobe",
            "-v",
            "error",
            "-protocol_whitelist",
            "file",
            "-show_format",
            str(bad_dir / name),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _fifo_has_reader(bad_dir / "secret.ts"):
            assert time.monotonic() < deadline, "naive ffprobe never opened the FIFO"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def test_truncated_faststart_upload_is_bad_input(tmp_path: Path) -> None:
    src = make_clip(
        tmp_path / "fs.mp4",
        width=640,
        height=360,
        fps=30,
        duration=8,
        extra=["-movflags", "+faststart"],
    )
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])

    async def run() -> None:
        info = await ffmpeg.probe(cut)  # the index is intact, so probing passes
        assert info.duration == pytest.approx(8.0, abs=0.1)
        # the small rungs: what is checked is the decoded length, not the ladder
        await ffmpeg.transcode(cut, tmp_path / "out", info, SMALL, timeout=120)

    with pytest.raises(BadInput, match=r"ends early \(truncated or damaged upload\)"):
        asyncio.run(run())


# ------------------------------------------------------- process handling


def _ffmpeg_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "stat").read_text()
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"ffmpeg") and marker.encode() in b" ".join(cmdline):
            if ") Z " not in status:
                pids.append(int(entry.name))
    return pids


def _wait_gone(marker: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _ffmpeg_pids(marker):
        assert time.monotonic() < deadline, f"ffmpeg for {marker} still running"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def slow_clip(clips: Path) -> Path:
    """A clip whose transcode to the default ladder (720p and 1080p, 40 s) runs for far
    longer than the tests below wait: the ladder's encodes make it slow, not the
    source's picture, which is small so that the clip itself is quick to make."""
    return make_clip(
        clips / "slow.mp4", width=320, height=180, fps=30, duration=40, audio="stereo48"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find ffmpeg")
def test_cancel_kills_ffmpeg(tmp_path: Path, slow_clip: Path) -> None:
    work = tmp_path / "cancelled"

    async def run() -> None:
        info = await ffmpeg.probe(slow_clip)
        started = asyncio.Event()

        async def on_progress(pct: float) -> None:
            started.set()

        task = asyncio.create_task(
            ffmpeg.transcode(slow_clip, work, info, on_progress=on_progress, progress_interval=0.1)
        )
        await asyncio.wait_for(started.wait(), 30)
        assert _ffmpeg_pids(str(work))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not _ffmpeg_pids(str(work))

    asyncio.run(run())
    assert "# exit None" in (work / "transcode_log.txt").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find ffmpeg")
def test_timeout_and_callback_errors_kill_ffmpeg(tmp_path: Path, slow_clip: Path) -> None:
    async def run() -> None:
        info = await ffmpeg.probe(slow_clip)
        with pytest.raises(ffmpeg.TranscodeFailed, match="did not finish within 1 s"):
            await ffmpeg.transcode(slow_clip, tmp_path / "t", info, timeout=1)
        assert not _ffmpeg_pids(str(tmp_path / "t"))

        async def lease_lost(pct: float) -> None:
            raise RuntimeError("lease lost")

        with pytest.raises(RuntimeError, match="lease lost"):
            await ffmpeg.transcode(slow_clip, tmp_path / "c", info, on_progress=lease_lost)
        assert not _ffmpeg_pids(str(tmp_path / "c"))

    asyncio.run(run())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_ffmpeg_dies_with_its_worker(tmp_path: Path, slow_clip: Path) -> None:
    work = tmp_path / "orphan"
    script = f"""
import asyncio, sys
from workers.jobs.transcode import clip_renditions, storyboard_document
from workers.media import ffmpeg
async def main():
    info = await ffmpeg.probe({str(slow_clip)!r})
    async def on_progress(pct):
        print("running", flush=True)
    await ffmpeg.transcode({str(slow_clip)!r}, {str(work)!r}, info, on_progress=on_progress,
                           progress_interval=0.1)
asyncio.run(main())
"""
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "running", (
            worker.stderr.read() if worker.stderr else ""
        )
        assert _ffmpeg_pids(str(work))
        os.kill(worker.pid, signal.SIGKILL)  # no cleanup code runs in the worker
        worker.wait(10)
        _wait_gone(str(work))
    finally:
        worker.kill()
        worker.wait()
