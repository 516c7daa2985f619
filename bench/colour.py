"""Issue 25's figures: the tone curves measured, and what an HDR upload costs.

1. Curves. testsrc2 made HDR as a phone tags it (HEVC Main 10, BT.2020, HDR reference
   white at 203 cd/m², ITU-R BT.2408; PQ with a 1000 cd/m² mastering display), 640x360,
   4 s, through: nothing (the 8-bit picture as it was published before), ffmpeg's
   `tonemap` filter (hable, mobius, reinhard, clip; zscale to linear light at npl=100,
   peak 1000 cd/m²) and the product's chain (`workers.media.colour.chain`). Mean luma
   and saturation (`signalstats`) against the SDR original, and the cost of each on a
   1080p frame. Target: saturation >= 0.55x, luma 0.6-1.25x.
2. Time to playable (what the transcode job does before it uploads: probe, loudness,
   the fast-stage transcode; `refinebench.fast_stage`) of a 30 s 1080p30 clip with
   audio encoded as a phone does (HEVC at 8 Mbit/s): HLG (Main 10) against the same
   picture in SDR (HEVC Main, and H.264), alternating, `--rounds` each; medians and
   their ratio. Target: HLG <= 1.3x SDR HEVC.
3. Where the time goes, for both clips (HLG, SDR HEVC): the preflight (probe, first
   picture, loudness), then the first stage's ffmpeg run rebuilt from its own graph
   step by step, each writing its picture to ``-f null``: decoding alone; + the frame
   rate and the fit to the rung; + the tone curve; + zimg (the whole picture the graph
   makes); then the real run (x264, AAC, HLS, stills). CPU and wall seconds, one run
   each (the differences are each step's cost).

Usage: ``.venv/bin/python bench/colour.py [--rounds N] [--no-wait] [--quick]
[--no-curves]`` (``--quick``: 8 s clips; ``--no-curves``: parts 2 and 3 only). Writes ``bench/results/colour.json`` (``colour-quick.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import benchutil
from refinebench import LIMITS, fast_stage

from core.settings import Settings
from workers.jobs.transcode import preflight, stage_ladder
from workers.media import colour, encoding
from workers.media.encoding import stage_presets

SDR_TAGS = "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
TRC = {"hlg": "arib-std-b67", "pq": "smpte2084"}


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def make(name: str, size: str, seconds: int, *, audio: bool, bitrate: str | None) -> Path:
    """`name` in sdr_h264, sdr_hevc, hlg, pq: testsrc2 at `size`, kept in bench/out."""
    clips = benchutil.OUT / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    path = clips / f"colour_{name}_{size}_{seconds}s_{bitrate or 'crf'}.mp4"
    if path.exists():
        return path
    print(f"generating {path.name} ...", flush=True)
    picture = f"testsrc2=size={size}:rate=30:duration={seconds},format=yuv420p,{SDR_TAGS}"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    rate = ["-b:v", bitrate, "-maxrate", "12M", "-bufsize", "16M"] if bitrate else []
    if name in TRC:
        trc = TRC[name]
        picture += (
            ",zscale=t=linear:npl=203:p=2020,format=gbrpf32le,"
            f"zscale=t={trc}:m=2020_ncl:r=tv:npl=203,format=yuv420p10le"
        )
        params = ["log-level=error", "colorprim=bt2020", f"transfer={trc}", "colormatrix=bt2020nc"]
        if name == "pq":
            params += ["hdr10=1", f"master-display={MASTERING}", "max-cll=1000,400"]
        video = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", ":".join(params)]
        video += ["-color_primaries", "bt2020", "-color_trc", trc, "-colorspace", "bt2020nc"]
        video += ["-tag:v", "hvc1", *rate]
    elif name == "sdr_hevc":
        video = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"]
        video += ["-pix_fmt", "yuv420p", "-tag:v", "hvc1", *rate]
        video += ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709"]
    else:
        video = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", *rate]
        video += ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709"]
    cmd += ["-f", "lavfi", "-i", picture]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:beep_factor=4:duration={seconds}"]
        cmd += ["-c:a", "aac", "-b:a", "192k"]
    tmp = path.with_suffix(".part.mp4")
    _run([*cmd, *video, str(tmp)])
    tmp.rename(path)
    return path


def stats(path: Path, vf: str) -> tuple[float, float]:
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf"]
        + [f"{vf},signalstats,metadata=print:file=-", "-f", "null", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    luma = [float(v) for v in re.findall(r"YAVG=([\d.]+)", out)]
    sat = [float(v) for v in re.findall(r"SATAVG=([\d.]+)", out)]
    return statistics.fmean(luma), statistics.fmean(sat)


def frame_cost(path: Path, vf: str, frames: int = 150) -> float:
    """CPU ms a 1080p frame of `path` costs through `vf`, beyond decoding it."""

    def cpu(filters: list[str]) -> float:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        _run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-an"] + filters
             + ["-frames:v", str(frames), "-f", "null", "-"])  # fmt: skip
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime

    return max(0.0, cpu(["-vf", vf]) - cpu([])) / frames * 1000


def curves(quick: bool) -> dict[str, Any]:
    sdr = make("sdr_h264", "640x360", 4, audio=False, bitrate=None)
    ref_luma, ref_sat = stats(sdr, "format=yuv420p")
    big = make("hlg", "1920x1080", 8 if quick else 30, audio=True, bitrate="8M")
    out: dict[str, Any] = {}
    for kind in ("hlg", "pq"):
        clip = make(kind, "640x360", 4, audio=False, bitrate=None)
        source = colour.Colour(TRC[kind], "bt2020", "bt2020nc", bit_depth=10, mastering_peak=1000.0)
        ours = ",".join(colour.chain(source, 1920, 1080))
        chains = {"none (as before)": "format=yuv420p", "ours (BT.2390 EETF + zimg)": ours}
        for curve in ("hable", "mobius", "reinhard", "clip"):
            chains[f"tonemap {curve}"] = (
                "zscale=t=linear:npl=100:p=709,format=gbrpf32le,"
                f"tonemap={curve}:peak=10,zscale=t=709:m=709:r=tv,format=yuv420p"
            )
        for name, vf in chains.items():
            luma, sat = stats(clip, vf)
            row = {"luma": round(luma / ref_luma, 3), "saturation": round(sat / ref_sat, 3)}
            if kind == "hlg":
                row["ms_per_1080p_frame"] = round(frame_cost(big, vf), 1)
            out.setdefault(kind, {})[name] = row
            print(f"{kind:4} {name:28} luma {row['luma']:.3f}x  saturation {row['saturation']:.3f}x"
                  + (f"  {row['ms_per_1080p_frame']} ms/frame" if "ms_per_1080p_frame" in row else ""),
                  flush=True)  # fmt: skip
    return out


async def _playable(source: Path, scratch: Path, settings: Settings) -> tuple[float, float]:
    work = scratch / source.stem
    shutil.rmtree(work, ignore_errors=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = await fast_stage(source, work, settings)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return res["seconds"], r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def playable(seconds: int, rounds: int, wait: float, settings: Settings) -> dict[str, Any]:
    clips = {
        "hlg": make("hlg", "1920x1080", seconds, audio=True, bitrate="8M"),
        "sdr_hevc": make("sdr_hevc", "1920x1080", seconds, audio=True, bitrate="8M"),
        "sdr_h264": make("sdr_h264", "1920x1080", seconds, audio=True, bitrate="8M"),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in clips}
    with tempfile.TemporaryDirectory(prefix="colour-bench-") as tmp:
        for n in range(rounds):
            order = list(clips) if n % 2 == 0 else list(reversed(clips))
            for name in order:
                benchutil.wait_quiet(timeout=wait, log=n == 0)
                with benchutil.Monitor() as mon:
                    wall, cpu = asyncio.run(_playable(clips[name], Path(tmp), settings))
                runs[name].append({"wall": round(wall, 2), "cpu": round(cpu, 2), **mon.summary()})
                print(
                    f"round {n + 1} {name:8} playable in {wall:.1f} s (CPU {cpu:.1f} s)", flush=True
                )
    med = {k: statistics.median(r["wall"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu"] for r in v) for k, v in runs.items()}
    return {
        "clip_seconds": seconds,
        "runs": runs,
        "median_wall": med,
        "median_cpu": cpu,
        "hlg_over_sdr_hevc": round(med["hlg"] / med["sdr_hevc"], 3),
        "hlg_over_sdr_h264": round(med["hlg"] / med["sdr_h264"], 3),
        "cpu_hlg_over_sdr_hevc": round(cpu["hlg"] / cpu["sdr_hevc"], 3),
        "target": 1.3,
    }


def _timed(cmd: list[str]) -> dict[str, float]:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    _run(cmd)
    wall = time.perf_counter() - started
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    return {"wall": round(wall, 2), "cpu": round(cpu, 2)}


def _filters(chain: str) -> list[str]:
    """A filter chain's filters: split at the commas outside quoted expressions."""
    parts, quoted, start = [], False, 0
    for i, ch in enumerate(chain):
        if ch == "'":
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append(chain[start:i])
            start = i + 1
    return [*parts, chain[start:]]


