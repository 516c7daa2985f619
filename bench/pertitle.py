"""Issue 26: per-title rate control against ABR, and the time to playable and to final.

1. Corpus (default; `bench/corpus.py`: static slides, flat animation, a cellular
   pattern, noisy camera shake, a talking head; 1080p30 with a tone). Each source goes
   through the product's two stages as the jobs run them, twice in one run:
   RATE_CONTROL=per-title (the first stage's capped-CRF encode of the lowest rung,
   `workers.jobs.transcode.stage_ladder` + `rate_record`, then the refinement's
   `workers.jobs.refine.encode_final`, which makes a rung that went over its ABR budget
   again at ABR) and RATE_CONTROL=abr (`encode_final` at ABR: today's final ladder).
   Per rung: bytes, SSIM All against the source scaled to the rung (`ingest.ssim`),
   peak BANDWIDTH (RFC 8216 §4.1, as the master declares it) and the rate control
   used. Targets: median bytes per clip <= 0.80x abr's; every rung's SSIM >= abr's -
   0.003; no rung's peak above today's cap (the larger of abr's peak and the rung's
   VBV maxrate plus its audio).
   Then a 640x480 source (the talking head scaled down): its bytes before (both rungs
   made, upscaled, at ABR: what main did) and after (one rendition at its own size,
   per-title).
2. `--timing`: time to playable and to final of the noisy 1080p30 clip
   (`refinebench.SOURCES["noisy_testsrc2"]`) at 10, 30 and 120 s through the product:
   a private PostgreSQL cluster, `storyforge serve` and one `storyforge worker`
   (LocalStorage), the clip POSTed; playable = the segment's `ready_at - created_at`
   (upload accepted -> clip in the scene, from its rows), final = when its status
   says `final` (polled every 0.1 s). The refinement's cost: the worker's children's
   CPU seconds (ffmpeg, ffprobe) between the two, per clip-second.

Usage: ``.venv/bin/python bench/pertitle.py [--seconds N] [--timing [--lengths 10,30]]
[--rounds N] [--no-wait]``. Writes ``bench/results/pertitle.json`` (``--timing``:
``pertitle-timing.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchutil
import corpus
from ingest import make_clip, ssim
from refinebench import SOURCES

from core import playlists
from core.settings import Settings
from workers.jobs.refine import encode_final
from workers.jobs.transcode import preflight, rate_record, stage_ladder
from workers.media import ffmpeg as sf_ffmpeg
from workers.media.encoding import DEFAULT_RUNGS, Rung, abr, ladder_of, stage_presets
from workers.media.probe import Limits

LIMITS = Limits(max_duration=3600.0)
RUNGS = {r.name: r for r in DEFAULT_RUNGS}


def _peak(r: sf_ffmpeg.RenditionOutput) -> int:
    return playlists.peak_bandwidth(r.durations, r.sizes, playlists.target_duration([r.durations]))


def _figures(rungs: list[Rung], outs: list[sf_ffmpeg.RenditionOutput], src: Path) -> dict:
    rows = {}
    for rung, r in zip(rungs, outs, strict=True):
        rows[rung.name] = {
            "size": f"{r.width}x{r.height}",
            "crf": rung.crf,
            "bytes": sum(r.sizes),
            "kbps": round(8 * sum(r.sizes) / sum(r.durations) / 1000),
            "peak": _peak(r),
            "ssim": ssim(r.playlist, src, r.width, r.height)["all"],
        }
    return rows


async def per_title(settings: Settings, src: Path, work: Path) -> tuple[list[Rung], list]:
    """The product's two stages under per-title rate control, renditions of the final."""
    info, plan = await preflight(settings, src, LIMITS)
    first = stage_ladder(settings, info)
    out = await sf_ffmpeg.transcode(
        src,
        work / "first",
        info,
        first,
        presets=stage_presets(first, settings.fast_preset),
        frame_interval=settings.timeline_interval,
        loudness=plan,
    )
    metadata = {"rateControl": rate_record(first, out.renditions)}
    return await encode_final(settings, src, work / "final", info, plan, metadata, niceness=0)


