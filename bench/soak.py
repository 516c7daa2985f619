"""Soak benchmark (issue 29): do the processes stay flat over many jobs and requests?

In one run, on this machine, loopback only, bounded in time (``--max-minutes``): a
private PostgreSQL cluster (bench/serve.py `start_cluster`) and LocalStorage in a
scratch directory; one `storyforge serve` process and one `storyforge worker`
process (concurrency 1; LADDER one 240p rung, REFINE=off: a transcode is one ffmpeg
run; the refinement's own memory is bench/leaks.py's).

- **Scenes.** ``--scenes`` (10,000) scenes of three ready clips each, rows copied
  with ``generate_series`` from one made as the transcoder's publish writes them
  (bench/serve.py `create_scene`); ``--upload-scenes`` (10) scenes that get the
  uploads.
- **Requests.** ``--requests`` (2,000,000) requests over ``--connections`` (32)
  keep-alive connections. 95% reads: a scene's ``master.m3u8`` or ``720p.m3u8``
  (scenes picked uniformly: more scenes than PLAYLIST_CACHE_ENTRIES, so the caches
  evict all along), 2% of the reads a media segment of an uploaded clip, 0.5% a
  thumbnail at a moment of an upload scene (the origin's ffmpeg frame grabs; out of
  the p99, counted by status). 5% writes,
  spread evenly: ``--transcodes`` (300) clip uploads (a 4 s 320x240 clip: a
  `transcode` job each), ``--exports`` (200) moment exports of the upload scenes
  (a new range each: an `export` job each), ``--deletions`` (300) clips removed from
  the scenes (a `remove_segment` job each, deferred past the run by
  SEGMENT_REMOVAL_GRACE), the rest new scenes.
- **Jobs.** After the requests, the run waits for the worker to finish what is due.

Reported per process (origin, worker): RSS and open files at the start (before any
request), after warm-up (origin: after 10% of the requests; worker: once 10% of its
transcodes and exports are done) and at the end (the origin also at the end of the
load, its clients' connections still open as after warm-up; and what its byte-bounded
caches hold, read from its /metrics: the read caches and the thumbnails at a moment);
growth after warm-up (targets: worker <= 20 MB, origin <= 30 MB; open files flat).
Reads: p99 over the first 10% and the last 10% of the requests (target: last <= 1.2x
first); errors; every job that failed or retried, with its errors.

Usage: ``.venv/bin/python bench/soak.py [--requests N] [--scenes N] [--transcodes N]
[--exports N] [--deletions N] [--connections N] [--max-minutes M] [--quick]
[--no-wait] [--out NAME]``. ``--quick``: 40,000 requests, 1,000 scenes, 20 transcodes, 10 exports,
20 deletions. Writes ``bench/results/soak.json`` (``soak-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import benchutil
from leaks import make_source, open_files, rss_mb
from serve import create_scene, start_cluster, start_origin, stop

from core import catalog

TOKEN = "soak-bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {
    "API_TOKENS": TOKEN,
    "LADDER": "240p:320x240:300k",
    "REFINE": "off",
    "WORKER_METRICS_PORT": "0",
    "LOG_FORMAT": "json",
}
WRITE_SHARE = 0.05
SEGMENT_SHARE = 0.02  # of the reads
THUMBNAIL_SHARE = 0.005  # of the reads: a frame at a moment (the origin's ffmpeg grabs)


async def make_scenes(dsn: str, scenes: int, upload_scenes: int) -> dict[str, Any]:
    """`scenes` scenes of three ready clips (copies of one), and the upload scenes."""
    conn = await asyncpg.connect(dsn)
    try:
        user = (await catalog.create_user(conn, "soak")).id
        template = await create_scene(conn, 3, [user], random.Random(29))
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'renditions' AND column_name <> 'segment_id' "
                "ORDER BY ordinal_position"
            )
        ]
        rest = ", ".join(columns)
        copied = ", ".join(f"r.{c}" for c in columns)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO scenes (id, title, version) SELECT 'scn_s' || lpad(i::text, "
                "12, '0'), 'soak ' || i, 1 FROM generate_series(1, $1) AS i",
                scenes,
            )
            await conn.execute(
                "INSERT INTO segments (id, scene_id, sequence, contributor_id, status, "
                "duration, metadata, ready_at) SELECT 'seg_s' || lpad(i::text, 10, '0') || "
                "'c' || s.sequence, 'scn_s' || lpad(i::text, 12, '0'), s.sequence, "
                "s.contributor_id, s.status, s.duration, s.metadata, now() "
                "FROM generate_series(1, $1) AS i, segments s WHERE s.scene_id = $2",
                scenes,
                template,
            )
            await conn.execute(
                f"INSERT INTO renditions (segment_id, {rest}) SELECT 'seg_s' || "
                f"lpad(i::text, 10, '0') || 'c' || s.sequence, {copied} "
                "FROM generate_series(1, $1) AS i, segments s JOIN renditions r "
                "ON r.segment_id = s.id WHERE s.scene_id = $2",
                scenes,
                template,
            )
        uploads = [
            (await catalog.create_scene(conn, f"uploads {i}")).id for i in range(upload_scenes)
        ]
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    ids = [f"scn_s{i:012d}" for i in range(1, scenes + 1)]
    clips = [f"seg_s{i:010d}c{s}" for i in range(1, scenes + 1) for s in (1, 2, 3)]
    return {"user": user, "scenes": ids, "clips": clips, "upload_scenes": uploads}


class Load:
    """The requests, decided up front from one seeded generator, and what came back."""

    def __init__(self, a: argparse.Namespace, made: dict[str, Any], source: bytes) -> None:
        self.a = a
        self.made = made
        self.source = source
        self.rng = random.Random(29)
        self.next = 0
        self.latency = array("f", bytes(4 * a.requests))  # seconds; NaN: not a read
        self.errors: dict[str, int] = {}
        self.writes: dict[str, int] = {}
        n_writes = int(a.requests * WRITE_SHARE)
        budget = ["upload"] * a.transcodes + ["export"] * a.exports
        budget += ["delete"] * a.deletions
        budget += ["scene"] * max(0, n_writes - len(budget))
        random.Random(7).shuffle(budget)
        self.write_at = {int((i + 0.5) * a.requests / max(1, len(budget))): w
                         for i, w in enumerate(budget)}  # fmt: skip
        self.clips = list(made["clips"])
        random.Random(3).shuffle(self.clips)
        self.ready_ts: list[str] = []  # media segment paths of uploaded clips
        self.ready_scenes: list[str] = []  # upload scenes with a ready clip
        self.deferred_exports = 0
        self.thumbnails: dict[int, int] = {}  # status -> answers
        self.moment = 0
        self.done = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def one(self, s: aiohttp.ClientSession, base: str, i: int) -> None:
        write = self.write_at.get(i)
        started = time.perf_counter()
        if write is None:
            draw = self.rng.random()
            if self.ready_scenes and draw < THUMBNAIL_SHARE:
                await self.thumbnail(s, base, i)
                return
            if self.ready_ts and draw < THUMBNAIL_SHARE + SEGMENT_SHARE:
                path = self.rng.choice(self.ready_ts)
            else:
                scene = self.rng.choice(self.made["scenes"])
                path = f"/v/{scene}/{'master' if self.rng.random() < 0.5 else '720p'}.m3u8"
            async with s.get(base + path) as r:
                await r.read()
                ok = r.status == 200
            self.latency[i] = time.perf_counter() - started
            if not ok:
                self.error(f"read {r.status}")
            return
        self.latency[i] = float("nan")
        kind, status = await self.write(s, base, write)
        self.writes[f"{kind} {status}"] = self.writes.get(f"{kind} {status}", 0) + 1

    async def thumbnail(self, s: aiohttp.ClientSession, base: str, i: int) -> None:
        """A thumbnail at a moment of an uploaded scene (kept out of the reads' p99: a
        grab runs ffmpeg; 503 + Retry-After while every grab slot is taken)."""
        scene = self.rng.choice(self.ready_scenes)
        self.latency[i] = float("nan")
        path = f"/v/{scene}/thumbnail.jpg?time={self.rng.randrange(0, 40) / 10}"
        async with s.get(base + path) as r:
            await r.read()
            self.thumbnails[r.status] = self.thumbnails.get(r.status, 0) + 1
            if r.status not in (200, 503):
                self.error(f"thumbnail {r.status}")

    async def write(self, s: aiohttp.ClientSession, base: str, kind: str) -> tuple[str, int]:
        """The write done (an export slot before any clip is ready creates a scene
        and the export waits for a later slot) and its status."""
        a, made = self.a, self.made
        if kind == "export" and not self.ready_scenes:
            self.deferred_exports += 1  # no clip to export yet: a later write slot
            kind = "scene"
        elif kind != "export" and self.deferred_exports and self.ready_scenes:
            self.deferred_exports -= 1
            kind = "export"
        if kind == "upload":
            scene = made["upload_scenes"][self.writes_of("upload") % len(made["upload_scenes"])]
            url = f"{base}/api/v1/scenes/{scene}/segments?contributor={made['user']}"
            headers = {**AUTH, "Content-Type": "video/mp4"}
            async with s.post(url, data=self.source, headers=headers) as r:
                await r.read()
                return kind, r.status
        if kind == "export":
            scene = self.ready_scenes[self.moment % len(self.ready_scenes)]
            self.moment += 1
            start = round(0.04 * self.moment, 2) % 2
            ask = {"quality": "240p", "start": start, "end": start + 1.5}
            url = f"{base}/api/v1/scenes/{scene}/export"
            async with s.post(url, json=ask, headers=AUTH) as r:
                await r.read()
                return kind, r.status
        if kind == "delete":
            clip = self.clips.pop()
            async with s.delete(f"{base}/api/v1/segments/{clip}", headers=AUTH) as r:
                await r.read()
                return kind, r.status
        title = {"title": f"soak {a.requests}"}
        async with s.post(f"{base}/api/v1/scenes", json=title, headers=AUTH) as r:
            await r.read()
            return kind, r.status

    async def refresh(self, dsn: str) -> None:
        """The uploaded clips that are ready now: their scenes (exports) and first
        media segments (reads)."""
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT id, scene_id FROM segments WHERE status = 'ready' "
                "AND scene_id = ANY($1::text[])",
                self.made["upload_scenes"],
            )
        finally:
            await conn.close()
        self.ready_ts = [f"/v/{r['scene_id']}/{r['id']}/240p_0001.ts" for r in rows]
        self.ready_scenes = sorted({r["scene_id"] for r in rows})

    def writes_of(self, kind: str) -> int:
        return sum(n for k, n in self.writes.items() if k.startswith(kind + " "))


async def run_load(
    load: Load, base: str, connections: int, deadline: float, on_tenth, on_last
) -> None:
    async def conn_loop(s: aiohttp.ClientSession) -> None:
        while load.next < load.a.requests and time.monotonic() < deadline:
            i = load.next
            load.next += 1
            try:
                await load.one(s, base, i)
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                load.error(type(exc).__name__)
            load.done += 1
            if load.done == load.a.requests // 10:
                on_tenth()
            if load.done == load.a.requests - connections:  # all connections still open
                on_last()

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        await asyncio.gather(*(conn_loop(s) for _ in range(connections)))


def snapshot(pid: int, base: str | None = None) -> dict[str, float]:
    """RSS and open files of a process; for the origin (`base`), also what its
    byte-bounded caches hold (MB, from its /metrics): the read caches (READ_CACHE_MB)
    and the thumbnails at a moment (THUMBNAIL_CACHE_MB), so RSS growth can be told
    from caches filling up to their bounds."""
    point = {"rss_mb": rss_mb(pid), "open_files": open_files(pid)}
    if base is not None:
        point.update(cache_megabytes(base))
    return point


def cache_megabytes(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    held = {"read_cache_mb": 0.0, "thumbnail_cache_mb": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == "storyforge_read_cache_bytes":
            held["read_cache_mb"] += float(line.rsplit(" ", 1)[1]) / 1e6
        elif name == "storyforge_thumbnail_cache_bytes":
            held["thumbnail_cache_mb"] += float(line.rsplit(" ", 1)[1]) / 1e6
    return {k: round(v, 2) for k, v in held.items()}


async def jobs_done(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT kind, status, count(*) AS n FROM jobs GROUP BY 1, 2")
    finally:
        await conn.close()
    return {f"{r['kind']} {r['status']}": r["n"] for r in rows}


async def job_failures(dsn: str) -> list[dict[str, Any]]:
    """Every job that failed, died or retried: its kind, status and each attempt's
    error (kept in the result, so a failure in a long run can be read afterwards)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, kind, status, attempts, last_error, errors::text AS errors FROM jobs "
            "WHERE status IN ('failed', 'dead') OR errors <> '[]'::jsonb ORDER BY created_at"
        )
    finally:
        await conn.close()
    return [{**dict(r), "errors": json.loads(r["errors"])} for r in rows]