def _steps(path: Path, settings: Settings) -> dict[str, dict[str, float]]:
    """One clip's time to playable taken apart: the preflight (probe, first picture,
    loudness), then the first stage's one ffmpeg run rebuilt step by step from its own
    graph (`encoding.transcode_command`), each step's picture written to ``-f null``:
    decoding; + the frame rate and the fit to the rung (before the chain for HDR,
    `encoding.picture_chain`; its 10 bits made 8 by the rung's format); + the tone
    curve (lutyuv); + zimg (the whole chain); then the real run (x264, AAC, HLS,
    stills)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    info, _ = asyncio.run(preflight(settings, path, LIMITS))
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = {
        "preflight": {
            "wall": round(time.perf_counter() - started, 2),
            "cpu": round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 2),
        }
    }
    ladder = stage_ladder(settings, info)
    presets = stage_presets(ladder, settings.fast_preset)
    with tempfile.TemporaryDirectory(prefix="colour-bd-") as out:
        (Path(out) / encoding.FRAMES_DIR).mkdir()
        cmd = encoding.transcode_command(
            path, out, info, ladder, presets=presets, frame_interval=settings.timeline_interval
        )
        graph = cmd[cmd.index("-filter_complex") + 1].split(";")
        head = graph[0].split("]", 1)[1].rsplit(",split=", 1)[0]
        fit = graph[1].split("]", 1)[1].rsplit("[", 1)[0]
        picture = _filters(head)
        chain_at = next((i for i, f in enumerate(picture) if f.startswith("format=")), None)
        lut = next((f for f in picture if f.startswith("lutyuv=")), None)
        zimg = next((f for f in picture if f.startswith("zscale=")), None)
        null = [*cmd[: cmd.index("-filter_complex")], "-map", f"0:{info.video_stream}", "-vf"]
        steps = {"decode": "null"}
        if zimg is not None and chain_at is not None:
            before = ",".join(picture[:chain_at])
            steps["+ frame rate, fit"] = f"{before},{fit}"
            if lut is not None:
                steps["+ tone curve (lutyuv)"] = f"{before},format=yuv420p10le,{lut},{fit}"
        steps["+ the whole picture (frame rate, chain, fit)"] = f"{head},{fit}"
        for name, vf in steps.items():
            rows[name] = _timed([*null, vf, "-f", "null", "-"])
        rows["transcode (+ x264, AAC, HLS, stills)"] = _timed(cmd)
    return rows


def breakdown(seconds: int, settings: Settings) -> dict[str, Any]:
    """Where the time goes (`_steps`) for the HLG clip and the same in SDR HEVC."""
    rows: dict[str, Any] = {}
    for name in ("sdr_hevc", "hlg"):
        path = make(name, "1920x1080", seconds, audio=True, bitrate="8M")
        rows[name] = _steps(path, settings)
        for step, row in rows[name].items():
            print(
                f"{name:8} {step:44} wall {row['wall']:6.1f} s  CPU {row['cpu']:6.1f} s", flush=True
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-wait", action="store_true")
    parser.add_argument("--no-curves", action="store_true")
    args = parser.parse_args()
    wait = 0.0 if args.no_wait else 600.0
    seconds = 8 if args.quick else 30
    settings = Settings.from_env({})
    result: dict[str, Any] = {"machine": benchutil.machine()}
    result["quiet"] = benchutil.wait_quiet(timeout=wait)
    if not args.no_curves:
        result["curves"] = curves(args.quick)
    result["time_to_playable"] = playable(seconds, args.rounds, wait, settings)
    t = result["time_to_playable"]
    print(f"time to playable HLG / SDR HEVC: {t['hlg_over_sdr_hevc']}x (target <= 1.3), "
          f"HLG / SDR H.264: {t['hlg_over_sdr_h264']}x", flush=True)  # fmt: skip
    result["where_the_time_goes"] = breakdown(seconds, settings)
    path = benchutil.write_result("colour-quick" if args.quick else "colour", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
