"""Export benchmark (issues 12, 23): the export job beside `ffmpeg -f concat -c copy`.

In one run, on this machine: a private PostgreSQL cluster (storyforge.dev.cluster) and
LocalStorage in a scratch directory. One 30 s 720p clip per frame rate (24, 25, 30 and
50 fps; lavfi testsrc2 + sine at 1280x720) goes through the product's transcode once
(`workers.media.ffmpeg.transcode`, the 720p rung; kept in bench/out/export-sources/). Each
is then published again and again as different segments of one scene
(`catalog.publish_segment`, objects copied through the Storage protocol), the rates
cycling, so joins between clips of different frame rates and H.264 levels are the rule.

- **Ours.** `exports.start_export` queues the `export` job; a separate process runs the
  product's job loop with the product's export handler (on uvloop, like `storyforge
  worker`) until that job is done: fetch through LocalStorage, join, remux into a
  progressive MP4 with ffmpeg's `-movflags +faststart`, check it (ffprobe and its
  top-level boxes), upload to the exports bucket, publish. Timed: the handler, from its
  start to its return. Peak RSS: `getrusage` of that process (`RUSAGE_SELF`, imports
  included) and of its children (`RUSAGE_CHILDREN`: the largest child it ran, the
  remuxing ffmpeg or the checking ffprobe, which run one after the other); the job's
  figure is their sum (an upper bound). Also sampled every 10 ms: the worker's RSS plus
  its live children's (the tree's peak as it happened).
- **Anchor.** The seed's §8.1 command over the same TS files on disk:
  `ffmpeg -f concat -safe 0 -i list.txt -c copy out.mp4` (no faststart, no storage, no
  upload). Its output is measured too: duration and where its audio ends.

`--clips` (default 20) clips of 30 s for the timed runs, alternating ours and the anchor
`--rounds` times (default 3; medians); then one run of ours on a `--big` (default 200)
clip scene. Figures: real-time factor (scene seconds / job seconds, target >= 50x) at
both sizes, time ratio ours / anchor, peak RSS at both sizes (target: the job, worker +
largest child, <= 256 MB).

Usage: ``.venv/bin/python bench/export.py [--clips N] [--big N] [--rounds N] [--quick]
[--no-wait]``. ``--quick``: 4 and 12 clips, one round (a smoke test). Writes
``bench/results/export.json`` (``export-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchutil

from core import catalog, db, exportplan, exports, layout, playlists
from core.settings import Settings
from core.storage import open_configured_storage
from storyforge.dev.cluster import open_cluster
from workers.jobs.transcode import clip_renditions
from workers.media import exportcmd
from workers.media import ffmpeg as sf_ffmpeg
from workers.media.encoding import DEFAULT_RUNGS

RATES = (24, 25, 30, 50)
SECONDS = 30
RUNG = DEFAULT_RUNGS[0]  # 720p
SOURCES = benchutil.OUT / "export-sources"
TARGET_REALTIME = 50.0  # x real time, at least
TARGET_JOB_RSS_MB = 256.0  # worker + largest child, at most


# ---------------------------------------------------------------- the sources


def source(fps: int) -> tuple[Path, playlists.Rendition]:
    """The 720p rendition of a 30 s clip at `fps`, transcoded once by the product."""
    out = SOURCES / f"{fps}fps"
    meta = out / "rendition.json"
    if meta.exists():
        return out, playlists.Rendition(**json.loads(meta.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    clip = out / "source.mp4"
    print(f"transcoding the {fps} fps source ...", flush=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        + ["-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={fps}:duration={SECONDS}"]
        + ["-f", "lavfi", "-i", f"sine=frequency=440:beep_factor=4:duration={SECONDS}"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-b:v", "6M"]
        + ["-c:a", "aac", "-b:a", "192k", str(clip)],
        check=True,
    )

    async def run() -> sf_ffmpeg.TranscodeOutput:
        info = await sf_ffmpeg.probe(clip)
        return await sf_ffmpeg.transcode(clip, out / "work", info, (RUNG,))

    result = asyncio.run(run())
    (rendition,), _ = clip_renditions(result)
    for path in result.renditions[0].segments:
        path.rename(out / path.name)
    shutil.rmtree(out / "work")
    fields = {
        f: getattr(rendition, f)
        for f in ("profile", "width", "height", "frame_rate", "codecs", "bandwidth_peak")
    }
    fields |= {
        "bandwidth_average": rendition.bandwidth_average,
        "durations": list(rendition.durations),
        "sizes": list(rendition.sizes),
    }
    meta.write_text(json.dumps(fields))
    return out, rendition


async def build_scene(settings: Settings, clips: int) -> tuple[str, int, list[Path]]:
    """A scene of `clips` published copies of the sources (rates cycling); returns the
    scene, its version and the TS files in scene order (for the anchor)."""
    pool = await db.connect_pool(settings.database_url, size=2)
    storage = await open_configured_storage(settings)
    files: list[Path] = []
    try:
        await storage.ensure_buckets(settings.buckets)
        async with pool.acquire() as conn:
            user = await catalog.create_user(conn, f"bench-{os.urandom(4).hex()}")
            scene = await catalog.create_scene(conn, f"Bench {clips} clips")
            version = 0
            for i in range(clips):
                folder, rendition = source(RATES[i % len(RATES)])
                seg = layout.new_id("seg")
                for n in range(1, len(rendition.durations) + 1):
                    name = layout.media_segment_name(rendition.profile, n)
                    meta = layout.file_meta(name)
                    key = layout.segment_key(scene.id, seg, name)
                    await storage.put(
                        settings.videos_bucket,
                        key,
                        folder / name,
                        content_type=meta.content_type,
                        cache_control=meta.cache_control,
                        tags={"type": meta.tag},
                    )
                    files.append(settings.storage_root / settings.videos_bucket / key)
                async with conn.transaction():
                    await catalog.insert_segment(conn, seg, scene.id, i + 1, user.id)
                    published = await catalog.publish_segment(
                        conn,
                        seg,
                        duration=sum(rendition.durations),
                        metadata={},
                        renditions=[rendition],
                        webhooks=(),
                    )
                    assert published is not None
                    version = published
    finally:
        await storage.aclose()
        await pool.close()
    return scene.id, version, files


# ------------------------------------------------------------------ the runs


def job_main(dsn: str, root: str) -> int:
    """The job process: the product's job loop and export handler for one job."""
    import uvloop

    from workers.jobs import export
    from workers.runtime.loop import run_worker

    settings = Settings.from_env({}, database_url=dsn, storage_root=Path(root))
    timing: dict[str, float] = {}

    async def run() -> None:
        pool = await db.connect_pool(dsn, size=4)
        storage = await open_configured_storage(settings)
        stop = asyncio.Event()
        handler = export.make_handler(settings, storage)

        async def timed(ctx: Any) -> None:
            timing["rss_before_job_mb"] = rss_mb()
            started = time.monotonic()
            try:
                await handler(ctx)
            finally:
                timing["job_s"] = time.monotonic() - started
                stop.set()

        try:
            await run_worker(pool, {"export": timed}, stop=stop, name="bench-export")
        finally:
            await storage.aclose()
            await pool.close()

    sampler = TreeSampler()
    sampler.start()
    try:
        uvloop.run(run())
    finally:
        sampler.stop()
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    print(
        json.dumps(
            {
                "job_s": timing.get("job_s"),
                "rss_before_job_mb": timing.get("rss_before_job_mb"),
                "peak_rss_self_mb": round(me.ru_maxrss / 1024, 1),
                "peak_rss_children_mb": round(children.ru_maxrss / 1024, 1),
                "peak_rss_tree_sampled_mb": round(sampler.peak_kb / 1024, 1),
                "children_seen": sorted(sampler.commands),
            }
        )
    )
    return 0


