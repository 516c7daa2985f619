"""Ingest benchmark (issue 3): our one-pass transcode beside the seed's pipeline.

In one run, on this machine:

1. Pipelines. A 60 s 1080p30 clip with audio (lavfi testsrc2 + sine, encoded once with
   libx264 at 8 Mbit/s, like a phone's) goes through
   - ours: ``workers.media.ffmpeg.probe`` + ``measure_loudness`` + ``transcode`` (the product
     code: the audio-only loudness measurement, then one ffmpeg run for both renditions,
     both thumbnails and the timeline frames, then the read-back of the outputs and the
     Pillow storyboard), and
   - the seed's (``bench/seed_pipeline.py``: one ffmpeg run per rendition, one per
     thumbnail, one per timeline thumbnail with ``-ss`` after ``-i``, Pillow sprite), at
     our encoder settings,
   alternating which goes first, ``--rounds`` times each; the median wall times and
   their ratio seed/ours (target >= 1.3x).
2. Quality. SSIM (ffmpeg ``ssim`` filter, luma+chroma "All") of every rendition of both
   pipelines against the source scaled to the rendition's frame, read through each
   rendition's own HLS playlist; the difference ours - seed (target within 0.002).
3. Linearity. Our ingest time for 1, 5 and 10 minute clips: seconds per clip-minute for
   each, and their ratio to the 1-minute figure (linear: roughly 1.0).
4. Loudness matching (issue 16), ``--loudness-only``: our ingest of the 60 s clip with
   loudness matching (the audio-only measurement pass, then the gain in the one pass)
   beside the same ingest with ``LOUDNESS_TARGET=off``, alternating, ``--rounds`` times
   each (at least 2); the ratio of the medians (target <= 1.05).

5. Two stages (issue 17), ``--refine``: the final generation's SSIM and bytes beside the
   seed's pipeline at preset medium on four kinds of source, time to playable and to
   final, a new upload's time to playable while a refinement runs
   (`bench/refinebench.py`).

Usage: ``.venv/bin/python bench/ingest.py [--quick] [--rounds N] [--no-wait]
[--loudness-only | --refine]``. ``--quick`` uses 20 s / 10-20-40 s clips (8 s with
``--refine``) to check that everything works. Writes ``bench/results/ingest.json``
(``ingest-quick.json`` with ``--quick``; ``ingest-loudness.json`` with
``--loudness-only``; ``ingest-refine.json`` with ``--refine``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import benchutil
import seed_pipeline

from core.settings import Settings
from workers.media import ffmpeg as sf_ffmpeg
from workers.media.encoding import DEFAULT_RUNGS, media_segments
from workers.media.h264 import output_fps
from workers.media.loudness import plan_gain
from workers.media.probe import Limits

SOURCE_BITRATE = "8M"  # a phone's 1080p30 H.264 is 8-17 Mbit/s
SOURCE_FPS = 30
#: Linearity clips run up to 10 minutes, the product's default MAX_CLIP_SECONDS (600);
#: a 600 s lavfi clip probes a few ms longer, so the probe gets a larger bound here.
BENCH_LIMITS = Limits(max_duration=3600.0)


# ----------------------------------------------------------------------- clips


def make_clip(seconds: int, name: str = "testsrc2", video: str | None = None) -> Path:
    """A 1080p30 H.264 + AAC stereo MP4 of `seconds` from the lavfi `video` source
    (default testsrc2), made once and kept in bench/out."""
    clips = benchutil.OUT / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    path = clips / f"{name}_1080p{SOURCE_FPS}_{seconds}s_{SOURCE_BITRATE}.mp4"
    video = video or f"testsrc2=size=1920x1080:rate={SOURCE_FPS}"
    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    print(f"generating {path.name} ...", flush=True)
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"{video},trim=duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:beep_factor=4:sample_rate=48000:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
        "-b:v",
        SOURCE_BITRATE,
        "-maxrate",
        "12M",
        "-bufsize",
        "16M",
        "-g",
        str(SOURCE_FPS * 2),
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        "-ac",
        "2",
        "-movflags",
        "+faststart",
        str(tmp),
    ]
    subprocess.run(cmd, check=True)
    tmp.rename(path)
    return path


# ------------------------------------------------------------------- pipelines


def _cpu() -> float:
    """CPU seconds used so far by this process and its waited-for children."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


