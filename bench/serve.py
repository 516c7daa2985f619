"""Serving benchmark (issue 4): the origin beside nginx serving the same bytes from disk.

In one run, on this machine:

1. Set-up. A private PostgreSQL cluster (storyforge.dev.cluster) in a temporary directory,
   migrated; LocalStorage in the same directory; a scene of 50 ready clips (rows and
   renditions written by SQL as the transcoder's publish does, segment durations
   4, 4, 4, 2.5 s) plus scenes of 10, 100, 1,000 and 10,000 clips for the build timings;
   one 1 MiB ``.ts`` stored through LocalStorage. The origin runs as ``storyforge serve``
   (one process, as the CLI runs it, ``ACCESS_LOG`` from ``--access-log``), twice: with
   ``FAST_PATH=on`` ("origin") and ``FAST_PATH=off`` ("plain": aiohttp answers every
   request); nginx (one
   worker, sendfile on, keep-alive not limited, an access log that logs what the
   origin's mode logs) serves the origin's stitched 50-clip variant playlist saved as a
   static file, and the very same ``.ts`` file (a hard link of LocalStorage's file).
2. HTTP. wrk (2 threads, 64 connections, a warm-up then ``--duration`` seconds; a Lua
   ``done`` hook reports exact percentiles) against both, alternating which goes first,
   ``--rounds`` times; medians of the runs no other workload disturbed (all runs are
   kept in the JSON, marked). The servers run on CPU 0 and wrk on CPU 1 (``taskset``)
   so each server gets one whole core and wrk never competes with it (``--no-pin`` to
   let the scheduler place them). Targets: playlist (warm in the origin's cache)
   >= 50% of nginx's requests/s with p99 <= 25 ms; 1 MiB ``.ts`` >= 50% of nginx's bytes/s.
3. Build (no HTTP). The origin's cold path for a scene variant: ``catalog._clips`` (rows
   to Clip objects, exactly what ``catalog.scene_view`` does with asyncpg records) and
   ``handlers.scene_documents.build_scene_document`` (target duration, profiles,
   ``playlists.stitched_media``), timed with ``timeit`` (garbage collector on) on real
   asyncpg records of scenes of 10 to 10,000 clips; per-clip time to show linear growth;
   target <= 30 ms for 1,000 clips. The database fetch (``catalog.scene_view`` and the
   bare ``scene_clips`` query) is timed separately on the same Postgres.

Usage: ``.venv/bin/python bench/serve.py [--quick] [--duration S] [--rounds N] [--no-pin]
[--access-log errors|all|off]`` (``--help`` for the diagnostics options).
Writes ``bench/results/serve.json`` (``serve-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import traceback
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import benchutil

from core import catalog, db, layout, playlists
from core.storage import open_storage
from origin.playback import scenes as scene_documents
from storyforge.dev.cluster import Cluster, free_port, open_cluster

SCENE_CLIPS = 50
BUILD_SIZES = (10, 100, 1_000, 10_000)
DURATIONS = (4.0, 4.0, 4.0, 2.5)
TS_SIZE = 1024 * 1024
PROFILES = {
    # profile: (width, height, codecs, bytes per second of media)
    "720p": (1280, 720, "avc1.4d401f,mp4a.40.2", 1_700_000 // 8),
    "1080p": (1920, 1080, "avc1.640028,mp4a.40.2", 4_300_000 // 8),
}
VIDEOS = "storyforge-videos"

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"mean_us":%.1f,"stdev_us":%.1f,"max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


# --------------------------------------------------------------------------- data


def _rendition_row(segment_id: str, profile: str, rng: random.Random) -> tuple[Any, ...]:
    width, height, codecs, rate = PROFILES[profile]
    sizes = [int(d * rate * rng.uniform(0.85, 1.15)) for d in DURATIONS]
    target = playlists.target_duration([DURATIONS])
    return (
        segment_id,
        profile,
        width,
        height,
        30.0,
        codecs,
        playlists.peak_bandwidth(DURATIONS, sizes, target),
        playlists.average_bandwidth(DURATIONS, sizes),
        list(DURATIONS),
        sizes,
    )


def _metadata(scene_id: str, segment_id: str, sequence: int) -> str:
    duration = sum(DURATIONS)
    cues = []
    t = 0.0
    while t < duration:
        i = len(cues)
        cues.append(
            {
                "start": t,
                "end": min(t + 10.0, duration),
                "sheet": "storyboard.jpg",
                "x": (i % 10) * 160,
                "y": (i // 10) * 90,
                "w": 160,
                "h": 90,
            }
        )
        t += 10.0
    return json.dumps(
        {
            "segmentId": segment_id,
            "sceneId": scene_id,
            "sequence": sequence,
            "duration": duration,
            "encoding": {"codec": "h264", "profiles": list(PROFILES), "audioCodec": "aac"},
            "storyboard": cues,
        }
    )


async def create_scene(conn: Any, n_clips: int, users: list[str], rng: random.Random) -> str:
    """A live scene of `n_clips` ready clips, rows as the transcoder's publish writes them."""
    scene = await catalog.create_scene(conn, f"bench scene of {n_clips} clips")
    segments = []
    renditions = []
    for seq in range(1, n_clips + 1):
        seg = layout.new_id("seg")
        segments.append(
            (
                seg,
                scene.id,
                seq,
                users[seq % len(users)],
                "ready",
                sum(DURATIONS),
                _metadata(scene.id, seg, seq),
            )
        )
        renditions.extend(_rendition_row(seg, p, rng) for p in PROFILES)
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO segments (id, scene_id, sequence, contributor_id, status, duration, "
            "metadata, ready_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())",
            segments,
        )
        await conn.executemany(db.q("insert_rendition"), renditions)
        await conn.fetchval(db.q("bump_scene_version"), scene.id)
    return scene.id