class TreeSampler:
    """This process's RSS plus its live children's, every `interval` s, in a thread:
    the peak of the tree as it happened (a child shorter than one interval is missed;
    `RUSAGE_CHILDREN` is not)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak_kb = 0
        self.commands: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval):
            total = _rss_kb(me)
            for pid in _children(me):
                total += _rss_kb(pid)
                try:
                    self.commands.add(Path(f"/proc/{pid}/comm").read_text().strip())
                except OSError:
                    pass
            self.peak_kb = max(self.peak_kb, total)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb() -> float:
    """This process's resident set now (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def run_ours(settings: Settings, scene: str, version: int) -> dict[str, Any]:
    async def queue_it() -> str:
        pool = await db.connect_pool(settings.database_url, size=1)
        try:
            async with pool.acquire() as conn:
                key = exportplan.dedupe_key(scene, RUNG.name, version, None) + os.urandom(4).hex()
                export, _ = await exports.start_export(
                    conn, scene, RUNG.name, version, None, dedupe_key=key, max_attempts=1
                )
                return export.id
        finally:
            await pool.close()

    export_id = asyncio.run(queue_it())
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, __file__, "--job", settings.database_url, str(settings.storage_root)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.monotonic() - started
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mp4 = (
        settings.storage_root
        / settings.exports_bucket
        / layout.export_key(scene, export_id, f"full_{RUNG.name}.mp4")
    )
    assert mp4.exists(), done.stderr[-2000:]
    result |= {"process_s": round(wall, 2), "output": facts(mp4)}
    shutil.rmtree(mp4.parent)  # keep the scratch disk small
    return result


