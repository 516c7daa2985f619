"""Phone footage comes out right (issue 25), on real ffmpeg and generated sources.

Colour: HLG and PQ clips (HEVC Main 10, BT.2020; PQ with HDR10 mastering display and
content light level SEI) and a Dolby Vision 8.4 clip made from the SDR original are
published as 8-bit BT.709, tagged so, with the original's mean luma and saturation
(the issue's bounds), in both stages; the tone curve ffmpeg applies is the one in
`workers.media.colour` and keeps highlight detail; an SD BT.601 clip keeps its colours;
stills are the renditions' colours; Dolby Vision profile 5 is refused. Orientation:
90/180/270 and mirrored display matrices are upright in the renditions, thumbnails,
storyboard and an export. Frame rate: a 60 s variable-rate clip becomes constant rate
with audio in sync at its end; a 1000 fps or 600 Hz time base is never taken for the
rate.

Every source is small (320x180 or smaller, 1-2 s, the VFR clip 160x90) and made once
per module; every transcode runs a one-rung ladder once.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from core.settings import LadderRung, Settings
from origin.playback.moments import Still, grab_command
from tests.helpers.clips import FFMPEG, HAVE_FFMPEG, NO_FFMPEG_REASON
from tests.helpers.colour import (
    MATRICES,
    QUADRANTS,
    add_dolby_vision,
    beep_times,
    flash_times,
    make_bt601,
    make_hdr,
    make_oriented,
    make_sdr,
    make_vfr,
    mean_difference,
    packet_times,
    picture_stats,
    quadrant_colours,
    video_frame,
    video_stream,
)
from tests.helpers.exports import distinct_parameter_sets, wait_export
from tests.helpers.scenes import API_TOKEN, new_scene, upload, wait_done
from workers.media import ffmpeg
from workers.media.colour import Colour, chain, eetf_expression, tone_map_signal
from workers.media.encoding import Rung, filter_graph, fit_filter, fit_scale_filter
from workers.media.probe import BadInput, MediaInfo

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]

RUNG = Rung("180p", 320, 180, 400_000)
BT709 = {
    "pix_fmt": "yuv420p",
    "color_range": "tv",
    "color_space": "bt709",
    "color_transfer": "bt709",
    "color_primaries": "bt709",
}


class Sources:
    """Every source of the module, made on first use and kept; every transcode run once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}
        self._done: dict[str, tuple[MediaInfo, ffmpeg.TranscodeOutput]] = {}
        self.markers: dict[str, list[float]] = {}

    def path(self, name: str) -> Path:
        if name not in self._made:
            self._made[name] = self._make(name, self.root / name)
        return self._made[name]

    def _make(self, name: str, path: Path) -> Path:
        if name == "sdr":
            return make_sdr(path.with_suffix(".mp4"))
        if name in ("hlg", "pq"):
            return make_hdr(path.with_suffix(".mp4"), name)
        if name in ("dv84", "dv5"):
            out = path.with_suffix(".mp4")
            shutil.copy(self.path("hlg"), out)
            profile, compatibility = (8, 4) if name == "dv84" else (5, 0)
            return add_dolby_vision(out, profile, compatibility)
        if name.startswith("bt601"):
            return make_bt601(path.with_suffix(".mp4"), tagged=name == "bt601")
        if name in MATRICES:
            return make_oriented(path.with_suffix(".mp4"), name)
        if name == "vfr60":
            out, self.markers[name] = make_vfr(
                path.with_suffix(".mp4"), seconds=60, markers=(10, 30, 50, 58.5)
            )
            return out
        if name == "vfr_mkv_1000":
            return make_vfr(
                path.with_suffix(".mkv"), seconds=4, container="mkv", timescale=None, drop_every=0
            )[0]
        if name == "vfr_mp4_1000":
            return make_vfr(path.with_suffix(".mp4"), seconds=4, timescale=1000, drop_every=0)[0]
        raise KeyError(name)

    def transcoded(self, name: str, rung: Rung = RUNG) -> tuple[MediaInfo, ffmpeg.TranscodeOutput]:
        if name not in self._done:
            source = self.path(name)
            info = asyncio.run(ffmpeg.probe(source))
            out = asyncio.run(
                ffmpeg.transcode(
                    source, self.root / f"out-{name}", info, (rung,), frame_interval=0.5
                )
            )
            self._done[name] = (info, out)
        return self._done[name]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Sources:
    return Sources(tmp_path_factory.mktemp("colour"))