def p99(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x == x)
    return round(xs[int(len(xs) * 0.99)] * 1000, 2) if xs else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--scenes", type=int, default=10_000)
    parser.add_argument("--upload-scenes", type=int, default=10)
    parser.add_argument("--transcodes", type=int, default=300)
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--deletions", type=int, default=300)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--max-minutes", type=float, default=120.0, help="time bound")
    parser.add_argument("--quick", action="store_true", help="a reduced run (see above)")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--out", help="result name (default: soak, soak-quick with --quick)")
    a = parser.parse_args(argv)
    if a.quick:
        a.requests, a.scenes, a.transcodes, a.exports, a.deletions = 40_000, 1_000, 20, 10, 20
    deadline = time.monotonic() + a.max_minutes * 60
    source = make_source().read_bytes()
    quiet = benchutil.wait_quiet(timeout=0 if a.no_wait else 600)
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-soak-", dir=benchutil.OUT))
    cluster = start_cluster(tmp)
    origin = worker = None
    try:
        made = asyncio.run(make_scenes(cluster.dsn, a.scenes, a.upload_scenes))
        env = {**ENV, "STORAGE_ROOT": str(tmp / "storage")}
        origin = start_origin(tmp, cluster.dsn, tmp / "storage", None, "errors", extra_env=env)
        base = f"http://127.0.0.1:{origin.port}"  # type: ignore[attr-defined]
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "storyforge"), "worker", "--concurrency", "1"],
            env={**os.environ, **env, "DATABASE_URL": cluster.dsn, "STORAGE": "local"},
            stdin=subprocess.DEVNULL,
            stdout=(tmp / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        time.sleep(3)
        points: dict[str, dict[str, Any]] = {
            "origin": {"start": snapshot(origin.pid, base)},
            "worker": {"start": snapshot(worker.pid)},
        }
        load = Load(a, made, source)
        job_budget = a.transcodes + a.exports

        async def drive() -> None:
            def tenth() -> None:
                points["origin"]["after_warmup"] = snapshot(origin.pid, base)

            def last() -> None:  # comparable with after_warmup: the clients still connected
                points["origin"]["end_of_load"] = snapshot(origin.pid, base)

            async def watch_worker() -> None:
                while True:
                    await load.refresh(cluster.dsn)
                    done = await jobs_done(cluster.dsn)
                    finished = done.get("transcode succeeded", 0) + done.get("export succeeded", 0)
                    warm = finished >= max(1, job_budget // 10)
                    if warm and "after_warmup" not in points["worker"]:
                        points["worker"]["after_warmup"] = snapshot(worker.pid)
                    await asyncio.sleep(2)

            watcher = asyncio.create_task(watch_worker())
            started = time.monotonic()
            await run_load(load, base, a.connections, deadline, tenth, last)
            points["load_seconds"] = {"s": round(time.monotonic() - started, 1)}
            while time.monotonic() < deadline:  # the jobs still due
                done = await jobs_done(cluster.dsn)
                busy = sum(n for k, n in done.items() if k.split()[0] in ("transcode", "export")
                           and k.split()[1] in ("queued", "running"))  # fmt: skip
                if busy == 0:
                    break
                await asyncio.sleep(2)
            await asyncio.sleep(2)
            watcher.cancel()

        asyncio.run(drive())
        points["origin"]["end"] = snapshot(origin.pid, base)
        points["worker"]["end"] = snapshot(worker.pid)
        jobs = asyncio.run(jobs_done(cluster.dsn))
        failures = asyncio.run(job_failures(cluster.dsn))
    finally:
        stop(worker)
        stop(origin)
        cluster.stop()
        logs = {p.name: p.read_text()[-3000:] for p in tmp.glob("*.log")}
        shutil.rmtree(tmp, ignore_errors=True)

    n = load.done
    tenth = max(1, n // 10)
    lat = list(load.latency[:n])
    first, last = p99(lat[:tenth]), p99(lat[n - tenth : n])
    growth = {
        name: {
            "rss_mb": round(p["end"]["rss_mb"] - p.get("after_warmup", p["start"])["rss_mb"], 2),
            "open_files": p["end"]["open_files"] - p.get("after_warmup", p["start"])["open_files"],
            **{
                key: round(p["end"][key] - p.get("after_warmup", p["start"])[key], 2)
                for key in ("read_cache_mb", "thumbnail_cache_mb")
                if key in p["end"]
            },
        }
        for name, p in points.items()
        if name in ("origin", "worker")
    }
    summary = {
        "requests_done": n,
        "load_seconds": points["load_seconds"]["s"],
        "errors": load.errors,
        "writes": load.writes,
        "thumbnails": load.thumbnails,
        "jobs": jobs,
        "job_failures": failures,
        "p99_first_tenth_ms": first,
        "p99_last_tenth_ms": last,
        "p99_ratio_last_over_first": round(last / first, 2) if first and last else None,
        "growth_after_warmup": growth,
        "targets": {
            "worker_rss_growth_mb_max": 20,
            "origin_rss_growth_mb_max": 30,
            "p99_ratio_max": 1.2,
        },
    }
    data = {
        "machine": benchutil.machine(),
        "quiet": quiet,
        "args": vars(a),
        "points": {k: v for k, v in points.items() if k in ("origin", "worker")},
        "summary": summary,
        "log_tails": logs if load.errors else {},
    }
    path = benchutil.write_result(a.out or ("soak-quick" if a.quick else "soak"), data)
    rows = [
        [name, p["start"]["rss_mb"], p.get("after_warmup", {}).get("rss_mb"), p["end"]["rss_mb"],
         f"{p['start']['open_files']} / {p['end']['open_files']}"]
        for name, p in data["points"].items()
    ]  # fmt: skip
    print(
        benchutil.table(
            ["process", "RSS start MB", "after warm-up", "end", "open files start / end"], rows
        )
    )
    caches = data["points"]["origin"]
    print(
        "origin caches MB (read / thumbnails): "
        + ", ".join(
            f"{point} {caches[point]['read_cache_mb']} / {caches[point]['thumbnail_cache_mb']}"
            for point in ("start", "after_warmup", "end")
            if point in caches
        )
    )
    print(f"requests {n:,} in {summary['load_seconds']} s; errors {load.errors}")
    print(f"reads p99: first 10% {first} ms, last 10% {last} ms")
    print(f"writes: {load.writes}; thumbnails by status: {load.thumbnails}")
    print(f"jobs: {jobs}")
    for failure in failures:
        print(f"job {failure['id']} {failure['kind']} {failure['status']}: {failure['errors']}")
    print(f"wrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
