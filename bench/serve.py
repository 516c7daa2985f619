"""Serving benchmark (issues 4 and 23): the origin beside nginx serving the same bytes
from disk, and beside the origin as it was at a baseline commit.

In one run, on this machine:

1. Set-up. A private PostgreSQL cluster (storyforge.dev.cluster) in a temporary directory,
   migrated; LocalStorage in the same directory; a scene of 50 ready clips (rows and
   renditions written by SQL as the transcoder's publish does, segment durations
   4, 4, 4, 2.5 s) plus scenes of 10, 100, 1,000 and 10,000 clips for the build timings;
   one 1 MiB ``.ts`` stored through LocalStorage. The origin runs as ``storyforge serve``
   (one process, as the CLI runs it, on uvloop, ``ACCESS_LOG`` from ``--access-log``),
   twice: with ``FAST_PATH=on`` ("origin") and ``FAST_PATH=off`` ("plain": aiohttp
   answers every request). "baseline": the tree of ``--baseline`` (default 66b7309, the
   fast path before issue 23's regression) from ``git archive``, run with this venv's
   packages on its own database, migrated and filled by its own ``bench/serve.py``
   (same scene shape, its own ids). ``--loops`` adds the origin on asyncio's loop
   ("origin-asyncio", "plain-asyncio") and on uvloop without sendfile ("origin-copy").
   nginx (one worker, sendfile on, keep-alive not limited, an access log that logs what
   the origin's mode logs) serves the origin's stitched 50-clip variant playlist saved
   as a static file, and the very same ``.ts`` file (a hard link of LocalStorage's file).
2. HTTP. wrk (2 threads, 64 connections, a warm-up then ``--duration`` seconds; a Lua
   ``done`` hook reports exact percentiles) against each, alternating the order,
   ``--rounds`` times; medians of the runs no other workload disturbed (all runs are
   kept in the JSON, marked), with the server's CPU time per request. The servers run
   on CPU 0 and wrk on CPU 1 (``taskset``) so each server gets one whole core and wrk
   never competes with it (``--no-pin`` to let the scheduler place them). Targets:
   playlist (warm in the origin's cache) >= 50% of nginx's requests/s with p99 <= 25 ms;
   1 MiB ``.ts`` >= 50% of nginx's bytes/s. Ratios to nginx and to the baseline.
3. Instructions (``--instructions N``, needs valgrind). Each origin again under
   callgrind: the user-space instructions per answer over N requests on one keep-alive
   connection, per case. Exact and repeatable where requests/s are not (a shared
   machine); the kernel's share (send, recv, sendfile) is not in it.
4. Build (no HTTP). The origin's cold path for a scene variant: ``catalog._clips`` (rows
   to Clip objects, exactly what ``catalog.scene_view`` does with asyncpg records) and
   ``playback.scenes.build_scene_document`` (target duration, profiles,
   ``playlists.stitched_media``), timed with ``timeit`` (garbage collector on) on real
   asyncpg records of scenes of 10 to 10,000 clips; per-clip time to show linear growth;
   target <= 30 ms for 1,000 clips. The database fetch (``catalog.scene_view`` and the
   bare ``scene_clips`` query) is timed separately on the same Postgres.

Usage: ``.venv/bin/python bench/serve.py [--quick] [--duration S] [--rounds N] [--no-pin]
[--access-log errors|all|off] [--baseline REV|none] [--loops] [--instructions N]
[--no-build]`` (``--help`` for the diagnostics options). Issue 23's comparison:
``bench/serve.py --loops --instructions 2000``. Writes ``bench/results/serve.json``
(``serve-quick.json`` with ``--quick``).
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
from http.client import HTTPConnection
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
# the fast path before the request counts, CORS and header timeout were added to it
# (issue 23: warm playlists 32.4k req/s there, 25.4k at 39b4bad)
BASELINE = "66b7309"

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
        None,  # first_pts: only subtitles read it, and these scenes have no captions
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


async def populate(dsn: str, storage_root: Path, build: bool = True) -> dict[str, Any]:
    rng = random.Random(4)
    conn = await asyncpg.connect(dsn)
    try:
        users = [(await catalog.create_user(conn, f"bench_user_{i}")).id for i in range(5)]
        scene = await create_scene(conn, SCENE_CLIPS, users, rng)
        first_seg = await conn.fetchval(
            "SELECT id FROM segments WHERE scene_id = $1 ORDER BY sequence LIMIT 1", scene
        )
        sizes = BUILD_SIZES if build else ()
        build_scenes = {n: await create_scene(conn, n, users, rng) for n in sizes}
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
    extra_env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    port = free_port()
    env = {
        **(signing_env or {}),
        **os.environ,
        **(extra_env or {}),
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
    argv = cmd or [str(exe), "serve", "--processes", str(processes)]
    proc = subprocess.Popen(
        [*_pin(cpu), *argv],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.port = port  # type: ignore[attr-defined]
    # how to start it again (under valgrind: instructions_per_request); the storyforge
    # script as python -m, which valgrind can run
    if argv[0] == str(exe):
        argv = [sys.executable, "-m", "storyforge.cli", *argv[1:]]
    proc.launch = (argv, env, cwd)  # type: ignore[attr-defined]
    _wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc


# -------------------------------------------------------------- instructions


def callgrind(pid: int, *command: str) -> None:
    """Tell the callgrind run of `pid` to do `command` (callgrind_control). Valgrind
    names its control pipes after $HOST, which the origin's environment sets (to
    127.0.0.1): so must this."""
    p = subprocess.run(
        ["callgrind_control", *command, str(pid)],
        env={**os.environ, "HOST": "127.0.0.1"},
        capture_output=True,
        text=True,
        check=True,
    )
    if "OK" not in p.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(command)} {pid}: {p.stdout}{p.stderr}")


def _dumped(out: Path, timeout: float = 120.0) -> Path:
    """The dump callgrind was just told to write (it does so when the guest next runs):
    `out`.N, complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for dump in out.parent.glob(out.name + ".*"):
            if "\ntotals:" in dump.read_text():
                return dump
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump next to {out}")


