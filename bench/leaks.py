"""Worker memory benchmark (issue 29): does a worker's memory grow with the jobs it runs?

In one run, on this machine: a private PostgreSQL cluster (bench/serve.py
`start_cluster`) and LocalStorage in a scratch directory; one worker in this process,
the product's job loop and handlers (`workers.runtime.main.handlers`, on uvloop, one
job at a time, as `storyforge worker`), with a loopback webhook receiver (every
publish writes events: `webhook` jobs run too). A 4 s 320x240 clip (lavfi) is
uploaded ``--transcodes`` times into one scene (`transcode`, then its `refine`, then
their webhooks); then ``--exports`` exports run one after another (each its own job:
the dedupe key is made unique) of a scene of ``--export-clips`` 30 s 720p clips
published as bench/export.py builds it (`build_scene`, its sources transcoded once).

After each job: the process's RSS (VmRSS), glibc's heap figures (`mallinfo2`: bytes
in use and free in the arenas, mmapped), Python's live objects (`gc.get_objects`) and,
with ``--tracemalloc``, the bytes tracemalloc sees. Reported per phase: the figures
after ``--warmup`` jobs and at the end, growth per job since warm-up, and with
``--tracemalloc`` the 15 allocation sites that grew most, the object types that grew
most.

The worker's allocator policy is applied as `storyforge worker` applies it
(`core.memory.fix_mmap_threshold`); ``--glibc-default`` leaves glibc's (the creep).

Usage: ``.venv/bin/python bench/leaks.py [--transcodes N] [--exports N] [--warmup N]
[--glibc-default] [--tracemalloc] [--no-wait] [--out NAME]``. Writes ``bench/results/leaks.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import benchutil
from aiohttp import web
from export import RATES, build_scene, source
from serve import start_cluster

from core import catalog, db, exportplan, exports, layout, memory
from core.settings import Settings
from core.storage import Storage, open_configured_storage
from origin.ingest.intake import segment_and_transcode
from workers.runtime.loop import run_worker
from workers.runtime.main import handlers

LADDER = "240p:320x240:300k,720p:1280x720:1500k"  # the exports read 720p
SOURCE = benchutil.OUT / "leaks-source.mp4"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> dict[str, float]:
    """glibc's heap: MB in use (`uordblks`), free in the arenas (`fordblks`), mmapped."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    m = fn()
    mb = 1024 * 1024
    return {
        "heap_used_mb": round(m.uordblks / mb, 2),
        "heap_free_mb": round(m.fordblks / mb, 2),
        "mmapped_mb": round(m.hblkhd / mb, 2),
    }


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 2)
    return -1.0


