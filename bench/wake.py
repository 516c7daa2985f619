"""Wake-up benchmark (issue 10): from a 202 upload to the start of its job.

In one run, on this machine: a private PostgreSQL cluster (storyforge.dev.cluster), the origin
as ``storyforge serve`` (LocalStorage) and a worker process running the product's job
loop (``workers.runtime.loop.run_worker``, on uvloop like ``storyforge worker``) with the
default poll interval. Its ``transcode`` handler only notes the moment it is called
(``time.monotonic()``, one clock for every process on Linux) and returns: what is
measured is how long a queued job waits for an idle worker, not ffmpeg.

For each mode, ``--uploads`` clips (default 20, a few KiB each) are uploaded one at a
time through ``POST /api/v1/scenes/{id}/segments``; before each the client waits a
random 0-1.5 s, so uploads fall at every point of the worker's poll cycle. The figure
is the time from the client holding its 202 to the handler starting (negative when the
worker started the job before the 202 reached the client). Modes:

- ``notify``: the worker LISTENs (the default since issue 10) and claims when notified;
- ``poll``: ``run_worker(listen=False)``, the job loop as it was before: claims only
  at its next poll.

Usage: ``.venv/bin/python bench/wake.py [--uploads N] [--no-wait]``.
Writes ``bench/results/wake.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import benchutil

from core import db
from storyforge.dev.cluster import free_port, open_cluster

TOKEN = "bench-" + secrets.token_hex(12)
MODES = ("notify", "poll")
#: The upload body: the job is never transcoded here, so any bytes of a video type do.
CLIP = b"\x00\x00\x00\x18ftypisom" + bytes(4096)


# ------------------------------------------------------------------ the worker


def worker_main(mode: str) -> int:
    """The worker process: the product's job loop with a handler that reports starts."""
    import uvloop

    from workers.runtime.loop import JobContext, run_worker

    async def started(ctx: JobContext) -> None:
        print(f"started {ctx.job_id} {time.monotonic():.6f}", flush=True)

    async def main() -> None:
        pool = await db.connect_pool(os.environ["DATABASE_URL"], size=4)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        try:
            await run_worker(
                pool,
                {"transcode": started},
                stop=stop,
                name=f"wake-{mode}",
                listen=mode == "notify",
            )
        finally:
            await pool.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return 0


# ------------------------------------------------------------------ the client


async def _readyz(session: aiohttp.ClientSession, base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base}/readyz did not answer 200 within {timeout:g} s")
        await asyncio.sleep(0.1)


async def _scene(session: aiohttp.ClientSession, base: str) -> tuple[str, str]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with session.post(
        f"{base}/api/v1/users", json={"username": f"w{secrets.token_hex(4)}"}, headers=auth
    ) as r:
        user = (await r.json())["id"]
    async with session.post(f"{base}/api/v1/scenes", json={"title": "wake"}, headers=auth) as r:
        scene = (await r.json())["id"]
    return scene, user


async def measure(base: str, env: dict[str, str], mode: str, uploads: int) -> dict[str, Any]:
    """Start a worker in `mode`, upload `uploads` clips one by one, time each job's start."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert worker.stdout is not None
    starts: dict[str, float] = {}
    arrived = asyncio.Event()

    async def read_starts() -> None:
        assert worker.stdout is not None
        while line := await worker.stdout.readline():
            word, *rest = line.decode().split()
            if word == "started":
                starts[rest[0]] = float(rest[1])
                arrived.set()

    assert (await worker.stdout.readline()).strip() == b"ready"
    reader = asyncio.create_task(read_starts())
    rng = random.Random(uploads)
    after_202: list[float] = []
    after_send: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            scene, user = await _scene(session, base)
            await asyncio.sleep(2.0)  # the worker's first claim found nothing: it idles
            for _ in range(uploads):
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                sent = time.monotonic()
                async with session.post(
                    f"{base}/api/v1/scenes/{scene}/segments",
                    params={"contributor": user},
                    data=CLIP,
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "video/mp4"},
                ) as r:
                    body = await r.json()
                    accepted = time.monotonic()
                    if r.status != 202:
                        raise RuntimeError(f"upload refused: {r.status} {body}")
                job = body["jobId"]
                async with asyncio.timeout(30):
                    while job not in starts:
                        arrived.clear()
                        await arrived.wait()
                after_202.append(starts[job] - accepted)
                after_send.append(starts[job] - sent)
    finally:
        worker.send_signal(signal.SIGTERM)
        await worker.wait()
        await reader
    return {
        "median_ms": round(statistics.median(after_202) * 1000, 2),
        "p90_ms": round(statistics.quantiles(after_202, n=10)[-1] * 1000, 2),
        "min_ms": round(min(after_202) * 1000, 2),
        "max_ms": round(max(after_202) * 1000, 2),
        "median_from_request_ms": round(statistics.median(after_send) * 1000, 2),
        "samples_ms": [round(x * 1000, 2) for x in after_202],
    }


# ------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--uploads", type=int, default=20, help="uploads per mode (default 20)")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker:
        return worker_main(a.worker)

    from workers.runtime.loop import run_worker

    poll_interval = inspect.signature(run_worker).parameters["poll_interval"].default
    quiet = benchutil.wait_quiet(timeout=0 if a.no_wait else 600)
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-wake-"))
    cluster = open_cluster(tmp / "pg")
    origin: subprocess.Popen | None = None
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
        }
        with (tmp / "origin.log").open("wb") as log:
            origin = subprocess.Popen(
                [str(Path(sys.executable).parent / "storyforge"), "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"

        async def run_all() -> None:
            async with aiohttp.ClientSession() as session:
                await _readyz(session, base)
            for mode in MODES:
                print(f"{mode}: {a.uploads} uploads ...", flush=True)
                with benchutil.Monitor(extra_pids=benchutil.cluster_pids(cluster)) as monitor:
                    results[mode] = await measure(base, env, mode, a.uploads)
                results[mode]["monitor"] = monitor.summary()
                results[mode]["disturbed"] = monitor.disturbed

        asyncio.run(run_all())
    finally:
        if origin is not None:
            origin.terminate()
            origin.wait(10)
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    data = {
        "machine": benchutil.machine(),
        "quiet": quiet,
        "uploads": a.uploads,
        "poll_interval_s": poll_interval,
        **results,
    }
    path = benchutil.write_result("wake", data)
    rows = [
        [
            mode,
            results[mode]["median_ms"],
            results[mode]["p90_ms"],
            results[mode]["min_ms"],
            results[mode]["max_ms"],
            results[mode]["median_from_request_ms"],
            "yes" if results[mode]["disturbed"] else "no",
        ]
        for mode in MODES
    ]
    print(
        f"\n202 upload -> job start, ms ({a.uploads} uploads each; "
        f"poll interval {poll_interval:g} s)\n"
    )
    print(
        benchutil.table(
            ["mode", "median", "p90", "min", "max", "from request (median)", "disturbed"], rows
        )
    )
    print(f"\nwrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