async def abr_final(settings: Settings, src: Path, work: Path) -> tuple[list[Rung], list]:
    info, plan = await preflight(settings, src, LIMITS)
    return await encode_final(settings, src, work, info, plan, {}, niceness=0)


async def before(settings: Settings, src: Path, work: Path) -> tuple[list[Rung], list]:
    """What main made of any source: every rung at its frame (upscaled), ABR."""
    info, plan = await preflight(settings, src, LIMITS)
    ladder = list(abr(ladder_of(settings.ladder)))
    outs = await sf_ffmpeg.encode_renditions(
        src,
        work,
        info,
        ladder,
        presets=stage_presets(ladder, settings.refine_preset),
        loudness=plan,
    )
    return ladder, list(outs)


def corpus_table(seconds: int, scratch: Path) -> dict[str, Any]:
    pt = Settings.from_env({})
    ab = dataclasses.replace(pt, rate_control="abr")
    clips: dict[str, Any] = {}
    for name in corpus.CORPUS:
        src = corpus.make(name, seconds)
        started = time.perf_counter()
        rungs, outs = asyncio.run(per_title(pt, src, scratch / name / "pt"))
        pt_rows = _figures(rungs, outs, src)
        rungs, outs = asyncio.run(abr_final(ab, src, scratch / name / "abr"))
        abr_rows = _figures(rungs, outs, src)
        shutil.rmtree(scratch / name, ignore_errors=True)
        rows = {}
        for rung, p in pt_rows.items():
            a = abr_rows[rung]
            cap = max(a["peak"], RUNGS[rung].maxrate + RUNGS[rung].audio_bitrate)
            rows[rung] = {
                "per_title": p,
                "abr": a,
                "ssim_diff": round(p["ssim"] - a["ssim"], 5),
                "ssim_ok": p["ssim"] >= a["ssim"] - 0.003,
                "cap": cap,
                "peak_ok": p["peak"] <= cap,
            }
        total_pt = sum(r["per_title"]["bytes"] for r in rows.values())
        total_abr = sum(r["abr"]["bytes"] for r in rows.values())
        clips[name] = {"rungs": rows, "bytes_ratio": round(total_pt / total_abr, 4)}
        print(
            f"{name}: per-title/abr bytes {clips[name]['bytes_ratio']:.3f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    median = statistics.median(c["bytes_ratio"] for c in clips.values())
    small_src = corpus.make("talking_head", seconds, size="640x480")
    rungs, outs = asyncio.run(before(pt, small_src, scratch / "small_before"))
    old = _figures(rungs, outs, small_src)
    rungs, outs = asyncio.run(per_title(pt, small_src, scratch / "small_after"))
    new = _figures(rungs, outs, small_src)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "clip_seconds": seconds,
        "crf": {r: pt.per_title_crf.of(r) for r in RUNGS},
        "clips": clips,
        "median_bytes_ratio": round(median, 4),
        "median_ok": median <= 0.80,
        "ssim_ok": all(r["ssim_ok"] for c in clips.values() for r in c["rungs"].values()),
        "peak_ok": all(r["peak_ok"] for c in clips.values() for r in c["rungs"].values()),
        "small_640x480": {
            "before": old,
            "after": new,
            "bytes_before": sum(r["bytes"] for r in old.values()),
            "bytes_after": sum(r["bytes"] for r in new.values()),
        },
    }