_FFMPEG_WALL = re.compile(r"^# exit (-?\d+) after ([\d.]+) s", re.MULTILINE)


async def _ours(source: Path, workdir: Path, loudness: bool = True) -> dict[str, Any]:
    """Probe, the loudness measurement pass (unless `loudness` is False, as with
    LOUDNESS_TARGET=off) and the one-pass transcode with the gain it decides."""
    started = time.perf_counter()
    info = await sf_ffmpeg.probe(source, BENCH_LIMITS)
    probed = time.perf_counter()
    measured = await sf_ffmpeg.measure_loudness(source, info) if loudness else None
    plan = plan_gain(
        measured,
        target=Settings().loudness_target if loudness else None,
        max_gain=Settings().loudness_max_gain,
        has_audio=info.has_audio,
    )
    planned = time.perf_counter()
    out = await sf_ffmpeg.transcode(source, workdir, info, loudness=plan)
    done = time.perf_counter()
    m = _FFMPEG_WALL.search(out.log.read_text(errors="replace")[:20000])
    ffmpeg_s = float(m[2]) if m else None
    transcode_s = done - planned
    return {
        "seconds": done - started,
        "loudness": plan.metadata(),
        "steps": {
            "probe": probed - started,
            "loudness_measurement": planned - probed,
            "ffmpeg_one_pass": ffmpeg_s,
            "readback_and_storyboard": transcode_s - ffmpeg_s if ffmpeg_s else None,
        },
        "playlists": {r.name: r.playlist for r in out.renditions},
        "segments": {r.name: list(r.durations) for r in out.renditions},
        "bytes": {r.name: sum(r.sizes) for r in out.renditions},
        "timeline_frames": len(out.frames),
        "duration": out.duration,
    }


def run_ours(source: Path, workdir: Path, loudness: bool = True) -> dict[str, Any]:
    cpu = _cpu()
    result = asyncio.run(_ours(source, workdir, loudness))
    result["cpu_seconds"] = _cpu() - cpu
    return result


def run_seed(source: Path, workdir: Path, fps: float) -> dict[str, Any]:
    cpu = _cpu()
    r = seed_pipeline.ingest(source, workdir, fps=fps)
    cpu = _cpu() - cpu
    segments: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for name, playlist in r.playlists.items():
        durations, uris = media_segments(playlist.read_text())
        segments[name] = durations
        sizes[name] = sum((playlist.parent / uri).stat().st_size for uri in uris)
    return {
        "seconds": r.seconds,
        "steps": r.steps,
        "playlists": r.playlists,
        "segments": segments,
        "bytes": sizes,
        "timeline_frames": r.thumbnails,
        "cpu_seconds": cpu,
    }


# ------------------------------------------------------------------------ SSIM

_SSIM = re.compile(r"SSIM Y:([\d.]+) .*?U:([\d.]+) .*?V:([\d.]+) .*?All:([\d.]+)")
_FRAMES = re.compile(r"frame=\s*(\d+)")


def ssim(playlist: Path, source: Path, width: int, height: int) -> dict[str, Any]:
    """SSIM of a rendition (read through its HLS playlist) against the source scaled to
    the rendition's frame (our fit = the seed's stretch for a 16:9 source). Both start
    at t=0 (the .ts timestamps carry the muxer's offset)."""
    ref = f"[1:v]setpts=PTS-STARTPTS,scale={width}:{height}:flags=bicubic,format=yuv420p[ref]"
    graph = f"[0:v]setpts=PTS-STARTPTS,format=yuv420p[main];{ref};[main][ref]ssim"
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-i",
        str(playlist),
        "-i",
        str(source),
        "-lavfi",
        graph,
        "-an",
        "-f",
        "null",
        "-",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"ssim failed: {p.stderr[-500:]}")
    m = _SSIM.search(p.stderr)
    frames = _FRAMES.findall(p.stderr)
    if not m:
        raise RuntimeError(f"no SSIM in ffmpeg output: {p.stderr[-500:]}")
    return {
        "y": float(m[1]),
        "u": float(m[2]),
        "v": float(m[3]),
        "all": float(m[4]),
        "frames": int(frames[-1]) if frames else None,
    }