def run_anchor(files: list[Path], work: Path) -> dict[str, Any]:
    listing = work / "concat.txt"
    listing.write_text("".join(f"file '{f}'\n" for f in files))
    out = work / "anchor.mp4"
    out.unlink(missing_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-y", "-f", "concat", "-safe", "0"]
    cmd += ["-i", str(listing), "-c", "copy", str(out)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    assert proc.returncode == 0, stderr[-2000:]
    return {
        "job_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "non_monotonic_dts_warnings": stderr.count("Non-monotonous DTS"),
        "output": facts(out),
    }


def facts(mp4: Path) -> dict[str, Any]:
    """Duration, stream ends and size of an MP4, as ffprobe sees them."""
    info = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(mp4)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    ends = {
        s["codec_type"]: round(float(s.get("start_time", 0)) + float(s.get("duration", 0)), 3)
        for s in info["streams"]
    }
    return {
        "duration_s": round(float(info["format"]["duration"]), 3),
        "video_end_s": ends.get("video"),
        "audio_end_s": ends.get("audio"),
        "bytes": mp4.stat().st_size,
    }


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clips", type=int, default=20, help="clips of the timed scene")
    parser.add_argument("--big", type=int, default=200, help="clips of the memory scene")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (medians)")
    parser.add_argument("--quick", action="store_true", help="4 and 12 clips, one round")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--job", nargs=2, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.job:
        return job_main(*a.job)
    if a.quick:
        a.clips, a.big, a.rounds = 4, 12, 1
    for fps in RATES:
        source(fps)
    quiet = benchutil.wait_quiet(timeout=0 if a.no_wait else 600)
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-export-", dir=benchutil.OUT))
    cluster = open_cluster(tmp / "pg")
    try:
        cluster.init()
        cluster.start(fast=True)
        asyncio.run(db.migrate_dsn(cluster.dsn))
        settings = Settings.from_env({}, database_url=cluster.dsn, storage_root=tmp / "storage")
        scene, version, files = asyncio.run(build_scene(settings, a.clips))
        seconds = a.clips * SECONDS
        ours: list[dict[str, Any]] = []
        anchor: list[dict[str, Any]] = []
        monitors = []
        for r in range(a.rounds):
            order = [("ours", ours), ("anchor", anchor)]
            for name, runs in order if r % 2 == 0 else order[::-1]:
                print(f"round {r + 1}: {name} ...", flush=True)
                with benchutil.Monitor(extra_pids=benchutil.cluster_pids(cluster)) as monitor:
                    runs.append(
                        run_ours(settings, scene, version)
                        if name == "ours"
                        else run_anchor(files, tmp)
                    )
                runs[-1]["monitor"] = monitor.summary()
                monitors.append(monitor.disturbed)
        print(f"memory: {a.big} clips ...", flush=True)
        big_scene, big_version, _ = asyncio.run(build_scene(settings, a.big))
        big = run_ours(settings, big_scene, big_version)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    ours_s = statistics.median(r["job_s"] for r in ours)
    anchor_s = statistics.median(r["job_s"] for r in anchor)
    small_job = max(r["peak_rss_self_mb"] + r["peak_rss_children_mb"] for r in ours)
    big_job = round(big["peak_rss_self_mb"] + big["peak_rss_children_mb"], 1)
    realtime = round(seconds / ours_s, 1)
    big_realtime = round(a.big * SECONDS / big["job_s"], 1)
    summary = {
        "scene_seconds": seconds,
        "movflags": exportcmd.PROGRESSIVE,
        "ours_median_s": round(ours_s, 2),
        "anchor_median_s": round(anchor_s, 2),
        "ours_realtime_factor": realtime,
        "anchor_realtime_factor": round(seconds / anchor_s, 1),
        "time_ratio_ours_over_anchor": round(ours_s / anchor_s, 2),
        "peak_rss_mb": {
            f"{a.clips}_clips_worker": max(r["peak_rss_self_mb"] for r in ours),
            f"{a.clips}_clips_child": max(r["peak_rss_children_mb"] for r in ours),
            f"{a.clips}_clips_job": small_job,
            f"{a.clips}_clips_tree_sampled": max(r["peak_rss_tree_sampled_mb"] for r in ours),
            f"{a.big}_clips_worker": big["peak_rss_self_mb"],
            f"{a.big}_clips_child": big["peak_rss_children_mb"],
            f"{a.big}_clips_job": big_job,
            f"{a.big}_clips_tree_sampled": big["peak_rss_tree_sampled_mb"],
        },
        "big_realtime_factor": big_realtime,
        "targets": {"realtime_factor_min": TARGET_REALTIME, "job_rss_mb_max": TARGET_JOB_RSS_MB},
        "meets_targets": min(realtime, big_realtime) >= TARGET_REALTIME
        and max(small_job, big_job) <= TARGET_JOB_RSS_MB,
        "disturbed": any(monitors),
    }
    data = {
        "machine": benchutil.machine(),
        "quiet": quiet,
        "clips": a.clips,
        "big": a.big,
        "clip_seconds": SECONDS,
        "rates": RATES,
        "summary": summary,
        "ours": ours,
        "anchor": anchor,
        "big_run": big,
    }
    path = benchutil.write_result("export-quick" if a.quick else "export", data)
    print(f"\n{a.clips} x {SECONDS} s 720p clips ({seconds} s), medians of {a.rounds}\n")
    print(
        benchutil.table(
            [
                "",
                "seconds",
                "x real time",
                "peak RSS MB: worker / largest child = job (tree sampled)",
                "output s",
            ],
            [
                [
                    "ours (export job)",
                    summary["ours_median_s"],
                    summary["ours_realtime_factor"],
                    f"{summary['peak_rss_mb'][f'{a.clips}_clips_worker']} / "
                    f"{summary['peak_rss_mb'][f'{a.clips}_clips_child']} = "
                    f"{small_job:.1f} "
                    f"({summary['peak_rss_mb'][f'{a.clips}_clips_tree_sampled']})",
                    ours[0]["output"]["duration_s"],
                ],
                [
                    "anchor (concat -c copy)",
                    summary["anchor_median_s"],
                    summary["anchor_realtime_factor"],
                    max(r["peak_rss_mb"] for r in anchor),
                    anchor[0]["output"]["duration_s"],
                ],
                [
                    f"ours, {a.big} clips",
                    round(big["job_s"], 2),
                    summary["big_realtime_factor"],
                    f"{big['peak_rss_self_mb']} / {big['peak_rss_children_mb']} = "
                    f"{big_job:.1f} ({big['peak_rss_tree_sampled_mb']})",
                    big["output"]["duration_s"],
                ],
            ],
        )
    )
    print(f"\nours / anchor time: {summary['time_ratio_ours_over_anchor']}x")
    print(
        f"targets (>= {TARGET_REALTIME:g}x real time, job <= {TARGET_JOB_RSS_MB:g} MB): "
        + ("met" if summary["meets_targets"] else "NOT met")
        + (" (disturbed machine: times are pessimistic)" if summary["disturbed"] else "")
    )
    print(f"wrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