def instructions_per_request(
    tmp: Path,
    name: str,
    cmd: list[str],
    env: dict[str, str],
    cwd: Path | None,
    paths: dict[str, str],
    n: int,
) -> dict[str, Any]:
    """The user-space instructions one answer costs the server process (callgrind),
    for each case of `paths` (case -> path): the server runs under valgrind with
    instrumentation off until it has answered a warm-up, then counts `n` requests sent
    one after another on one keep-alive connection (one connection: the requests that
    find the cached scene version expired and go to the app, one per second, stay
    rare while valgrind slows the server some fifty times). Exact and repeatable on a
    busy machine, unlike requests/s; the kernel's part (send, recv) is not counted."""
    port = free_port()
    out = tmp / f"callgrind-{name}.out"
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            *cmd,
        ],
        env={**os.environ, **env, "PORT": str(port), "HOST": "127.0.0.1"},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / f"callgrind-{name}.log").open("wb"),
    )
    found: dict[str, Any] = {}
    try:
        _wait_http(f"http://127.0.0.1:{port}/readyz", timeout=600)
        for case, path in paths.items():
            conn = HTTPConnection("127.0.0.1", port, timeout=60)

            def ask(times: int, conn: HTTPConnection = conn, path: str = path) -> int:
                size = 0
                for _ in range(times):
                    conn.request("GET", path)
                    r = conn.getresponse()
                    size = len(r.read())
                    assert r.status == 200, (path, r.status)
                return size

            ask(200)
            callgrind(proc.pid, "-i", "on")
            callgrind(proc.pid, "-z")
            size = ask(n)
            callgrind(proc.pid, "-d")
            dump = _dumped(out)
            callgrind(proc.pid, "-i", "off")
            conn.close()
            totals = [ln for ln in dump.read_text().splitlines() if ln.startswith("totals:")]
            found[case] = {
                "instructions_per_request": round(int(totals[0].split()[1]) / n),
                "requests": n,
                "body_bytes": size,
            }
            dumps = list(tmp.glob(f"callgrind-{name}.out.*"))
            for f in dumps:
                f.unlink()
            print(
                f"{case:8s} {name:14s} {found[case]['instructions_per_request']:>10,} "
                "instructions/request (callgrind)",
                flush=True,
            )
    finally:
        stop(proc)
    return found


# ---------------------------------------------------------------------- baseline