# ------------------------------------------------------------------------ main


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    """A run's figures for the JSON file (no paths, rounded)."""
    out = {k: v for k, v in run.items() if k not in ("playlists", "segments")}
    out["seconds"] = round(run["seconds"], 3)
    out["cpu_seconds"] = round(run["cpu_seconds"], 2)
    out["steps"] = {k: (round(v, 3) if v is not None else None) for k, v in run["steps"].items()}
    out["segment_counts"] = {k: len(v) for k, v in run["segments"].items()}
    return out


def alternating(rounds: int, first: str, second: str) -> Iterator[tuple[int, str]]:
    """(round, who) for `rounds` rounds of two contenders, taking turns going first."""
    for rnd in range(rounds):
        yield from ((rnd, who) for who in ((first, second) if rnd % 2 == 0 else (second, first)))


def compare(
    source: Path, rounds: int, scratch: Path, wait: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    fps = float(output_fps(SOURCE_FPS))
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "seed": []}
    kept: dict[str, dict[str, Any]] = {}
    for rnd, who in alternating(rounds, "ours", "seed"):
        quiet = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
        workdir = scratch / f"{who}_{rnd}"
        print(f"round {rnd + 1}/{rounds}: {who} ...", end=" ", flush=True)
        with benchutil.Monitor() as mon:
            if who == "ours":
                run = run_ours(source, workdir)
            else:
                run = run_seed(source, workdir, fps)
        run["round"] = rnd + 1
        run["quiet_before"] = quiet["quiet"]
        run["others_during"] = mon.summary()
        note = f" DISTURBED (others {mon.others_cores:.2f} cores)" if mon.disturbed else ""
        print(f"{run['seconds']:.1f} s{note}", flush=True)
        runs[who].append(run)
        if who not in kept:
            kept[who] = run  # outputs of the first run are kept for SSIM
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    # quality: every rendition of both pipelines against the source
    quality: dict[str, Any] = {}
    for rung in DEFAULT_RUNGS:
        row: dict[str, Any] = {}
        for who in ("ours", "seed"):
            print(f"SSIM {who} {rung.name} ...", end=" ", flush=True)
            row[who] = ssim(kept[who]["playlists"][rung.name], source, rung.width, rung.height)
            print(f"{row[who]['all']:.5f}", flush=True)
        row["diff_all"] = round(row["ours"]["all"] - row["seed"]["all"], 5)
        row["within_0.002"] = row["diff_all"] >= -0.002  # ours may be better
        row["bytes"] = {w: kept[w]["bytes"][rung.name] for w in ("ours", "seed")}
        row["segments"] = {w: len(kept[w]["segments"][rung.name]) for w in ("ours", "seed")}
        quality[rung.name] = row

    med = {who: _median([r["seconds"] for r in runs[who]]) for who in runs}
    timing = {
        "source": source.name,
        "rounds": rounds,
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "ratio_seed_over_ours": round(med["seed"] / med["ours"], 3),
        "target_ratio": 1.3,
        "median_cpu_seconds": {
            who: round(_median([r["cpu_seconds"] for r in runs[who]]), 2) for who in runs
        },
        "runs": {who: [_strip(r) for r in rs] for who, rs in runs.items()},
    }
    return timing, quality


async def _measure_only(source: Path) -> float:
    info = await sf_ffmpeg.probe(source, BENCH_LIMITS)
    started = time.perf_counter()
    await sf_ffmpeg.measure_loudness(source, info)
    return time.perf_counter() - started