def open_files(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample() -> dict[str, Any]:
    gc.collect()
    found: dict[str, Any] = {"rss_mb": rss_mb(), "open_files": open_files(), **_mallinfo()}
    found["objects"] = len(gc.get_objects())
    if tracemalloc.is_tracing():
        found["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 1024 / 1024, 2)
    return found


def make_source() -> Path:
    if not SOURCE.exists():
        SOURCE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
            + ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4"]
            + ["-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:duration=4"]
            + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
            + ["-c:a", "aac", str(SOURCE)],
            check=True,
        )
    return SOURCE


async def wait_idle(pool: asyncpg.Pool, timeout: float = 600) -> None:
    """Until no job is queued (due) or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'running' "
            "OR (status = 'queued' AND run_after <= now())"
        )
        if busy == 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("jobs still running")


async def upload_clip(pool: asyncpg.Pool, storage: Storage, settings: Settings, scene, user):
    job_id, seg = layout.new_id("job"), layout.new_id("seg")
    await storage.put(
        settings.internal_bucket, layout.upload_key(job_id), SOURCE, content_type="video/mp4"
    )
    async with pool.acquire() as conn, conn.transaction():
        await segment_and_transcode(
            conn,
            scene_id=scene,
            segment_id=seg,
            job_id=job_id,
            sequence=None,
            contributor=user,
            max_attempts=1,
        )


async def start_one_export(pool: asyncpg.Pool, scene: str, quality: str) -> None:
    async with pool.acquire() as conn:
        version = await catalog.live_scene_version(conn, scene)
        assert version is not None
        key = exportplan.dedupe_key(scene, quality, version, None) + os.urandom(4).hex()
        await exports.start_export(
            conn, scene, quality, version, None, dedupe_key=key, max_attempts=1
        )


async def phase(
    name: str,
    n: int,
    warmup: int,
    step: Callable[[], Awaitable[None]],
    pool: asyncpg.Pool,
    traced: bool,
) -> dict[str, Any]:
    samples = [sample()]
    snapshot = None
    objects: Counter[str] = Counter()
    started = time.monotonic()
    for i in range(n):
        await step()
        await wait_idle(pool)
        samples.append(sample())
        if i + 1 == warmup:
            objects = Counter(type(o).__name__ for o in gc.get_objects())
            if traced:
                snapshot = tracemalloc.take_snapshot()
        print(f"{name} {i + 1}/{n}: {samples[-1]}", flush=True)
    warm, end = samples[min(warmup, n)], samples[-1]
    jobs = max(1, n - warmup)
    found: dict[str, Any] = {
        "jobs": n,
        "seconds": round(time.monotonic() - started, 1),
        "start": samples[0],
        "after_warmup": warm,
        "end": end,
        "rss_growth_after_warmup_mb": round(end["rss_mb"] - warm["rss_mb"], 2),
        "rss_growth_per_job_kb": round((end["rss_mb"] - warm["rss_mb"]) * 1024 / jobs, 1),
        "objects_growth_per_job": round((end["objects"] - warm["objects"]) / jobs, 1),
        "rss_mb": [s["rss_mb"] for s in samples],
    }
    grown = Counter(type(o).__name__ for o in gc.get_objects())
    grown.subtract(objects)
    found["object_types_grown"] = [(t, c) for t, c in grown.most_common(10) if c > 0]
    if snapshot is not None:
        top = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")[:15]
        found["traced_sites_grown"] = [
            f"{s.size_diff / 1024:+.1f} KiB {s.count_diff:+d}: {s.traceback}" for s in top
        ]
    return found


async def receiver() -> tuple[web.AppRunner, str, list[int]]:
    """A loopback webhook endpoint answering 200; counts what it gets."""
    got = [0]

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        got[0] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook", got


async def run(a: argparse.Namespace, dsn: str, root: Path) -> dict[str, Any]:
    hooks, url, delivered = await receiver()
    env = {"LADDER": LADDER, "WEBHOOK_URLS": url, "WEBHOOK_SECRET": SECRET}
    env["WEBHOOK_ALLOW_PRIVATE"] = "true"
    settings = Settings.from_env(env, database_url=dsn, storage_root=root)
    pool = await db.connect_pool(dsn, size=6)
    storage = await open_configured_storage(settings)
    await storage.ensure_buckets(settings.buckets)
    async with pool.acquire() as conn:
        user = (await catalog.create_user(conn, "leaks")).id
        scene = (await catalog.create_scene(conn, "Leaks")).id
    exported, _, _ = await build_scene(settings, a.export_clips)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(pool, handlers(settings, storage), stop=stop, name="leaks", lease_seconds=60)
    )
    if a.tracemalloc:
        tracemalloc.start(12)
    try:
        results = {
            "transcode+refine+webhooks": await phase(
                "transcode",
                a.transcodes,
                min(a.warmup, a.transcodes),
                lambda: upload_clip(pool, storage, settings, scene, user),
                pool,
                a.tracemalloc,
            ),
            "export": await phase(
                "export",
                a.exports,
                min(a.warmup, a.exports),
                lambda: start_one_export(pool, exported, "720p"),
                pool,
                a.tracemalloc,
            ),
        }
        failed = await pool.fetch(
            "SELECT kind, last_error FROM jobs WHERE status NOT IN ('succeeded', 'queued')"
        )
        results["failed_jobs"] = [dict(r) for r in failed]
        results["webhooks_received"] = delivered[0]
    finally:
        stop.set()
        await worker
        await storage.aclose()
        await pool.close()
        await hooks.cleanup()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--transcodes", type=int, default=60, help="clips uploaded")
    parser.add_argument("--exports", type=int, default=100, help="exports of the scene")
    parser.add_argument("--export-clips", type=int, default=20, help="clips of the export")
    parser.add_argument("--warmup", type=int, default=10, help="jobs of each phase before")
    parser.add_argument(
        "--glibc-default",
        action="store_true",
        help="leave glibc's dynamic mmap threshold (the worker fixes it: core/memory.py)",
    )
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocation sites")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--out", default="leaks", help="result name (bench/results/NAME.json)")
    a = parser.parse_args(argv)
    make_source()
    for fps in RATES:
        source(fps)
    quiet = benchutil.wait_quiet(timeout=0 if a.no_wait else 600)
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-leaks-", dir=benchutil.OUT))
    cluster = start_cluster(tmp)
    if not a.glibc_default:
        memory.fix_mmap_threshold()  # as `storyforge worker` does
    try:
        import uvloop

        results = uvloop.run(run(a, cluster.dsn, tmp / "storage"))
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    data = {"machine": benchutil.machine(), "quiet": quiet, "tracemalloc": a.tracemalloc}
    data["glibc_default"] = a.glibc_default
    data |= results
    path = benchutil.write_result(a.out, data)
    for name in ("transcode+refine+webhooks", "export"):
        r = results[name]
        print(
            f"{name}: RSS {r['start']['rss_mb']} -> {r['after_warmup']['rss_mb']} (warm) -> "
            f"{r['end']['rss_mb']} MB; {r['rss_growth_per_job_kb']} KiB/job after warm-up; "
            f"objects {r['objects_growth_per_job']}/job; grown: {r['object_types_grown']}"
        )
        for line in r.get("traced_sites_grown", []):
            print("   ", line)
    print(json.dumps({"failed_jobs": results["failed_jobs"]})[:2000])
    print(f"wrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