def tags(path: Path) -> dict[str, Any]:
    stream = video_stream(path)
    return {k: stream.get(k) for k in BT709}


# ------------------------------------------------------------------- colour


@pytest.mark.parametrize("name", ["hlg", "pq", "dv84"])
def test_hdr_renditions_are_bt709_with_the_originals_picture(sources: Sources, name: str) -> None:
    info, out = sources.transcoded(name)
    assert info.colour.dynamic == ("pq" if name == "pq" else "hlg")
    rendition = out.renditions[0]
    assert tags(rendition.segments[0]) == BT709
    luma, sat = picture_stats(list(rendition.segments))
    ref_luma, ref_sat = picture_stats(sources.path("sdr"))
    print(
        f"{name}: luma {luma / ref_luma:.3f}x, saturation {sat / ref_sat:.3f}x of the SDR original"
    )
    assert 0.6 <= luma / ref_luma <= 1.25
    assert sat / ref_sat >= 0.55
    # the stills too: the thumbnail beside the SDR original's
    _, sdr = sources.transcoded("sdr")
    (luma, sat), (ref_luma, ref_sat) = picture_stats(out.thumbnail), picture_stats(sdr.thumbnail)
    assert 0.6 <= luma / ref_luma <= 1.25 and sat / ref_sat >= 0.55, (luma, sat, ref_luma, ref_sat)


def test_the_refinement_runs_the_same_chain(sources: Sources) -> None:
    info, fast = sources.transcoded("pq")
    refined = asyncio.run(
        ffmpeg.encode_renditions(
            sources.path("pq"),
            sources.root / "refined-pq",
            info,
            (RUNG,),
            presets={RUNG.name: "medium"},
            loudness=None,
        )
    )
    assert tags(refined[0].segments[0]) == BT709
    fast_stats = picture_stats(list(fast.renditions[0].segments))
    refined_stats = picture_stats(list(refined[0].segments))
    for a, b in zip(fast_stats, refined_stats, strict=True):
        assert b == pytest.approx(a, rel=0.03)


@pytest.mark.parametrize("name", ["hlg", "pq"])
def test_a_picture_fitted_before_the_tone_curve_looks_the_same(sources: Sources, name: str) -> None:
    # a rung smaller than the source, alone in the graph: the picture is fitted to it
    # before the chain (`picture_chain`), as a 1080p phone clip's first stage is to 720p
    info = asyncio.run(ffmpeg.probe(sources.path(name)))
    small = Rung("90p", 160, 90, 200_000)
    fast = {small.name: "ultrafast"}
    graph = filter_graph(
        info, (small,), fps=Fraction(30), thumb_at=0, frame_interval=1, stills=False, presets=fast
    )
    assert f"{fit_scale_filter(160, 90, 'bilinear', zimg=True)},format=yuv420p10le," in graph
    fitted = asyncio.run(
        ffmpeg.encode_renditions(
            sources.path(name),
            sources.root / f"fitted-{name}",
            info,
            (small,),
            presets=fast,
            loudness=None,
        )
    )
    assert tags(fitted[0].segments[0]) == BT709
    # the other order, lossless: the whole picture through the chain, then fitted
    after = sources.root / f"fitted-after-{name}.mkv"
    picture = ",".join([*chain(info.colour, 320, 180), fit_filter(160, 90, "bilinear")])
    subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-i", str(sources.path(name))]
        + ["-vf", picture, "-c:v", "ffv1", str(after)],
        check=True,
        timeout=60,
    )
    (luma, sat), (ref_luma, ref_sat) = picture_stats(list(fitted[0].segments)), picture_stats(after)
    print(f"{name} fitted first: luma {luma / ref_luma:.3f}x, saturation {sat / ref_sat:.3f}x")
    # the curve on a half-size testsrc2 full of hard coloured edges (1.4 % and 2.7 % in
    # ffv1; from 1080p to 720p 0.3 % and 0.5 %: bench/README.md "colour.py")
    assert luma == pytest.approx(ref_luma, rel=0.02) and sat == pytest.approx(ref_sat, rel=0.035)