async def store_segment_files(
    storage_root: Path, scene: str, files: list[tuple[str, str, bytes]]
) -> list[Path | None]:
    """Store (segment id, file name, bytes) of `scene` in LocalStorage at `storage_root`
    (buckets created), as the transcoder does; returns the files' paths."""
    storage = await open_storage("local", root=storage_root)
    paths: list[Path | None] = []
    try:
        await storage.ensure_buckets(
            [VIDEOS, "storyforge-assets", "storyforge-exports", "storyforge-internal"]
        )
        for seg, name, body in files:
            meta = layout.file_meta(name)
            key = layout.segment_key(scene, seg, name)
            await storage.put(
                VIDEOS,
                key,
                body,
                content_type=meta.content_type,
                cache_control=meta.cache_control,
                tags={"type": meta.tag},
            )
            paths.append(await storage.local_path(VIDEOS, key))
    finally:
        await storage.aclose()
    return paths


async def populate(dsn: str, storage_root: Path) -> dict[str, Any]:
    rng = random.Random(4)
    conn = await asyncpg.connect(dsn)
    try:
        users = [(await catalog.create_user(conn, f"bench_user_{i}")).id for i in range(5)]
        scene = await create_scene(conn, SCENE_CLIPS, users, rng)
        first_seg = await conn.fetchval(
            "SELECT id FROM segments WHERE scene_id = $1 ORDER BY sequence LIMIT 1", scene
        )
        build_scenes = {n: await create_scene(conn, n, users, rng) for n in BUILD_SIZES}
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    name = layout.media_segment_name("720p", 1)
    (ts_path,) = await store_segment_files(
        storage_root, scene, [(first_seg, name, os.urandom(TS_SIZE))]
    )
    return {"scene": scene, "segment": first_seg, "ts_path": ts_path, "build_scenes": build_scenes}