# Run in the baseline's own tree (PYTHONPATH): migrate a database of its own with its
# own migrations and fill it with its own bench/serve.py `populate` (the scene of
# SCENE_CLIPS clips and the 1 MiB .ts; no build scenes), print what it made as JSON.
_BASELINE_POPULATE = """
import asyncio, json, sys
from pathlib import Path
import serve
serve.BUILD_SIZES = ()
dsn, root = sys.argv[1], Path(sys.argv[2])
asyncio.run(serve.db.migrate_dsn(dsn))
data = asyncio.run(serve.populate(dsn, root))
print("BASELINE " + json.dumps({"scene": data["scene"], "segment": data["segment"],
                                "ts_path": str(data["ts_path"])}))
"""


# The origin on asyncio's own event loop instead of uvloop (`storyforge serve` runs
# origin.server.run, on uvloop): settings from the same environment.
_ASYNCIO_SERVE = """
import asyncio
from core.settings import Settings
from origin.app import create_app
from origin.server import serve
settings = Settings.from_env()
asyncio.run(serve(create_app(settings), settings.host, settings.port))
"""


def checkout(rev: str, into: Path) -> str:
    """The tree of commit `rev` of this repository (git archive: no worktree, nothing
    in .git changes) in `into`; returns the full commit id."""
    commit = subprocess.run(
        ["git", "-C", str(benchutil.ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    into.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(benchutil.ROOT), "archive", commit], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return commit


def baseline_env(tree: Path) -> dict[str, str]:
    """The baseline's code first on the path (this venv's packages: the same aiohttp,
    httptools and Python for both)."""
    return {"PYTHONPATH": f"{tree}{os.pathsep}{tree / 'bench'}"}


def populate_baseline(tree: Path, dsn: str, storage_root: Path) -> dict[str, Any]:
    """Create a database for the baseline in the cluster and fill it as its own bench
    did; returns its scene, segment and .ts path."""

    async def create() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE DATABASE baseline")
        finally:
            await conn.close()
        return dsn.rsplit("/", 1)[0] + "/baseline"

    base_dsn = asyncio.run(create())
    p = subprocess.run(
        [sys.executable, "-c", _BASELINE_POPULATE, base_dsn, str(storage_root)],
        cwd=tree,
        env={**os.environ, **baseline_env(tree)},
        capture_output=True,
        text=True,
    )
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("BASELINE ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError(f"baseline populate failed:\n{p.stdout}\n{p.stderr}")
    return {"dsn": base_dsn, **json.loads(line[len("BASELINE ") :])}


# ------------------------------------------------------------------------ CPU use


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its descendants (the
    storyforge supervisor's children, nginx's workers)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


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
    pids: dict[str, int],
) -> dict[str, Any]:
    """targets: case -> server -> URL. Median per (case, server) over `rounds`. Beside
    requests/s, the server's CPU time per request (`pids`: server -> process; its
    descendants count too): what an answer costs, less sensitive than requests/s to a
    machine shared with other work."""
    out: dict[str, Any] = {}
    for case, urls in targets.items():
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in urls}
        for rnd in range(rounds):
            order = list(urls) if rnd % 2 == 0 else list(reversed(urls))
            for server in order:
                benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
                wrk(urls[server], warmup, lua, wrk_cpu)
                cpu = tree_cpu_seconds(pids[server])
                with benchutil.Monitor(extra_pids=extra_pids) as mon:
                    r = wrk(urls[server], seconds, lua, wrk_cpu)
                cpu = tree_cpu_seconds(pids[server]) - cpu
                r["cpu_us_per_request"] = round(cpu / max(1, r["requests"]) * 1e6, 2)
                r["round"] = rnd + 1
                r["others_during"] = mon.summary()
                runs[server].append(r)
                print(
                    f"{case:8s} {server:14s} {r['req_per_s']:>10.0f} req/s "
                    f"{r['bytes_per_s'] / 1e6:>9.1f} MB/s  p99 {r['latency_ms']['p99']:.2f} ms  "
                    f"CPU {r['cpu_us_per_request']:.1f} us/req"
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
                "cpu_us_per_request": round(
                    statistics.median(r["cpu_us_per_request"] for r in rs), 2
                ),
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
        "origin: FAST_PATH=on, plain: FAST_PATH=off, -asyncio: on asyncio's loop, origin-copy: "
        "no sendfile, baseline: the --baseline commit; CPU: the server's CPU time per request)\n"
    ]
    rows = []
    target = 0.3 if signed else 0.5  # issue 5 (signed, rewritten per request) / issue 4
    cases = (
        ("signed 50-clip variant" if signed else "50-clip variant playlist", "playlist"),
        ("1 MiB .ts", "ts_1mb"),
    )
    for title, case in cases:
        res = http[case]
        if not res:
            continue  # --rounds 0
        nginx, base = res["nginx"], res.get("baseline")
        for server, r in res.items():
            if case == "ts_1mb":
                value, key = f"{r['bytes_per_s'] / 1e6:.0f} MB/s", "bytes_per_s"
            else:
                value, key = f"{r['req_per_s']:.0f} req/s", "req_per_s"
            ratio = r[key] / nginx[key]
            checked = server not in ("nginx", "baseline")
            ok = ratio >= target and (case == "ts_1mb" or r["p99_ms"] <= 25)
            rows.append(
                [
                    f"{title} ({server})",
                    value,
                    f"{r['cpu_us_per_request']:.1f}",
                    f"{r['p99_ms']:.2f} ms",
                    f"{ratio:.1%}",
                    f"{r[key] / base[key]:.2f}x" if base and server != "baseline" else "",
                    ("ok" if ok else "MISS") if checked else "",
                ]
            )
    out.append(
        benchutil.table(
            ["case", "server", "CPU us/req", "p99", "/nginx", "/baseline", "target"], rows
        )
    )
    out.append(
        f"  targets: playlist >= {target:.0%} of nginx's req/s with p99 <= 25 ms; "
        ".ts >= 50% of nginx's bytes/s"
    )
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


def report_instructions(found: dict[str, Any]) -> str:
    rows = []
    base = found.get("baseline")
    for server, cases in found.items():
        for case, r in cases.items():
            per = r["instructions_per_request"]
            ratio = ""
            if base and server != "baseline":
                ratio = f"{per / base[case]['instructions_per_request']:.2f}x"
            rows.append([case, server, f"{per:,}", ratio])
    return "\nUser-space instructions per answer (callgrind, one keep-alive connection)\n\n" + (
        benchutil.table(["case", "server", "instructions", "/baseline"], rows)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s runs, one round")
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="wrk warm-up seconds (default 3)")
    p.add_argument(
        "--rounds", type=int, help="rounds per case (default 2, quick 1; 0: no wrk runs)"
    )
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
    p.add_argument(
        "--baseline",
        default=BASELINE,
        metavar="REV",
        help="issue 23: also serve from this commit's tree (git archive into the temp dir, "
        "its own database filled by its own bench; this venv's packages), fast path as "
        f"it was then; 'none' to skip (default: {BASELINE}; skipped with --signing hmac)",
    )
    p.add_argument(
        "--loops",
        action="store_true",
        help="issue 23: also run the origin on asyncio's event loop (origin-asyncio, "
        "plain-asyncio) and on uvloop with aiohttp's read-and-write instead of sendfile "
        "(origin-copy: AIOHTTP_NOSENDFILE=1)",
    )
    p.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="issue 23: after the wrk runs, count the user-space instructions per answer "
        "of each origin (origin, plain, baseline, ...) under callgrind over N requests "
        "per case (needs valgrind; exact on a busy machine; default: 0, off)",
    )
    p.add_argument("--no-build", action="store_true", help="skip the playlist build timings")
    a = p.parse_args(argv)
    seconds = a.duration or (3.0 if a.quick else 15.0)
    rounds = a.rounds if a.rounds is not None else (1 if a.quick else 2)
    cpus = os.cpu_count() or 1
    pin = not a.no_pin and cpus >= 2 and a.processes == 1
    server_cpu, wrk_cpu = (0, 1) if pin else (None, None)
    wait = not a.no_wait

    info = benchutil.machine()
    info["nginx"] = benchutil.first_line(["nginx", "-v"])
    info["wrk"] = benchutil.first_line(["wrk", "-v"])
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-serve-"))
    cluster = None
    servers: dict[str, subprocess.Popen] = {}  # name -> server process (nginx last)
    baseline: dict[str, Any] = {}
    try:
        cluster = start_cluster(tmp)
        storage_root = tmp / "storage"
        print("creating scenes ...", flush=True)
        data = asyncio.run(populate(cluster.dsn, storage_root, build=not a.no_build))
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
        common = (tmp, cluster.dsn, storage_root, server_cpu, a.access_log)
        servers["origin"] = start_origin(*common, origin_cmd, signing_env, processes=a.processes)
        if not origin_cmd:
            servers["plain"] = start_origin(
                *common, None, signing_env, fast_path=False, name="plain", processes=a.processes
            )
        if a.loops and not origin_cmd:
            asyncio_cmd = [sys.executable, "-c", _ASYNCIO_SERVE]
            for fast in (True, False):
                name = f"{'origin' if fast else 'plain'}-asyncio"
                servers[name] = start_origin(
                    *common, asyncio_cmd, signing_env, fast_path=fast, name=name
                )
            # what aiohttp does on uvloop without origin/http/objects.py's sendfile
            servers["origin-copy"] = start_origin(
                *common,
                None,
                signing_env,
                name="origin-copy",
                extra_env={"AIOHTTP_NOSENDFILE": "1"},
            )
        playlist_path = f"/v/{scene}/720p.m3u8"
        ts_path = f"/v/{scene}/{seg}/720p_0001.ts"
        urls: dict[str, dict[str, str]] = {"playlist": {}, "ts_1mb": {}}
        for name, proc in servers.items():
            base = f"http://127.0.0.1:{proc.port}"  # type: ignore[attr-defined]
            urls["playlist"][name] = base + playlist_path + token_query
            urls["ts_1mb"][name] = base + ts_path + token_query
        playlist = _get(urls["playlist"]["origin"])
        ts_bytes = _get(urls["ts_1mb"]["origin"])
        if token_query:  # every child URI carries the viewer's token
            assert playlist.count(token_query.encode()) == playlist.count(b".ts")
        assert ts_bytes == Path(data["ts_path"]).read_bytes(), "origin served other bytes"
        assert playlist.count(b"#EXT-X-DISCONTINUITY") == SCENE_CLIPS - 1
        if "plain" in servers:
            assert _get(urls["playlist"]["plain"]) == playlist

        if a.baseline != "none" and a.signing == "none":
            # the same scene shape made by the baseline's own code in its own database
            tree = tmp / "baseline"
            baseline["commit"] = checkout(a.baseline, tree)
            print(f"baseline {baseline['commit'][:12]}: populating ...", flush=True)
            made = populate_baseline(tree, cluster.dsn, tmp / "storage-baseline")
            env = {**baseline_env(tree), "DATABASE_URL": made["dsn"]}
            servers["baseline"] = start_origin(
                tmp,
                made["dsn"],
                tmp / "storage-baseline",
                server_cpu,
                a.access_log,
                [sys.executable, "-m", "storyforge.cli", "serve"],
                name="baseline",
                extra_env=env,
                cwd=tree,
            )
            bbase = f"http://127.0.0.1:{servers['baseline'].port}"  # type: ignore[attr-defined]
            b_playlist = f"/v/{made['scene']}/720p.m3u8"
            b_ts = f"/v/{made['scene']}/{made['segment']}/720p_0001.ts"
            got = _get(bbase + b_playlist)
            assert got.count(b"#EXT-X-DISCONTINUITY") == SCENE_CLIPS - 1
            assert _get(bbase + b_ts) == Path(made["ts_path"]).read_bytes()
            baseline["playlist_bytes"] = len(got)
            urls["playlist"]["baseline"] = bbase + b_playlist
            urls["ts_1mb"]["baseline"] = bbase + b_ts

        # nginx: the same playlist bytes as a static file, the same .ts file (hard link)
        www = tmp / "www"
        (www / "v" / scene / seg).mkdir(parents=True)
        (www / "v" / scene / "720p.m3u8").write_bytes(playlist)
        os.link(data["ts_path"], www / "v" / scene / seg / "720p_0001.ts")
        for path in [www, *www.rglob("*")]:  # the nginx worker runs as nobody
            path.chmod(0o755 if path.is_dir() else 0o644)
        servers["nginx"] = start_nginx(tmp, www, server_cpu, a.access_log, a.processes)
        nbase = f"http://127.0.0.1:{servers['nginx'].port}"  # type: ignore[attr-defined]
        _wait_http(nbase + playlist_path)
        assert _get(nbase + playlist_path) == playlist
        assert _get(nbase + ts_path) == ts_bytes
        urls["playlist"]["nginx"] = nbase + playlist_path + token_query
        urls["ts_1mb"]["nginx"] = nbase + ts_path + token_query

        launches = {
            name: proc.launch  # type: ignore[attr-defined]
            for name, proc in servers.items()
            if name != "nginx"
        }
        lua = tmp / "report.lua"
        lua.write_text(WRK_LUA)
        print(f"wrk: {seconds:g} s per run after {a.warmup:g} s warm-up, {rounds} round(s)")
        http: dict[str, Any] = {"playlist": {}, "ts_1mb": {}}
        if rounds:
            http = http_bench(
                urls,
                seconds=seconds,
                warmup=a.warmup,
                rounds=rounds,
                lua=lua,
                wrk_cpu=wrk_cpu,
                wait=wait,
                extra_pids=_postmaster(cluster),
                pids={name: proc.pid for name, proc in servers.items()},
            )
        origin_log_lines = sum(1 for _ in (tmp / "origin.log").open("rb"))
        profiles: dict[str, Any] = {}
        if a.py_spy:
            benchutil.RESULTS.mkdir(parents=True, exist_ok=True)
            for server in ("origin", "baseline"):
                for case in ("playlist", "ts_1mb") if server in servers else ():
                    out = benchutil.RESULTS / f"profile-{case}.txt"
                    if server != "origin":
                        out = benchutil.RESULTS / f"profile-{server}-{case}.txt"
                    found = profile_origin(
                        a.py_spy,
                        servers[server].pid,
                        urls[case][server],
                        max(seconds, 8.0),
                        lua,
                        wrk_cpu,
                        out,
                    )
                    profiles[case if server == "origin" else f"{server}-{case}"] = found
                    print(f"\nprofile of the {server} under wrk, {case} (% of samples):")
                    for name, pct in found["inclusive_pct"][:25]:
                        print(f"  {pct:5.1f}%  {name}")
        for name, proc in servers.items():
            stop(proc, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        servers.clear()

        instructions: dict[str, Any] = {}
        if a.instructions and shutil.which("valgrind") and shutil.which("callgrind_control"):
            print(f"\ncallgrind: {a.instructions} requests per case on one connection")
            for name, (argv, env, cwd) in launches.items():
                paths = {
                    case: "/" + by_server[name].split("/", 3)[3] for case, by_server in urls.items()
                }
                instructions[name] = instructions_per_request(
                    tmp, name, argv, env, cwd, paths, a.instructions
                )
        elif a.instructions:
            print("--instructions: valgrind (callgrind_control) not found, skipped")

        build: dict[str, Any] = {}
        if not a.no_build:
            benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
            try:
                build = asyncio.run(build_bench(cluster.dsn, data["build_scenes"], a.quick))
            except Exception as exc:  # the product changed under the bench: keep the HTTP
                traceback.print_exc()
                build = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        for name, proc in servers.items():
            stop(proc, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
        if cluster is not None:
            cluster.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def ratio(case: str, server: str, to: str) -> float | None:
        key = "req_per_s" if case == "playlist" else "bytes_per_s"
        res = http[case]
        if server not in res or to not in res:
            return None
        return round(res[server][key] / res[to][key], 3)

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
            "baseline": baseline or None,
            "access_log": a.access_log,
            "playlist_bytes": len(playlist),
            "ts_bytes": len(ts_bytes),
            "scene_clips": SCENE_CLIPS,
            "segment_durations": list(DURATIONS),
        },
        "http": http,
        "instructions": instructions or None,
        "build": build,
        "origin_profile": profiles or None,
        "ratios": {
            "playlist_req_per_s": ratio("playlist", "origin", "nginx"),
            "playlist_p99_ms": http["playlist"].get("origin", {}).get("p99_ms"),
            "ts_bytes_per_s": ratio("ts_1mb", "origin", "nginx"),
            "plain_playlist_req_per_s": ratio("playlist", "plain", "nginx"),
            "plain_ts_bytes_per_s": ratio("ts_1mb", "plain", "nginx"),
            "baseline_playlist_req_per_s": ratio("playlist", "baseline", "nginx"),
            "baseline_ts_bytes_per_s": ratio("ts_1mb", "baseline", "nginx"),
            "playlist_req_per_s_vs_baseline": ratio("playlist", "origin", "baseline"),
            "ts_bytes_per_s_vs_baseline": ratio("ts_1mb", "origin", "baseline"),
            "build_1000_ms": build["1000"]["cold_build"]["median_ms"] if "1000" in build else None,
        },
    }
    print(report(http, build, signed=a.signing == "hmac", processes=a.processes))
    if instructions:
        print(report_instructions(instructions))
    path = benchutil.write_result(a.name or ("serve-quick" if a.quick else "serve"), result)
    print(f"\nwrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