def test_the_probe_reads_hdr10_metadata_from_the_first_picture(sources: Sources) -> None:
    # the PQ clip's MP4 has no mdcv/clli box: the HEVC SEI is all there is
    info = asyncio.run(ffmpeg.probe(sources.path("pq")))
    assert (info.colour.mastering_peak, info.colour.max_cll, info.colour.max_fall) == (
        1000.0,
        1000,
        400,
    )
    assert info.colour.bit_depth == 10 and info.colour.peak == 1000.0


def test_dolby_vision_8_4_is_read_and_profile_5_refused(sources: Sources) -> None:
    info = asyncio.run(ffmpeg.probe(sources.path("dv84")))
    assert info.colour.dovi is not None
    assert (info.colour.dovi.profile, info.colour.dovi.compatibility) == (8, 4)
    with pytest.raises(BadInput, match=r"^Dolby Vision profile 5 without a base layer"):
        asyncio.run(ffmpeg.probe(sources.path("dv5")))


def _luma_row(source_filter: str, chain_filters: str, bits: int = 10) -> list[int]:
    """The luma codes of one 1024-wide row after `chain_filters`, from a lavfi ramp."""
    fmt = "yuv420p10le" if bits == 10 else "yuv420p"
    done = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i"]
        + [f"nullsrc=s=1024x2:d=0.04,format=yuv420p10le,{source_filter},{chain_filters}"]
        + ["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", fmt, "-"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    if bits == 10:
        return [int.from_bytes(done[2 * i : 2 * i + 2], "little") for i in range(1024)]
    return list(done[:1024])


@pytest.mark.parametrize("dynamic", ["pq", "hlg"])
def test_ffmpeg_applies_the_tone_curve_of_the_module(dynamic: str) -> None:
    expr = eetf_expression(dynamic, 1000.0)  # type: ignore[arg-type]
    row = _luma_row("geq=lum='X':cb=512:cr=512", f"lutyuv=y='{expr}':u=val:v=val")
    for code in range(64, 941, 7):
        expected = 64 + 876 * tone_map_signal(dynamic, 1000.0, (code - 64) / 876)  # type: ignore[arg-type]
        assert abs(row[code] - expected) <= 1.0, (code, row[code], expected)


@pytest.mark.parametrize(
    ("transfer", "top"),
    [("smpte2084", "0.7518"), ("arib-std-b67", "1")],  # up to 1000 cd/m² either way
)
def test_highlights_keep_their_detail(transfer: str, top: str) -> None:
    colour = Colour(transfer, "bt2020", "bt2020nc", bit_depth=10, mastering_peak=1000.0)
    ramp = (
        f"geq=lum='64+876*X/W*{top}':cb=512:cr=512,"
        f"setparams=color_primaries=bt2020:color_trc={transfer}:colorspace=bt2020nc:range=tv"
    )
    row = _luma_row(ramp, ",".join(chain(colour, 1024, 2)), bits=8)
    assert all(b >= a for a, b in zip(row, row[1:], strict=False))  # monotonic
    # the brightest fifth of the source (its highlights) still has levels: no clipped
    # plateau at SDR white, as a plain conversion would leave
    highlights = row[820:]
    assert len(set(highlights)) >= 6, highlights
    assert row[-1] >= 230 and row[0] <= 17


@pytest.mark.parametrize("name", ["bt601", "bt601_untagged"])
def test_an_sd_bt601_clip_keeps_its_colours(sources: Sources, name: str) -> None:
    info, out = sources.transcoded(name, Rung("sd", 640, 480, 1_000_000))
    segment = out.renditions[0].segments[0]
    assert tags(segment) == BT709
    source = video_frame(sources.path(name), matrix="bt601")
    published = video_frame(segment, matrix="bt709")
    as_before = video_frame(sources.path(name), matrix="bt709")  # BT.601 read as BT.709
    assert mean_difference(published, source) < 3.5
    assert mean_difference(as_before, source) > 6  # (what the check would have caught)


def test_the_stills_have_the_renditions_colours(sources: Sources) -> None:
    # JPEG is read as BT.601 full range (JFIF); a BT.709 picture written as-is shifts
    _, out = sources.transcoded("sdr")
    frame = video_frame(out.renditions[0].segments[0], 30)  # the thumbnail's, at 1 s
    thumb = Image.open(out.thumbnail).convert("RGB").resize(frame.size, Image.BILINEAR)
    assert mean_difference(thumb, frame) < 4


def test_the_origins_stills_at_a_moment_have_the_renditions_colours(sources: Sources) -> None:
    # the origin's frame grab (a thumbnail at any moment) from the same rendition: JPEG's
    # colours, as the worker's thumbnails; before, the mjpeg encoder's own conversion
    # changed the range only, and viewers read BT.709 through BT.601's matrix
    _, out = sources.transcoded("sdr")
    segment = out.renditions[0].segments[0]
    frame = video_frame(segment, 30)
    width = frame.size[0]

    def grab(asked: int, *, as_before: bool = False) -> Image.Image:
        cmd = grab_command(segment, Still("r", out.renditions[0].profile, 1, 30, 30, asked, width))
        if as_before:
            size = f",scale={asked}:-2:flags=bicubic" if asked != width else ""
            cmd[cmd.index("-vf") + 1] = f"select='eq(n,30)'{size}"
        jpeg = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
        return Image.open(io.BytesIO(jpeg)).convert("RGB")

    same, before = grab(width), grab(width, as_before=True)
    assert mean_difference(same, frame) < 4
    assert mean_difference(before, frame) > mean_difference(same, frame) + 1
    # resized: the same colours on average, channel by channel
    half = ImageStat.Stat(grab(width // 2)).mean
    for got, want in zip(half, ImageStat.Stat(frame).mean, strict=True):
        assert abs(got - want) < 2, (half, ImageStat.Stat(frame).mean)


# ------------------------------------------------------------- orientation


@pytest.mark.parametrize("name", list(MATRICES))
def test_display_matrices_are_baked_in_everywhere(sources: Sources, name: str) -> None:
    source = sources.path(name)
    # the generator is right: ffmpeg's own autorotation shows the picture upright
    assert quadrant_colours(video_frame(source), 4 / 3) == QUADRANTS
    assert quadrant_colours(video_frame(source, autorotate=False), 1) != QUADRANTS
    info, out = sources.transcoded(name)
    assert (info.width, info.height) == (160, 120)
    rendition = video_frame(out.renditions[0].segments[0])
    assert quadrant_colours(rendition, 4 / 3) == QUADRANTS
    for still in (out.thumbnail, out.thumbnail_large):
        assert quadrant_colours(Image.open(still), 4 / 3) == QUADRANTS, still.name
    cue = out.storyboard_cues[-1]
    sheet = Image.open(out.storyboard_sheets[0])
    assert quadrant_colours(sheet, 4 / 3, (cue.x, cue.y, cue.w, cue.h)) == QUADRANTS


# -------------------------------------------------------------- frame rate


def _ticks(times: list[float]) -> set[int]:
    """Frame durations in 90 kHz ticks (MPEG-TS time)."""
    return {round((b - a) * 90_000) for a, b in zip(times, times[1:], strict=False)}


def test_a_variable_rate_clip_becomes_constant_and_stays_in_sync(sources: Sources) -> None:
    info, out = sources.transcoded("vfr60", Rung("90p", 160, 90, 200_000))
    assert info.vfr and 27 < info.fps < 28.5  # 30 fps, jittered, one frame in 13 dropped
    rendition = out.renditions[0]
    assert Fraction(rendition.fps).limit_denominator(1001) == 25  # never above its mean
    segments = list(rendition.segments)
    assert _ticks(packet_times(segments)) == {3600}  # every frame 1/25 s
    flashes, beeps = flash_times(segments), beep_times(segments)
    assert len(flashes) == len(beeps) == len(sources.markers["vfr60"])
    offsets = [f - b for f, b in zip(flashes, beeps, strict=True)]
    print("A/V offsets (ms):", [round(o * 1000, 1) for o in offsets])
    # each flash shows on the frame its beep starts in, to a frame; the last at 58.5 s
    assert all(abs(o) <= 1 / 25 for o in offsets), offsets


@pytest.mark.parametrize("name", ["vfr_mkv_1000", "vfr_mp4_1000"])
def test_a_1000_fps_time_base_is_not_a_frame_rate(sources: Sources, name: str) -> None:
    info, out = sources.transcoded(name, Rung("90p", 160, 90, 200_000))
    assert 29.5 < info.fps < 30.5 and info.vfr
    rendition = out.renditions[0]
    assert rendition.fps == 30.0
    times = packet_times(list(rendition.segments))
    assert _ticks(times) == {3000}
    assert len(times) == pytest.approx(4 * 30, abs=2)


# ----------------------------------------------------------------- export


@pytest.fixture
def settings(pg_dsn, tmp_path) -> Settings:
    return Settings.from_env(
        {},
        database_url=pg_dsn,
        storage_root=tmp_path / "storage",
        api_tokens=(API_TOKEN,),
        log_format="text",
        job_lease_seconds=10.0,
        timeline_interval=1.0,
        refine=False,
        ladder=(LadderRung("180p", 320, 180, 400_000),),
    )


async def test_an_export_of_a_rotated_clip_is_upright(
    origin_client, settings: Settings, run_workers: Callable[..., None], tmp_path: Path
) -> None:
    client = origin_client
    # 320x240 upright: it fills the 180p rung, whose rendition the middle is copied from
    # (a smaller source's would be re-encoded into the rung's frame, segment by segment)
    clip = make_oriented(
        tmp_path / "upright-phone.mp4", "rot90", width=320, height=240, seconds=10.0
    )
    scene, (user,) = await new_scene(client)
    segment = (await upload(client, scene, user, clip, sequence=1))["segmentId"]
    run_workers()
    assert (await wait_done(client, segment, timeout=120))["status"] == "ready"
    # a moment: its edge GOPs are re-encoded (exportcmd.cut_command), the rest copied
    r = await client.post(
        f"/api/v1/scenes/{scene}/export",
        json={"quality": "180p", "start": 1.0, "end": 9.0},
        headers=client.headers_auth,
    )
    started = await r.json()
    assert r.status == 202, started
    done = await wait_export(client, started["exportId"])
    assert done["status"] == "ready", done
    r = await client.get(done["url"])
    assert r.status == 200
    mp4 = tmp_path / "moment.mp4"
    mp4.write_bytes(await r.read())
    r = await client.get(done["url"].rsplit("/", 1)[0] + "/export_manifest.json")
    modes = [p["mode"] for p in (await r.json())["parts"]]
    assert modes == ["reencode", "copy", "reencode"]
    assert tags(mp4) == BT709  # the re-encoded cut's SPS, the only one
    assert distinct_parameter_sets(mp4) == (1, 1)
    for index in (0, 100, 199):  # in the first cut, the copied middle, the last cut
        assert quadrant_colours(video_frame(mp4, index), 4 / 3) == QUADRANTS, index