# ------------------------------------------------------------------------ servers


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")
        time.sleep(0.1)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def _pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def start_origin(
    tmp: Path,
    dsn: str,
    storage_root: Path,
    cpu: int | None,
    access_log: str,
    cmd: list[str] | None = None,
    signing_env: dict[str, str] | None = None,
    fast_path: bool = True,
    name: str = "origin",
    processes: int = 1,
) -> subprocess.Popen:
    port = free_port()
    env = {
        **(signing_env or {}),
        **os.environ,
        "FAST_PATH": "on" if fast_path else "off",
        "DATABASE_URL": dsn,
        "STORAGE": "local",
        "STORAGE_ROOT": str(storage_root),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "ACCESS_LOG": access_log,
    }
    exe = Path(sys.executable).parent / "storyforge"
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [*_pin(cpu), *(cmd or [str(exe), "serve", "--processes", str(processes)])],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.port = port  # type: ignore[attr-defined]
    _wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc


NGINX_CONF = """\
daemon off;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    # the origin's ACCESS_LOG modes: all, errors (status >= 400), off
    map $status $sf_loggable {{ ~^[45] 1; default {log_2xx}; }}
    access_log {access_log};
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location ~ \\.m3u8$ {{ add_header Cache-Control "{playlist_cache}"; }}
        location ~ \\.ts$ {{ add_header Cache-Control "{ts_cache}"; }}
    }}
}}
"""


def start_nginx(
    tmp: Path, www: Path, cpu: int | None, access_log: str, workers: int = 1
) -> subprocess.Popen:
    port = free_port()
    conf = tmp / "nginx.conf"
    log = f"{tmp}/nginx-access.log combined if=$sf_loggable"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp,
            workers=workers,
            port=port,
            www=www,
            log_2xx=1 if access_log == "all" else 0,
            access_log="off" if access_log == "off" else log,
            playlist_cache=layout.SCENE_PLAYLIST_CACHE,
            ts_cache=layout.file_meta("x.ts").cache_control,
        )
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        [*_pin(cpu), nginx, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "nginx-stderr.log").open("wb"),
    )
    proc.port = port  # type: ignore[attr-defined]
    return proc


def start_cluster(tmp: Path) -> Cluster:
    """A private PostgreSQL cluster under `tmp/pg`, started (fsync off) and migrated."""
    cluster = open_cluster(tmp / "pg")
    cluster.init()
    cluster.start(fast=True)
    asyncio.run(db.migrate_dsn(cluster.dsn))
    return cluster


def _postmaster(cluster: Cluster) -> set[int]:
    """The PostgreSQL server pid (pg_ctl daemonises it: not our child)."""
    try:
        return {int((cluster.datadir / "postmaster.pid").read_text().split()[0])}
    except (OSError, ValueError, IndexError):
        return set()


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- wrk


def wrk(url: str, seconds: float, lua: Path, cpu: int | None) -> dict[str, Any]:
    cmd = [
        *_pin(cpu),
        "wrk",
        "-t2",
        "-c64",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON ") :])
    secs = raw["duration_us"] / 1e6
    errors = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")}
    return {
        "requests": raw["requests"],
        "seconds": round(secs, 3),
        "req_per_s": round(raw["requests"] / secs, 1),
        "bytes_per_s": round(raw["bytes"] / secs),
        "latency_ms": {
            k.removesuffix("_us"): round(raw[k] / 1000, 3)
            for k in ("mean_us", "stdev_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")
        },
        "errors": errors,
    }


def http_bench(
    targets: dict[str, dict[str, str]],
    *,
    seconds: float,
    warmup: float,
    rounds: int,
    lua: Path,
    wrk_cpu: int | None,
    wait: bool,
    extra_pids: set[int],
) -> dict[str, Any]:
    """targets: case -> server -> URL. Median per (case, server) over `rounds`."""
    out: dict[str, Any] = {}
    for case, urls in targets.items():
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in urls}
        for rnd in range(rounds):
            order = list(urls) if rnd % 2 == 0 else list(reversed(urls))
            for server in order:
                benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
                wrk(urls[server], warmup, lua, wrk_cpu)
                with benchutil.Monitor(extra_pids=extra_pids) as mon:
                    r = wrk(urls[server], seconds, lua, wrk_cpu)
                r["round"] = rnd + 1
                r["others_during"] = mon.summary()
                runs[server].append(r)
                print(
                    f"{case:8s} {server:6s} {r['req_per_s']:>10.0f} req/s "
                    f"{r['bytes_per_s'] / 1e6:>9.1f} MB/s  p99 {r['latency_ms']['p99']:.2f} ms"
                    + (f"  errors {r['errors']}" if any(r["errors"].values()) else "")
                    + (
                        f"  DISTURBED (others used {mon.others_cores:.2f} cores)"
                        if mon.disturbed
                        else ""
                    ),
                    flush=True,
                )
        summary = {}
        for server, all_runs in runs.items():
            # runs during which someone else's pytest or ffmpeg ran are left out when
            # at least one clean run exists (they stay in "runs", flagged)
            clean = [r for r in all_runs if not r["others_during"]["disturbed"]]
            rs = clean or all_runs
            summary[server] = {
                "req_per_s": round(statistics.median(r["req_per_s"] for r in rs), 1),
                "bytes_per_s": round(statistics.median(r["bytes_per_s"] for r in rs)),
                "p99_ms": round(statistics.median(r["latency_ms"]["p99"] for r in rs), 3),
                "p50_ms": round(statistics.median(r["latency_ms"]["p50"] for r in rs), 3),
                "median_of": f"{len(rs)} {'clean ' if clean else ''}of {len(all_runs)} runs",
                "runs": all_runs,
            }
        out[case] = summary
    return out


