"""`bench/ingest.py --refine` (issue 17): the two stages against the seed's pipeline.

On four lavfi sources (noisy testsrc2, a mandelbrot zoom, a smooth gradient, a static
card; 1080p30 with a tone, encoded once like a phone's upload):

1. Quality per bit. Every rung of the final generation (the product's refinement:
   ``workers.media.ffmpeg.encode_renditions`` at REFINE_PRESET, after the same probe and
   loudness plan as the transcode) beside the seed's pipeline as the seed writes it
   (one ffmpeg run per rendition, preset ``medium``, `bench/seed_pipeline.py`) at the
   same bit rates: SSIM All against the source scaled to the rung (target: final >=
   seed - 0.002) and bytes (target: at most 3% above the seed's; per-title rate
   control, issue 26, spends less where the picture is easy). The fast generation's
   SSIM is listed too (its lowest rung: the first stage makes no other).
2. Time to playable of the noisy clip (probe, loudness measurement and the one-pass
   transcode at FAST_PRESET: what stands between an upload and its publish; target
   <= 0.7x the clip's length) and time to final (the refinement after it, at the
   refine job's niceness).
3. Two uploads in a row, A then B (the noisy clip twice): B's time to playable alone,
   and while A's refinement runs beside it on the same cores (two worker slots; the
   refinement at the refine job's niceness). With one worker slot the claim order
   (``core.queue.PRIORITIES``) runs B's transcode before A's refinement, so B waits
   for A's transcode only, as with REFINE=off: that figure is derived from the
   measured stage times.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchutil
import seed_pipeline
from ingest import SOURCE_FPS, _cpu, make_clip, ssim

from core import queue
from core.settings import Settings
from workers.jobs.refine import NICENESS, encode_final
from workers.jobs.transcode import preflight, rate_record, stage_ladder
from workers.media import ffmpeg as sf_ffmpeg
from workers.media.encoding import ladder_of, media_segments, stage_presets
from workers.media.probe import Limits

SIZE = "1920x1080"
SOURCES: dict[str, str] = {
    "noisy_testsrc2": f"testsrc2=size={SIZE}:rate={SOURCE_FPS},noise=alls=24:allf=t+u",
    "mandelbrot_zoom": f"mandelbrot=size={SIZE}:rate={SOURCE_FPS}",
    "smooth_gradient": f"gradients=size={SIZE}:rate={SOURCE_FPS}:speed=0.01",
    "static_card": f"smptehdbars=size={SIZE}:rate={SOURCE_FPS}",
}
SEED_PRESET = "medium"  # the seed's pipeline as the seed writes it
LIMITS = Limits(max_duration=3600.0)


async def _plan(source: Path, settings: Settings) -> tuple[Any, Any]:
    """What both jobs do first: probe, and the loudness measurement beside its picture
    check (`workers.jobs.transcode.preflight`)."""
    return await preflight(settings, source, LIMITS)


def _figures(started: float, renditions: Sequence[sf_ffmpeg.RenditionOutput]) -> dict[str, Any]:
    return {
        "seconds": time.perf_counter() - started,
        "playlists": {r.name: r.playlist for r in renditions},
        "bytes": {r.name: sum(r.sizes) for r in renditions},
        "durations": {r.name: list(r.durations) for r in renditions},
    }


async def fast_stage(source: Path, workdir: Path, settings: Settings) -> dict[str, Any]:
    """What the transcode job does before its upload and publish, timed (the first
    stage's rungs: `workers.jobs.transcode.stage_ladder`)."""
    started = time.perf_counter()
    info, plan = await _plan(source, settings)
    ladder = stage_ladder(settings, info)
    presets = stage_presets(ladder, settings.fast_preset)
    interval = settings.timeline_interval
    out = await sf_ffmpeg.transcode(
        source, workdir, info, ladder, presets=presets, frame_interval=interval, loudness=plan
    )
    figures = _figures(started, out.renditions)
    figures["metadata"] = {"rateControl": rate_record(ladder, out.renditions)}
    return figures


async def final_stage(
    source: Path,
    workdir: Path,
    settings: Settings,
    niceness: int = NICENESS,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the refine job does before its upload and publish, timed
    (`workers.jobs.refine.encode_final`, told what the first stage measured)."""
    started = time.perf_counter()
    info, plan = await _plan(source, settings)
    _, outputs = await encode_final(
        settings, source, workdir, info, plan, metadata or {}, niceness=niceness
    )
    return _figures(started, outputs)


def seed_stage(source: Path, workdir: Path, settings: Settings) -> dict[str, Any]:
    """The seed's renditions, one ffmpeg run each at `medium`, at our bit rates."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    playlists, sizes = {}, {}
    for rung in ladder_of(settings.ladder):
        cmd = seed_pipeline.variant_command(
            str(source), str(workdir), rung, float(SOURCE_FPS), preset=SEED_PRESET
        )
        subprocess.run(cmd, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        playlist = workdir / f"{rung.name}.m3u8"
        _, uris = media_segments(playlist.read_text())
        playlists[rung.name] = playlist
        sizes[rung.name] = sum((workdir / u).stat().st_size for u in uris)
    return {"seconds": time.perf_counter() - started, "playlists": playlists, "bytes": sizes}


def quality(name: str, seconds: int, settings: Settings, scratch: Path) -> dict[str, Any]:
    source = make_clip(seconds, name, SOURCES[name])
    work = scratch / name
    print(f"{name}: fast ...", end=" ", flush=True)
    fast = asyncio.run(fast_stage(source, work / "fast", settings))
    print(f"{fast['seconds']:.1f} s; final ...", end=" ", flush=True)
    final = asyncio.run(final_stage(source, work / "final", settings, metadata=fast["metadata"]))
    print(f"{final['seconds']:.1f} s; seed medium ...", end=" ", flush=True)
    seed = seed_stage(source, work / "seed", settings)
    print(f"{seed['seconds']:.1f} s", flush=True)
    rungs: dict[str, Any] = {}
    for rung in ladder_of(settings.ladder):
        row: dict[str, Any] = {}
        for who, run in (("fast", fast), ("final", final), ("seed", seed)):
            playlist = run["playlists"].get(rung.name)  # the first stage: the lowest alone
            row[who] = playlist and ssim(playlist, source, rung.width, rung.height)["all"]
        row["final_minus_seed"] = round(row["final"] - row["seed"], 5)
        row["ssim_ok"] = row["final_minus_seed"] >= -0.002
        row["bytes"] = {w: r["bytes"][rung.name] for w, r in (("final", final), ("seed", seed))}
        row["bytes_ratio"] = round(row["bytes"]["final"] / row["bytes"]["seed"], 4)
        # per title (issue 26): never more than the seed's ABR spends (3% for muxing)
        row["bytes_ok"] = row["bytes_ratio"] <= 1.03
        lowest = next(iter(fast["durations"].values()))
        row["drop_in"] = lowest == final["durations"][rung.name]
        rungs[rung.name] = row
        print(
            f"  {rung.name}: SSIM fast {row['fast'] or 0:.5f} final {row['final']:.5f} "
            f"seed {row['seed']:.5f}; bytes final/seed {row['bytes_ratio']:.3f}",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    return {
        "clip_seconds": seconds,
        "fast_seconds": round(fast["seconds"], 3),
        "final_seconds": round(final["seconds"], 3),
        "seed_seconds": round(seed["seconds"], 3),
        "rungs": rungs,
    }


async def _beside(source: Path, scratch: Path, settings: Settings) -> dict[str, float]:
    """B's fast stage while A's refinement runs (two worker slots)."""
    refining = asyncio.create_task(final_stage(source, scratch / "a_final", settings))
    await asyncio.sleep(1.0)  # A's refinement has started its ffmpeg
    started = time.perf_counter()
    b = await fast_stage(source, scratch / "b_fast", settings)
    b_playable = time.perf_counter() - started
    a = await refining
    return {"b_playable": b["seconds"], "b_wall": b_playable, "a_final": a["seconds"]}


def timing(
    seconds: int, settings: Settings, scratch: Path, wait: bool, rounds: int = 3
) -> dict[str, Any]:
    """Time to playable and to final of the noisy clip, then `rounds` of B's fast stage
    alone and beside A's refinement, in alternating order (this VM's speed drifts
    between runs: the figures are medians of interleaved runs)."""
    source = make_clip(seconds, "noisy_testsrc2", SOURCES["noisy_testsrc2"])
    benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
    with benchutil.Monitor() as mon:
        cpu = _cpu()
        a_fast = asyncio.run(fast_stage(source, scratch / "a_fast", settings))
        a_final = asyncio.run(
            final_stage(source, scratch / "a_final", settings, metadata=a_fast["metadata"])
        )
        cpu = _cpu() - cpu
    print(
        f"timing: playable {a_fast['seconds']:.1f} s ({a_fast['seconds'] / seconds:.2f}x), "
        f"final after {a_fast['seconds'] + a_final['seconds']:.1f} s",
        flush=True,
    )
    alone: list[float] = []
    beside: list[dict[str, float]] = []
    with benchutil.Monitor() as mon2:
        for n in range(rounds):
            for kind in ("alone", "beside") if n % 2 == 0 else ("beside", "alone"):
                if kind == "alone":
                    b = asyncio.run(fast_stage(source, scratch / "b_alone", settings))
                    alone.append(b["seconds"])
                else:
                    beside.append(asyncio.run(_beside(source, scratch, settings)))
            print(
                f"two uploads, round {n + 1}: B playable alone {alone[-1]:.1f} s, beside "
                f"A's refinement {beside[-1]['b_playable']:.1f} s",
                flush=True,
            )
    shutil.rmtree(scratch, ignore_errors=True)
    order = sorted(["transcode", "refine"], key=lambda k: -queue.PRIORITIES.get(k, 100))
    playable = statistics.median([a_fast["seconds"], *alone])  # every fast stage run alone
    b_alone = statistics.median(alone)
    b_beside = statistics.median(x["b_playable"] for x in beside)
    return {
        "clip_seconds": seconds,
        "time_to_playable_runs": [round(x, 3) for x in (a_fast["seconds"], *alone)],
        "time_to_playable": round(playable, 3),
        "playable_over_length": round(playable / seconds, 3),
        "target_playable_over_length": 0.7,
        "refine_seconds": round(a_final["seconds"], 3),
        "time_to_final": round(playable + a_final["seconds"], 3),
        "cpu_seconds_both_stages": round(cpu, 2),
        "others_during": mon.summary(),
        "two_uploads": {
            "rounds": rounds,
            "b_playable_alone_runs": [round(x, 3) for x in alone],
            "b_playable_beside_runs": [round(x["b_playable"], 3) for x in beside],
            "b_playable_alone": round(b_alone, 3),
            "b_playable_beside_a_refining_two_slots": round(b_beside, 3),
            "ratio_beside_over_alone": round(b_beside / b_alone, 3),
            "a_refine_seconds_beside_b": round(statistics.median(x["a_final"] for x in beside), 3),
            "one_slot_claim_order_after_a_transcode": order,
            "b_playable_one_slot_derived": round(playable + b_alone, 3),
            "others_during": mon2.summary(),
        },
        "disturbed": mon.disturbed or mon2.disturbed,
    }


def run(quick: bool, wait: bool, rounds: int = 3) -> dict[str, Any]:
    settings = Settings.from_env({})
    seconds = 8 if quick else 30
    scratch = Path(benchutil.OUT) / "refine-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
    with benchutil.Monitor() as mon:
        sources = {name: quality(name, seconds, settings, scratch) for name in SOURCES}
    return {
        "benchmark": "ingest-refine",
        "quick": quick,
        "machine": benchutil.machine(),
        "presets": {
            "fast": settings.fast_preset.default,
            "final": settings.refine_preset.default,
            "seed": SEED_PRESET,
            "refine_niceness": NICENESS,
        },
        "quality": sources,
        "quality_others_during": mon.summary(),
        "timing": timing(seconds, settings, scratch, wait, rounds),
    }


def report(result: dict[str, Any]) -> str:
    rows = []
    for name, q in result["quality"].items():
        for rung, r in q["rungs"].items():
            rows.append(
                [
                    name,
                    rung,
                    f"{r['fast']:.5f}" if r["fast"] else "-",
                    f"{r['final']:.5f}",
                    f"{r['seed']:.5f}",
                    f"{r['final_minus_seed']:+.5f}",
                    f"{r['bytes_ratio']:.3f}",
                    "ok" if r["ssim_ok"] and r["bytes_ok"] and r["drop_in"] else "MISS",
                ]
            )
    t = result["timing"]
    two = t["two_uploads"]
    head = ["source", "rung", "fast", "final", "seed medium", "final-seed", "bytes f/s", ""]
    return "\n".join(
        [
            "\nSSIM All against the source, and bytes, at equal bit rates\n",
            benchutil.table(head, rows),
            f"\n{t['clip_seconds']} s 1080p30 noisy clip: playable after (median) "
            f"{t['time_to_playable']:.1f} s ({t['playable_over_length']:.2f}x its length, "
            f"target <= 0.7x), final after {t['time_to_final']:.1f} s",
            f"two uploads in a row (median of {two['rounds']} interleaved rounds): "
            f"B playable after {two['b_playable_alone']:.1f} s alone, "
            f"{two['b_playable_beside_a_refining_two_slots']:.1f} s beside A's refinement "
            f"({two['ratio_beside_over_alone']:.2f}x); one slot (claim order "
            f"{' before '.join(two['one_slot_claim_order_after_a_transcode'])}): "
            f"{two['b_playable_one_slot_derived']:.1f} s after A's upload, as with REFINE=off"
            + (" [DISTURBED]" if t["disturbed"] else ""),
        ]
    )