def corpus_report(result: dict[str, Any]) -> str:
    rows = []
    for name, c in result["clips"].items():
        for rung, r in c["rungs"].items():
            p, a = r["per_title"], r["abr"]
            how = f"crf {p['crf']:g}" if p["crf"] is not None else "abr (hard)"
            rows.append(
                [
                    name,
                    rung,
                    how,
                    f"{p['kbps']} / {a['kbps']}",
                    f"{p['ssim']:.5f} / {a['ssim']:.5f}",
                    f"{r['ssim_diff']:+.5f}",
                    f"{p['peak'] // 1000} / {r['cap'] // 1000}",
                    f"{c['bytes_ratio']:.3f}",
                ]
            )
    head = ["source", "rung", "per-title", "kbit/s pt / abr", "SSIM pt / abr", "diff"]
    head += ["peak / cap kbit/s", "clip bytes pt/abr"]
    small = result["small_640x480"]
    lines = [
        f"\nPer-title vs ABR on the corpus ({result['clip_seconds']} s clips, CRF {result['crf']})\n",
        benchutil.table(head, rows),
        f"\nmedian bytes per clip per-title/abr: {result['median_bytes_ratio']:.3f} (<= 0.80: "
        f"{'ok' if result['median_ok'] else 'MISS'}); SSIM >= abr - 0.003 on every rung: "
        f"{'ok' if result['ssim_ok'] else 'MISS'}; peaks within the cap: "
        f"{'ok' if result['peak_ok'] else 'MISS'}",
        f"640x480 source: {small['bytes_before']:,} bytes before ("
        + ", ".join(f"{k} {v['size']}" for k, v in small["before"].items())
        + f"), {small['bytes_after']:,} after ("
        + ", ".join(f"{k} {v['size']} SSIM {v['ssim']:.5f}" for k, v in small["after"].items())
        + f"): {small['bytes_after'] / small['bytes_before']:.3f}x",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ timing


TOKEN = "bench-" + secrets.token_hex(12)


def _children_cpu(pid: int) -> float:
    """CPU seconds of the waited-for children of `pid` (its ffmpeg and ffprobe runs)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


async def _one_upload(base: str, dsn: str, clip: Path, worker_pid: int) -> dict[str, float]:
    import aiohttp
    import asyncpg

    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base}/api/v1/users", json={"username": f"p{secrets.token_hex(4)}"}, headers=auth
        ) as r:
            user = (await r.json())["id"]
        async with session.post(f"{base}/api/v1/scenes", json={"title": "t"}, headers=auth) as r:
            scene = (await r.json())["id"]
        cpu0 = _children_cpu(worker_pid)
        async with session.post(
            f"{base}/api/v1/scenes/{scene}/segments",
            params={"contributor": user},
            data=clip.read_bytes(),
            headers={**auth, "Content-Type": "video/mp4"},
        ) as r:
            accepted = time.monotonic()
            seg = (await r.json())["segmentId"]
        playable_cpu = None
        while True:
            async with session.get(f"{base}/api/v1/segments/{seg}") as r:
                status = await r.json()
            if status.get("status") == "ready" and playable_cpu is None:
                playable_cpu = _children_cpu(worker_pid)
            if status.get("status") == "failed":
                raise RuntimeError(f"the clip failed: {status}")
            if status.get("quality") == "final":
                final = time.monotonic() - accepted
                break
            await asyncio.sleep(0.1)
        final_cpu = _children_cpu(worker_pid)
    conn = await asyncpg.connect(dsn)
    try:
        playable = await conn.fetchval(
            "SELECT extract(epoch FROM ready_at - created_at) FROM segments WHERE id = $1", seg
        )
    finally:
        await conn.close()
    return {
        "playable": float(playable),
        "final": final,
        "first_stage_cpu": (playable_cpu or final_cpu) - cpu0,
        "refine_cpu": final_cpu - (playable_cpu or final_cpu),
    }


def timing(lengths: list[int], rounds: int, wait: bool) -> dict[str, Any]:
    from wake import _readyz

    from core import db
    from storyforge.dev.cluster import free_port, open_cluster

    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-pertitle-"))
    cluster = open_cluster(tmp / "pg")
    procs: list[subprocess.Popen] = []
    results: dict[str, Any] = {}
    try:
        cluster.init()
        cluster.start(fast=True)
        asyncio.run(db.migrate_dsn(cluster.dsn))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": cluster.dsn,
            "STORAGE": "local",
            "STORAGE_ROOT": str(tmp / "storage"),
            "API_TOKENS": TOKEN,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "ACCESS_LOG": "off",
            "WORKER_METRICS_PORT": "0",
        }
        bindir = Path(sys.executable).parent
        for cmd in (["serve"], ["worker"]):
            log = (tmp / f"{cmd[0]}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [str(bindir / "storyforge"), *cmd],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        base = f"http://127.0.0.1:{port}"

        async def ready() -> None:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                await _readyz(session, base)

        asyncio.run(ready())
        for seconds in lengths:
            clip = make_clip(seconds, "noisy_testsrc2", SOURCES["noisy_testsrc2"])
            runs = []
            for n in range(rounds):
                quiet = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
                with benchutil.Monitor(extra_pids=benchutil.cluster_pids(cluster)) as mon:
                    run = asyncio.run(_one_upload(base, cluster.dsn, clip, procs[1].pid))
                run["quiet_before"] = quiet["quiet"]
                run["disturbed"] = mon.disturbed
                run["monitor"] = mon.summary()  # what else ran, when it was disturbed
                runs.append(run)
                print(
                    f"{seconds} s clip, round {n + 1}: playable {run['playable']:.1f} s "
                    f"({run['playable'] / seconds:.2f}x), final {run['final']:.1f} s, refine "
                    f"{run['refine_cpu'] / seconds:.2f} CPU-s per clip-second"
                    + (" DISTURBED" if mon.disturbed else ""),
                    flush=True,
                )
            playable = statistics.median(r["playable"] for r in runs)
            results[str(seconds)] = {
                "runs": runs,
                "playable": round(playable, 3),
                "playable_over_length": round(playable / seconds, 3),
                "final": round(statistics.median(r["final"] for r in runs), 3),
                "refine_cpu_per_clip_second": round(
                    statistics.median(r["refine_cpu"] for r in runs) / seconds, 3
                ),
                "first_stage_cpu_per_clip_second": round(
                    statistics.median(r["first_stage_cpu"] for r in runs) / seconds, 3
                ),
            }
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"lengths": results, "target_playable_over_length": 0.4}


def timing_report(result: dict[str, Any]) -> str:
    rows = [
        [
            f"{s} s",
            f"{r['playable']:.1f} ({r['playable_over_length']:.2f}x)",
            f"{r['final']:.1f}",
            f"{r['first_stage_cpu_per_clip_second']:.2f}",
            f"{r['refine_cpu_per_clip_second']:.2f}",
            "yes" if any(x["disturbed"] for x in r["runs"]) else "no",
        ]
        for s, r in result["lengths"].items()
    ]
    head = ["noisy 1080p30 clip", "playable s (median)", "final s", "first stage CPU-s/s"]
    head += ["refine CPU-s/s", "disturbed"]
    return "\nTime to playable (upload accepted -> in the scene) and to final\n\n" + (
        benchutil.table(head, rows)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=20, help="corpus clip length (default 20)")
    p.add_argument("--timing", action="store_true", help="time to playable and to final")
    p.add_argument("--lengths", default="10,30,120", help="clip lengths of --timing")
    p.add_argument("--rounds", type=int, default=3, help="uploads per length (default 3)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    a = p.parse_args(argv)
    info = benchutil.machine()
    if a.timing:
        lengths = [int(x) for x in a.lengths.split(",")]
        result = timing(lengths, a.rounds, not a.no_wait)
        print(timing_report(result))
        path = benchutil.write_result(
            "pertitle-timing", {"benchmark": "pertitle-timing", "machine": info, **result}
        )
    else:
        scratch = Path(benchutil.OUT) / "pertitle-scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        with benchutil.Monitor() as mon:
            result = corpus_table(a.seconds, scratch)
        print(corpus_report(result))
        data = {"benchmark": "pertitle", "machine": info, "others": mon.summary(), **result}
        path = benchutil.write_result("pertitle", data)
    print(f"\nwrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