# ------------------------------------------------------------------------- build


def _uri_for(rel: str) -> str:
    return rel  # the origin's default: URIs relative to /v/{sceneId}/


def _times(fn: Any, repeat: int, *, number: int = 1, gc: bool = True) -> list[float]:
    """Seconds per call: `repeat` samples of `number` calls each, garbage collector
    enabled as in the server (timeit turns it off by default; `gc=False` to see its
    share)."""
    setup = "import gc; gc.enable()" if gc else "pass"
    return [t / number for t in timeit.repeat(fn, setup=setup, repeat=repeat, number=number)]


def _ms(xs: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(xs) * 1000, 3),
        "min_ms": round(min(xs) * 1000, 3),
        "max_ms": round(max(xs) * 1000, 3),
    }


class _RowRecorder:
    """A connection that remembers the rows (and the query) of the last ``fetch``, so the
    bench times the very rows ``catalog.scene_view`` fetches, however it fetches them."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.rows: list[Any] = []
        self.query: tuple[Any, ...] = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        self.rows = await self._conn.fetch(query, *args, **kwargs)
        self.query = (query, args, kwargs)
        return self.rows


async def build_bench(dsn: str, scenes: dict[int, str], quick: bool) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    out: dict[str, Any] = {}
    try:
        for n, scene_id in scenes.items():
            repeat = 5 if n >= 10_000 else (10 if quick else 30)
            # as the handler reads a scene for a variant playlist (scene_document)
            recorder = _RowRecorder(conn)
            view0 = await catalog.scene_view(recorder, scene_id)  # type: ignore[arg-type]
            assert view0 is not None and len(view0.clips) == n
            rows, (query, qargs, qkwargs) = recorder.rows, recorder.query
            scene = view0.scene

            def from_rows(rows: Any = rows) -> list[catalog.SceneClip]:
                return catalog._clips(rows)

            def document(view: catalog.SceneView = view0) -> str:
                return scene_documents.build_scene_document(view, "720p.m3u8", _uri_for)

            def cold(rows: Any = rows, scene: catalog.Scene = scene) -> str:
                view = catalog.SceneView(scene, tuple(catalog._clips(rows)))
                return scene_documents.build_scene_document(view, "720p.m3u8", _uri_for)

            t = time.perf_counter()
            text = cold()
            first = time.perf_counter() - t
            assert text.count("#EXT-X-DISCONTINUITY") == n - 1
            number = max(1, 1000 // n)  # small scenes: enough calls per sample to time
            total = _times(cold, repeat, number=number)
            t_rows = _times(from_rows, repeat, number=number)
            t_doc = _times(document, repeat, number=number)
            no_gc = _times(cold, repeat, number=number, gc=False)

            # the database part, on the real Postgres
            fetch: list[float] = []
            view_t: list[float] = []
            for _ in range(repeat):
                t = time.perf_counter()
                await conn.fetch(query, *qargs, **qkwargs)
                fetch.append(time.perf_counter() - t)
                t = time.perf_counter()
                await catalog.scene_view(conn, scene_id)
                view_t.append(time.perf_counter() - t)
            med = statistics.median(total)
            out[str(n)] = {
                "clips": n,
                "repeat": repeat,
                "calls_per_sample": number,
                "playlist_bytes": len(text.encode()),
                "first_call_ms": round(first * 1000, 3),
                "cold_build": _ms(total),
                "clips_from_rows": _ms(t_rows),
                "stitched_document": _ms(t_doc),
                "per_clip_us": round(med / n * 1e6, 2),
                "cold_build_gc_off": _ms(no_gc),
                "per_clip_us_gc_off": round(statistics.median(no_gc) / n * 1e6, 2),
                "db_fetch_rows": _ms(fetch),
                "db_scene_view": _ms(view_t),
            }
            print(
                f"build {n:>6} clips: cold {med * 1000:8.2f} ms "
                f"({med / n * 1e6:6.2f} us/clip; rows->clips "
                f"{statistics.median(t_rows) * 1000:.2f} ms, document "
                f"{statistics.median(t_doc) * 1000:.2f} ms; gc off "
                f"{statistics.median(no_gc) * 1000:.2f} ms); db fetch "
                f"{statistics.median(fetch) * 1000:.2f} ms, scene_view "
                f"{statistics.median(view_t) * 1000:.2f} ms",
                flush=True,
            )
    finally:
        await conn.close()
    base = out[str(min(scenes))]["per_clip_us"]
    for v in out.values():
        v["per_clip_ratio_to_smallest"] = round(v["per_clip_us"] / base, 3)
    return out


# ------------------------------------------------------------------------ profile


def _frame_name(frame: str) -> str:
    """py-spy raw frame ``func (path/to/module.py:123)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