def measurement_alone(source: Path, times: int = 5) -> dict[str, Any]:
    """The measurement pass by itself, `times` times: wall and CPU seconds (children)."""
    walls, cpus = [], []
    for _ in range(times):
        cpu = _cpu()
        walls.append(asyncio.run(_measure_only(source)))
        cpus.append(_cpu() - cpu)
    return {
        "median_seconds": round(_median(walls), 3),
        "median_cpu_seconds": round(_median(cpus), 3),
        "seconds": [round(w, 3) for w in walls],
        "cpu_seconds": [round(c, 3) for c in cpus],
    }


def loudness_cost(
    source: Path,
    rounds: int,
    scratch: Path,
    wait: bool,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Issue 16: our ingest with loudness matching (the measurement pass plus the gain in
    the one pass) beside the same ingest with LOUDNESS_TARGET=off, alternating which goes
    first, `rounds` times each; the ratio of the medians (target <= 1.05). Also the
    measurement pass by itself, whose CPU seconds barely depend on what else the machine
    runs. `progress` gets the runs so far after each one."""
    alone = measurement_alone(source)
    print(
        f"measurement pass alone: {alone['median_seconds']:.2f} s wall, "
        f"{alone['median_cpu_seconds']:.2f} s CPU (median of 5)",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for rnd, mode in alternating(rounds, "off", "on"):
        quiet = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
        workdir = scratch / f"loud_{mode}_{rnd}"
        print(f"loudness round {rnd + 1}/{rounds}: {mode} ...", end=" ", flush=True)
        with benchutil.Monitor() as mon:
            run = run_ours(source, workdir, loudness=mode == "on")
        shutil.rmtree(workdir, ignore_errors=True)
        note = f" DISTURBED (others {mon.others_cores:.2f} cores)" if mon.disturbed else ""
        measure_s = run["steps"]["loudness_measurement"]
        print(f"{run['seconds']:.1f} s (measurement {measure_s:.2f} s){note}", flush=True)
        runs[mode].append(
            {
                "round": rnd + 1,
                "seconds": round(run["seconds"], 3),
                "cpu_seconds": round(run["cpu_seconds"], 2),
                "steps": {k: v if v is None else round(v, 3) for k, v in run["steps"].items()},
                "loudness": run["loudness"],
                "quiet_before": quiet["quiet"],
                "others_during": mon.summary(),
            }
        )
        if progress is not None:
            progress({"measurement_alone": alone, "runs": runs})
    med = {m: _median([r["seconds"] for r in rs]) for m, rs in runs.items()}
    cpu = {m: _median([r["cpu_seconds"] for r in rs]) for m, rs in runs.items()}
    measurement = _median([r["steps"]["loudness_measurement"] for r in runs["on"]])
    return {
        "source": source.name,
        "rounds": rounds,
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "median_cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "median_measurement_seconds": round(measurement, 3),
        "ratio_on_over_off": round(med["on"] / med["off"], 4),
        "cpu_ratio_on_over_off": round(cpu["on"] / cpu["off"], 4),
        "measurement_alone": alone,
        "measurement_cpu_share_of_off": round(alone["median_cpu_seconds"] / cpu["off"], 4),
        "measurement_share_of_off": round(measurement / med["off"], 4),
        "target_ratio": 1.05,
        "runs": runs,
    }


def loudness_report(cost: dict[str, Any]) -> str:
    med = cost["median_seconds"]
    cpu = cost["median_cpu_seconds"]
    rows = [
        ["LOUDNESS_TARGET=off", f"{med['off']:.1f}", f"{cpu['off']:.1f}", "-", "1.000x", "1.000x"],
        [
            "loudness matching (default)",
            f"{med['on']:.1f}",
            f"{cpu['on']:.1f}",
            f"{cost['median_measurement_seconds']:.2f}",
            f"{cost['ratio_on_over_off']:.3f}x",
            f"{cost['cpu_ratio_on_over_off']:.3f}x",
        ],
    ]
    alone = cost["measurement_alone"]
    head = (
        f"\nLoudness matching on {cost['source']} (median of {cost['rounds']} runs each); "
        f"the measurement pass alone: {alone['median_seconds']:.2f} s, "
        f"{alone['median_cpu_seconds']:.2f} CPU s = "
        f"{100 * cost['measurement_cpu_share_of_off']:.1f}% of the ingest's CPU\n"
    )
    table = benchutil.table(
        ["ingest", "wall s", "cpu s", "measurement s", "on/off wall (<=1.05)", "on/off cpu"],
        rows,
    )
    return head + table


def linearity(clips: list[tuple[int, Path]], scratch: Path, wait: bool) -> dict[str, Any]:
    rows = []
    for seconds, path in clips:
        quiet = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
        workdir = scratch / f"lin_{seconds}"
        print(f"linearity: ours on {seconds} s ...", end=" ", flush=True)
        with benchutil.Monitor() as mon:
            run = run_ours(path, workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        spm = run["seconds"] / (seconds / 60)
        print(f"{run['seconds']:.1f} s ({spm:.1f} s per clip-minute)", flush=True)
        rows.append(
            {
                "clip_seconds": seconds,
                "seconds": round(run["seconds"], 3),
                "cpu_seconds": round(run["cpu_seconds"], 2),
                "seconds_per_clip_minute": round(spm, 3),
                "ffmpeg_one_pass": run["steps"]["ffmpeg_one_pass"],
                "quiet_before": quiet["quiet"],
                "others_during": mon.summary(),
            }
        )
    base = rows[0]["seconds_per_clip_minute"]
    for r in rows:
        r["ratio_to_shortest"] = round(r["seconds_per_clip_minute"] / base, 3)
    return {"clips": rows}


def _clip_label(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def report(timing: dict[str, Any], quality: dict[str, Any], lin: dict[str, Any] | None) -> str:
    out = []
    med = timing["median_seconds"]
    runs = timing["runs"]
    out.append(f"\nIngest of {timing['source']} (median of {timing['rounds']} runs each)\n")
    rows = [
        [
            "ours (one ffmpeg pass)",
            f"{med['ours']:.1f}",
            f"{timing['median_cpu_seconds']['ours']:.0f}",
            " ".join(f"{r['seconds']:.1f}" for r in runs["ours"]),
            "1.00x",
        ],
        [
            "seed (per-variant + per-thumbnail runs)",
            f"{med['seed']:.1f}",
            f"{timing['median_cpu_seconds']['seed']:.0f}",
            " ".join(f"{r['seconds']:.1f}" for r in runs["seed"]),
            f"{timing['ratio_seed_over_ours']:.2f}x",
        ],
    ]
    out.append(
        benchutil.table(["pipeline", "wall s", "cpu s", "runs s", "seed/ours (>=1.3x)"], rows)
    )
    seed_steps = runs["seed"][0]["steps"]
    ours_steps = runs["ours"][0]["steps"]
    out.append(
        "  steps (first run): ours "
        + ", ".join(f"{k} {v:.1f}" for k, v in ours_steps.items() if v is not None)
        + "; seed "
        + ", ".join(f"{k} {v:.1f}" for k, v in seed_steps.items())
    )
    out.append("\nSSIM against the source (All; Y in brackets)\n")
    rows = []
    for name, q in quality.items():
        rows.append(
            [
                name,
                f"{q['ours']['all']:.5f} ({q['ours']['y']:.5f})",
                f"{q['seed']['all']:.5f} ({q['seed']['y']:.5f})",
                f"{q['diff_all']:+.5f}",
                "ok" if q["within_0.002"] else "MISS",
                f"{q['bytes']['ours'] / 1e6:.1f} / {q['bytes']['seed'] / 1e6:.1f}",
                f"{q['segments']['ours']} / {q['segments']['seed']}",
            ]
        )
    out.append(
        benchutil.table(
            ["rendition", "ours", "seed", "ours-seed", "|d|<=0.002", "MB ours/seed", "segs"],
            rows,
        )
    )
    if lin:
        out.append("\nLinearity: our ingest time by clip length\n")
        rows = [
            [
                _clip_label(r["clip_seconds"]),
                f"{r['seconds']:.1f}",
                f"{r['seconds_per_clip_minute']:.2f}",
                f"{r['ratio_to_shortest']:.2f}",
            ]
            for r in lin["clips"]
        ]
        out.append(
            benchutil.table(["clip", "wall s", "s per clip-minute", "ratio to shortest"], rows)
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short clips, for a smoke test")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="runs of each pipeline (default 2; with --refine: rounds of the two-uploads "
        "timing, default 3)",
    )
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    p.add_argument("--no-linearity", action="store_true", help="skip the 1/5/10 min clips")
    p.add_argument(
        "--loudness-only",
        action="store_true",
        help="only the cost of loudness matching (issue 16): ingest with it on and off",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="only the two stages (issue 17): final vs the seed at medium, time to playable",
    )
    a = p.parse_args(argv)
    if a.loudness_only:
        return main_loudness(a)
    if a.refine:
        return main_refine(a)

    compare_s = 20 if a.quick else 60
    lin_s = [10, 20, 40] if a.quick else [60, 300, 600]
    info = benchutil.machine()
    clip = make_clip(compare_s)
    lin_clips = [] if a.no_linearity else [(s, make_clip(s)) for s in lin_s]
    wait = not a.no_wait
    info["wait"] = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
    with tempfile.TemporaryDirectory(prefix="sf-bench-ingest-") as tmp:
        scratch = Path(tmp)
        timing, quality = compare(clip, a.rounds or 2, scratch, wait)
        shutil.rmtree(scratch / "ours_0", ignore_errors=True)
        shutil.rmtree(scratch / "seed_0", ignore_errors=True)
        lin = linearity(lin_clips, scratch, wait) if lin_clips else None
    result = {
        "benchmark": "ingest",
        "quick": a.quick,
        "machine": info,
        "encoder": {
            "preset": seed_pipeline.PRESET,
            "hls_time": seed_pipeline.SEGMENT_SECONDS,
            "timeline_interval": seed_pipeline.FRAME_INTERVAL,
            "ladder": [
                {
                    "name": r.name,
                    "size": f"{r.width}x{r.height}",
                    "video_bitrate": r.video_bitrate,
                    "maxrate": r.maxrate,
                    "bufsize": r.bufsize,
                    "audio_bitrate": r.audio_bitrate,
                }
                for r in DEFAULT_RUNGS
            ],
            "source": f"testsrc2+sine 1080p{SOURCE_FPS} libx264 veryfast {SOURCE_BITRATE}, "
            "AAC 192k 48 kHz stereo",
        },
        "timing": timing,
        "quality": quality,
        "linearity": lin,
    }
    text = report(timing, quality, lin)
    print(text)
    path = benchutil.write_result("ingest-quick" if a.quick else "ingest", result)
    print(f"\nwrote {path.relative_to(benchutil.ROOT)}")
    return 0


def main_loudness(a: argparse.Namespace) -> int:
    info = benchutil.machine()
    clip = make_clip(20 if a.quick else 60)
    wait = not a.no_wait
    info["wait"] = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
    name = "ingest-loudness-quick" if a.quick else "ingest-loudness"

    def partial(so_far: dict[str, Any]) -> None:  # a run killed midway keeps its figures
        benchutil.write_result(
            name, {"benchmark": "ingest-loudness", "partial": so_far, "machine": info}
        )

    with tempfile.TemporaryDirectory(prefix="sf-bench-loudness-") as tmp:
        cost = loudness_cost(clip, max(2, a.rounds or 2), Path(tmp), wait, partial)
    result = {"benchmark": "ingest-loudness", "quick": a.quick, "machine": info, "loudness": cost}
    print(loudness_report(cost))
    path = benchutil.write_result(name, result)
    print(f"\nwrote {path.relative_to(benchutil.ROOT)}")
    return 0


def main_refine(a: argparse.Namespace) -> int:
    import refinebench  # it reads this module's clips and SSIM

    result = refinebench.run(a.quick, not a.no_wait, rounds=a.rounds or 3)
    print(refinebench.report(result))
    path = benchutil.write_result("ingest-refine-quick" if a.quick else "ingest-refine", result)
    print(f"\nwrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