def profile_origin(
    py_spy: str, pid: int, url: str, seconds: float, lua: Path, wrk_cpu: int | None, out: Path
) -> dict[str, Any]:
    """Sample the origin with py-spy while wrk loads it; summarise where the time goes.
    (Diagnostic only: sampling slows the origin, these runs are not measurements.)"""
    cmd = [py_spy, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "250"]
    cmd += ["--nonblocking", "-f", "raw", "-o", str(out)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    wrk(url, seconds - 2, lua, wrk_cpu)
    spy.wait(60)
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        self_time[frames[-1]] = self_time.get(frames[-1], 0) + n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
    total = total or 1

    def top(d: dict[str, int], k: int) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in sorted(d.items(), key=lambda x: -x[1])][
            :k
        ]

    return {"samples": total, "self_pct": top(self_time, 25), "inclusive_pct": top(inclusive, 40)}


# -------------------------------------------------------------------------- report


def report(
    http: dict[str, Any], build: dict[str, Any], signed: bool = False, processes: int = 1
) -> str:
    out = [
        f"\nHTTP: wrk -t2 -c64, median of rounds (storyforge serve --processes {processes} "
        f"and nginx with {processes} worker(s); "
        "origin: FAST_PATH=on, plain: FAST_PATH=off)\n"
    ]
    rows = []
    pl, ts = http["playlist"], http["ts_1mb"]
    target = 0.3 if signed else 0.5  # issue 5 (signed, rewritten per request) / issue 4
    servers = [s for s in ("origin", "plain") if s in pl]
    for server in servers:
        r_req = pl[server]["req_per_s"] / pl["nginx"]["req_per_s"]
        rows.append(
            [
                ("signed 50-clip variant" if signed else "50-clip variant playlist")
                + f" ({server})",
                f"{pl[server]['req_per_s']:.0f} req/s",
                f"{pl['nginx']['req_per_s']:.0f} req/s",
                f"{r_req:.1%}",
                f">= {target:.0%}",
                "ok" if r_req >= target else "MISS",
            ]
        )
        rows.append(
            [
                "  p99 latency",
                f"{pl[server]['p99_ms']:.2f} ms",
                f"{pl['nginx']['p99_ms']:.2f} ms",
                f"{pl[server]['p99_ms'] / pl['nginx']['p99_ms']:.1f}x",
                "<= 25 ms",
                "ok" if pl[server]["p99_ms"] <= 25 else "MISS",
            ]
        )
    for server in servers:
        r_bytes = ts[server]["bytes_per_s"] / ts["nginx"]["bytes_per_s"]
        rows.append(
            [
                f"1 MiB .ts ({server})",
                f"{ts[server]['bytes_per_s'] / 1e6:.0f} MB/s",
                f"{ts['nginx']['bytes_per_s'] / 1e6:.0f} MB/s",
                f"{r_bytes:.1%}",
                ">= 50%",
                "ok" if r_bytes >= 0.5 else "MISS",
            ]
        )
        rows.append(
            [
                "  p99 latency",
                f"{ts[server]['p99_ms']:.2f} ms",
                f"{ts['nginx']['p99_ms']:.2f} ms",
                f"{ts[server]['p99_ms'] / ts['nginx']['p99_ms']:.1f}x",
                "",
                "",
            ]
        )
    out.append(benchutil.table(["case", "server", "nginx", "server/nginx", "target", ""], rows))
    out.append("\nBuild of a stitched variant playlist from rows (no HTTP, no cache)\n")
    rows = []
    for v in build.values():
        if not isinstance(v, dict):
            out.append(f"  build failed: {v}")
            continue
        rows.append(
            [
                f"{v['clips']:,}",
                f"{v['cold_build']['median_ms']:.2f}",
                f"{v['clips_from_rows']['median_ms']:.2f}",
                f"{v['stitched_document']['median_ms']:.2f}",
                f"{v['per_clip_us']:.2f}",
                f"{v['per_clip_ratio_to_smallest']:.2f}",
                f"{v['per_clip_us_gc_off']:.2f}",
                f"{v['db_fetch_rows']['median_ms']:.2f}",
                f"{v['db_scene_view']['median_ms']:.2f}",
            ]
        )
    out.append(
        benchutil.table(
            [
                "clips",
                "cold build ms",
                "rows->clips ms",
                "document ms",
                "us/clip",
                "us/clip ratio",
                "us/clip gc off",
                "db fetch ms",
                "scene_view ms",
            ],
            rows,
        )
    )
    k = build.get("1000")
    if k:
        ok = k["cold_build"]["median_ms"] <= 30
        out.append(
            f"  1,000 clips: cold build {k['cold_build']['median_ms']:.2f} ms "
            f"(first call {k['first_call_ms']:.2f} ms) target <= 30 ms: {'ok' if ok else 'MISS'}; "
            f"+ DB fetch {k['db_fetch_rows']['median_ms']:.2f} ms"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s runs, one round")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="wrk warm-up seconds (default 3)")
    p.add_argument("--rounds", type=int, help="rounds per case (default 2, quick 1)")
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk to CPUs")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    p.add_argument("--keep", action="store_true", help="keep the temp dir and leave nothing up")
    p.add_argument(
        "--access-log",
        choices=("errors", "all", "off"),
        default="errors",
        help="the origin's ACCESS_LOG and the matching nginx access_log (default: errors, "
        "the product default: only status >= 400 is logged by either)",
    )
    p.add_argument(
        "--signing",
        choices=("none", "hmac"),
        default="none",
        help="issue 5: run the origin with SIGNING=hmac and request the playlist and the "
        ".ts with a minted token (each request verified, the playlist's child URIs "
        "rewritten per request); nginx serves the same signed bytes (default: none)",
    )
    p.add_argument("--name", help="result file name (default serve / serve-quick)")
    p.add_argument(
        "--origin-cmd",
        help="diagnostics: run this command line instead of 'storyforge serve' (same env)",
    )
    p.add_argument(
        "--py-spy",
        metavar="PATH",
        help="after the measurements, profile the origin under wrk with this py-spy binary "
        "(stacks in bench/results/profile-*.txt)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="issue 11: origin processes (storyforge serve --processes N) and nginx workers; "
        "above 1 nothing is pinned (default: 1)",
    )
    a = p.parse_args(argv)
    seconds = a.duration or (3.0 if a.quick else 15.0)
    rounds = a.rounds or (1 if a.quick else 2)
    cpus = os.cpu_count() or 1
    pin = not a.no_pin and cpus >= 2 and a.processes == 1
    server_cpu, wrk_cpu = (0, 1) if pin else (None, None)
    wait = not a.no_wait

    info = benchutil.machine()
    info["nginx"] = benchutil.first_line(["nginx", "-v"])
    info["wrk"] = benchutil.first_line(["wrk", "-v"])
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-serve-"))
    cluster = None
    origin = plain = nginx = None
    try:
        cluster = start_cluster(tmp)
        storage_root = tmp / "storage"
        print("creating scenes ...", flush=True)
        data = asyncio.run(populate(cluster.dsn, storage_root))
        scene, seg = data["scene"], data["segment"]

        origin_cmd = a.origin_cmd.split() if a.origin_cmd else None
        signing_env: dict[str, str] = {}
        token_query = ""
        if a.signing == "hmac":
            from core import signing

            signing_env = {"SIGNING": "hmac", "HMAC_KEYS": f"bench:{os.urandom(24).hex()}"}
            key = signing.parse_hmac_keys(signing_env["HMAC_KEYS"])[0]
            token = signing.mint_token(f"/v/{scene}/", int(time.time()) + 3600, key)
            token_query = "?" + token.query
        origin = start_origin(
            tmp,
            cluster.dsn,
            storage_root,
            server_cpu,
            a.access_log,
            origin_cmd,
            signing_env,
            processes=a.processes,
        )
        base = f"http://127.0.0.1:{origin.port}"  # type: ignore[attr-defined]
        plain = None
        if not origin_cmd:
            plain = start_origin(
                tmp,
                cluster.dsn,
                storage_root,
                server_cpu,
                a.access_log,
                None,
                signing_env,
                fast_path=False,
                name="plain",
                processes=a.processes,
            )
        pbase = f"http://127.0.0.1:{plain.port}" if plain else ""  # type: ignore[attr-defined]
        playlist_path = f"/v/{scene}/720p.m3u8"
        ts_path = f"/v/{scene}/{seg}/720p_0001.ts"
        playlist = _get(base + playlist_path + token_query)
        ts_bytes = _get(base + ts_path + token_query)
        if token_query:  # every child URI carries the viewer's token
            assert playlist.count(token_query.encode()) == playlist.count(b".ts")
        assert ts_bytes == Path(data["ts_path"]).read_bytes(), "origin served other bytes"
        assert playlist.count(b"#EXT-X-DISCONTINUITY") == SCENE_CLIPS - 1
        if plain is not None:
            assert _get(pbase + playlist_path + token_query) == playlist

        # nginx: the same playlist bytes as a static file, the same .ts file (hard link)
        www = tmp / "www"
        (www / "v" / scene / seg).mkdir(parents=True)
        (www / "v" / scene / "720p.m3u8").write_bytes(playlist)
        os.link(data["ts_path"], www / "v" / scene / seg / "720p_0001.ts")
        for path in [www, *www.rglob("*")]:  # the nginx worker runs as nobody
            path.chmod(0o755 if path.is_dir() else 0o644)
        nginx = start_nginx(tmp, www, server_cpu, a.access_log, a.processes)
        nbase = f"http://127.0.0.1:{nginx.port}"  # type: ignore[attr-defined]
        _wait_http(nbase + playlist_path)
        assert _get(nbase + playlist_path) == playlist
        assert _get(nbase + ts_path) == ts_bytes

        lua = tmp / "report.lua"
        lua.write_text(WRK_LUA)
        print(f"wrk: {seconds:g} s per run after {a.warmup:g} s warm-up, {rounds} round(s)")
        http = http_bench(
            {
                "playlist": {
                    "origin": base + playlist_path + token_query,
                    **({"plain": pbase + playlist_path + token_query} if plain else {}),
                    "nginx": nbase + playlist_path + token_query,
                },
                "ts_1mb": {
                    "origin": base + ts_path + token_query,
                    **({"plain": pbase + ts_path + token_query} if plain else {}),
                    "nginx": nbase + ts_path + token_query,
                },
            },
            seconds=seconds,
            warmup=a.warmup,
            rounds=rounds,
            lua=lua,
            wrk_cpu=wrk_cpu,
            wait=wait,
            extra_pids=_postmaster(cluster),
        )
        origin_log_lines = sum(1 for _ in (tmp / "origin.log").open("rb"))
        profiles: dict[str, Any] = {}
        if a.py_spy:
            benchutil.RESULTS.mkdir(parents=True, exist_ok=True)
            for case, path in (("playlist", playlist_path), ("ts_1mb", ts_path)):
                out = benchutil.RESULTS / f"profile-{case}.txt"
                profiles[case] = profile_origin(
                    a.py_spy,
                    origin.pid,
                    base + path + token_query,
                    max(seconds, 8.0),
                    lua,
                    wrk_cpu,
                    out,
                )
                print(f"\nprofile of the origin under wrk, {case} (% of samples):")
                for name, pct in profiles[case]["inclusive_pct"][:25]:
                    print(f"  {pct:5.1f}%  {name}")
        stop(origin)
        stop(plain)
        stop(nginx, signal.SIGQUIT)
        origin = plain = nginx = None

        benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
        try:
            build = asyncio.run(build_bench(cluster.dsn, data["build_scenes"], a.quick))
        except Exception as exc:  # the product changed under the bench: keep the HTTP part
            traceback.print_exc()
            build = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        stop(origin)
        stop(plain)
        stop(nginx, signal.SIGQUIT)
        if cluster is not None:
            cluster.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "benchmark": "serve",
        "quick": a.quick,
        "machine": info,
        "setup": {
            "wrk": f"-t2 -c64 -d{seconds:g}s after a {a.warmup:g} s warm-up, {rounds} rounds",
            "pinning": "servers on CPU 0, wrk on CPU 1" if pin else "none",
            "origin": f"{a.origin_cmd or 'storyforge serve'} ({a.processes} process(es)), "
            "LOG_FORMAT=json, "
            f"ACCESS_LOG={a.access_log}, log to a file",
            "origin_log_lines": origin_log_lines,
            "nginx": f"worker_processes {a.processes}, sendfile on, tcp_nopush on, "
            "keepalive_requests "
            f"unlimited, access log to a file: {a.access_log}",
            "access_log": a.access_log,
            "playlist_bytes": len(playlist),
            "ts_bytes": len(ts_bytes),
            "scene_clips": SCENE_CLIPS,
            "segment_durations": list(DURATIONS),
        },
        "http": http,
        "build": build,
        "origin_profile": profiles or None,
        "ratios": {
            "playlist_req_per_s": round(
                http["playlist"]["origin"]["req_per_s"] / http["playlist"]["nginx"]["req_per_s"], 3
            ),
            "playlist_p99_ms": http["playlist"]["origin"]["p99_ms"],
            "ts_bytes_per_s": round(
                http["ts_1mb"]["origin"]["bytes_per_s"] / http["ts_1mb"]["nginx"]["bytes_per_s"], 3
            ),
            **(
                {
                    "plain_playlist_req_per_s": round(
                        http["playlist"]["plain"]["req_per_s"]
                        / http["playlist"]["nginx"]["req_per_s"],
                        3,
                    ),
                    "plain_ts_bytes_per_s": round(
                        http["ts_1mb"]["plain"]["bytes_per_s"]
                        / http["ts_1mb"]["nginx"]["bytes_per_s"],
                        3,
                    ),
                }
                if "plain" in http["playlist"]
                else {}
            ),
            "build_1000_ms": build["1000"]["cold_build"]["median_ms"] if "1000" in build else None,
        },
    }
    print(report(http, build, signed=a.signing == "hmac", processes=a.processes))
    path = benchutil.write_result(a.name or ("serve-quick" if a.quick else "serve"), result)
    print(f"\nwrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
