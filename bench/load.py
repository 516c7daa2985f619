"""Load benchmark (issue 14): paced players against `storyforge serve`, and the same with
PostgreSQL stopped in the middle.

In one run, on this machine:

1. Set-up. A private PostgreSQL cluster (storyforge.dev.cluster) in a temporary
   directory, migrated; LocalStorage beside it; one scene of ``--clips`` ready clips
   (rows as the transcoder's publish writes them, bench/serve.py ``create_scene``:
   segment durations 4, 4, 4, 2.5 s) whose 720p media segments are stored with the
   sizes their rows declare (~1.7 Mbit/s).
2. Players. ``--players`` asyncio players (one keep-alive connection each, started
   over the first seconds) play for ``--duration`` seconds as hls.js does with its
   defaults: the stitched ``master.m3u8``, the 720p variant, then media segments, as
   fast as they come until 30 s are buffered ahead of the playhead (maxBufferLength),
   then one as each plays out; at the end of the scene the player starts again with
   the master. Viewers arrive evenly over the first 60% of the run, so some arrive
   while the database is down. Every answer must be a 200 with the whole body; anything else (status,
   short body, connection error, 30 s without an answer) is an error.
3. Runs. ``storyforge serve --processes 2`` and ``--processes 1`` (FAST_PATH on, the
   default), each once as is and once with PostgreSQL stopped for ``--outage``
   seconds in the middle (``pg_ctl stop -m fast``, then started again): every request
   is published content, so the outage runs must show 0 errors too.
   Reported per run: requests and errors per kind (master, variant, segment), p50 and
   p99 of the time to the last byte, bytes, and the RSS of every origin process at
   the start and at the end; for outage runs, the answers during the outage.

Usage: ``.venv/bin/python bench/load.py [--quick] [--players N] [--duration S]
[--outage S] [--clips N] [--no-wait]``. ``--quick``: 20 players x 10 s, 4 s outage.
Writes ``bench/results/load.json`` (``load-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import benchutil
from serve import create_scene, start_cluster, start_origin, stop, store_segment_files

from core import catalog, layout
from storyforge.dev.cluster import Cluster

BUFFER_AHEAD = 30.0  # hls.js maxBufferLength (s)
PROFILE = "720p"
KINDS = ("master", "variant", "segment")
ANSWER_TIMEOUT = 30.0


# --------------------------------------------------------------------------- data


async def populate(dsn: str, storage_root: Path, clips: int) -> str:
    """A scene of `clips` ready clips; every 720p media segment stored, sized as its
    rendition row says."""
    conn = await asyncpg.connect(dsn)
    try:
        viewer = await catalog.create_user(conn, "load_contributor")
        scene = await create_scene(conn, clips, [viewer.id], random.Random(14))
        view = await catalog.scene_view(conn, scene)
    finally:
        await conn.close()
    assert view is not None
    sizes = [(c.clip.segment_id, c.clip.renditions[PROFILE].sizes) for c in view.clips]
    blob = os.urandom(max(max(each) for _, each in sizes))
    await store_segment_files(
        storage_root,
        scene,
        [
            (seg, layout.media_segment_name(PROFILE, i), blob[:size])
            for seg, each in sizes
            for i, size in enumerate(each, 1)
        ],
    )
    return scene


# ------------------------------------------------------------------------ players


@dataclass
class Tally:
    """What the players of one run saw."""

    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    bytes: int = 0
    # answers (200 or not) by kind completed while Postgres was stopped
    during_outage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    outage: tuple[float, float] | None = None  # monotonic start, end (0: not yet)

    def answered(self, kind: str, started: float, ok: bool, detail: str = "") -> None:
        now = time.monotonic()
        if ok:
            self.times[kind].append(now - started)
        else:
            self.errors[kind].append(detail)
        if self.outage is not None and self.outage[0] <= now:
            if not self.outage[1] or now <= self.outage[1]:
                self.during_outage[kind] += 1


async def fetch(session: aiohttp.ClientSession, url: str, kind: str, tally: Tally) -> bytes | None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            async with session.get(url) as r:
                body = await r.read()
                length = r.content_length
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        tally.answered(kind, started, False, f"{type(exc).__name__}: {exc}")
        return None
    if r.status != 200 or (length is not None and length != len(body)):
        tally.answered(kind, started, False, f"{r.status} ({len(body)} bytes)")
        return None
    tally.bytes += len(body)
    tally.answered(kind, started, True)
    return body


def _media(variant: str) -> list[tuple[str, float]]:
    """(URI, duration) of each media segment of a media playlist."""
    out: list[tuple[str, float]] = []
    duration = 0.0
    for line in variant.splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line and not line.startswith("#"):
            out.append((line, duration))
    return out


async def player(base: str, scene: str, until: float, start_at: float, tally: Tally) -> None:
    """One viewer, as hls.js plays a VOD with its default buffer, until `until`."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, as a browser tab
    async with aiohttp.ClientSession(connector=connector) as session:
        while time.monotonic() < until:
            master = await fetch(session, f"{base}/v/{scene}/master.m3u8", "master", tally)
            if master is None:
                await asyncio.sleep(1.0)  # hls.js retries a failed manifest after a while
                continue
            text = await fetch(session, f"{base}/v/{scene}/{PROFILE}.m3u8", "variant", tally)
            if text is None:
                await asyncio.sleep(1.0)
                continue
            playhead_start = time.monotonic()
            buffered = 0.0
            for uri, duration in _media(text.decode()):
                # wait until less than BUFFER_AHEAD seconds are buffered past the playhead
                ahead = buffered - (time.monotonic() - playhead_start)
                if ahead > BUFFER_AHEAD:
                    await asyncio.sleep(ahead - BUFFER_AHEAD)
                if time.monotonic() >= until:
                    return
                await fetch(session, f"{base}/v/{scene}/{uri}", "segment", tally)
                buffered += duration


# ---------------------------------------------------------------------------- runs


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _origin_pids(root: int) -> list[int]:
    """`storyforge serve` and the origin processes it started (read from /proc)."""
    pids = [root]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == root:
                pids.append(int(entry.name))
    return sorted(pids)


def _rss(root: int) -> dict[str, int | None]:
    return {str(pid): _rss_kib(pid) for pid in _origin_pids(root)}


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2)


async def _outage(cluster: Cluster, at: float, seconds: float, tally: Tally) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    await asyncio.to_thread(cluster.stop)
    stopped = time.monotonic()
    tally.outage = (stopped, 0.0)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - stopped)))
    tally.outage = (stopped, time.monotonic())
    await asyncio.to_thread(cluster.start, fast=True)


async def _players(
    base: str, scene: str, n: int, seconds: float, cluster: Cluster | None, outage: float
) -> Tally:
    tally = Tally()
    start = time.monotonic()
    ramp = seconds * 0.6  # viewers keep arriving until after the outage (mid-run)
    until = start + seconds
    tasks = [player(base, scene, until, start + ramp * i / max(1, n - 1), tally) for i in range(n)]
    if cluster is not None:
        tasks.append(_outage(cluster, start + (seconds - outage) / 2, outage, tally))
    await asyncio.gather(*tasks)
    return tally


def run_case(
    tmp: Path,
    cluster: Cluster,
    storage_root: Path,
    scene: str,
    *,
    processes: int,
    players: int,
    seconds: float,
    outage: float,
    wait: bool,
) -> dict[str, Any]:
    quiet = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
    origin = start_origin(
        tmp,
        cluster.dsn,
        storage_root,
        None,
        "errors",
        processes=processes,
        name=f"origin-{processes}-{'outage' if outage else 'steady'}",
    )
    base = f"http://127.0.0.1:{origin.port}"  # type: ignore[attr-defined]
    try:
        time.sleep(1.0)  # every process up (readyz answered by one of them)
        rss_start = _rss(origin.pid)
        with benchutil.Monitor(extra_pids=benchutil.cluster_pids(cluster)) as mon:
            tally = asyncio.run(
                _players(base, scene, players, seconds, cluster if outage else None, outage)
            )
        rss_end = _rss(origin.pid)
    finally:
        stop(origin)
    kinds = {
        kind: {
            "requests": len(tally.times[kind]) + len(tally.errors[kind]),
            "errors": len(tally.errors[kind]),
            "error_samples": sorted(set(tally.errors[kind]))[:5],
            "p50_ms": _pct(tally.times[kind], 0.50),
            "p99_ms": _pct(tally.times[kind], 0.99),
            "mean_ms": round(statistics.fmean(tally.times[kind]) * 1000, 2)
            if tally.times[kind]
            else None,
        }
        for kind in KINDS
    }
    result: dict[str, Any] = {
        "processes": processes,
        "players": players,
        "seconds": seconds,
        "requests": sum(k["requests"] for k in kinds.values()),
        "errors": sum(k["errors"] for k in kinds.values()),
        "bytes": tally.bytes,
        "kinds": kinds,
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
        "quiet_before": quiet,
        "others_during": mon.summary(),
    }
    if outage:
        assert tally.outage is not None
        result["outage"] = {
            "seconds": round(tally.outage[1] - tally.outage[0], 2),
            "answers_during": tally.during_outage,
        }
    return result


def _report(cases: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, c in cases.items():
        for kind in KINDS:
            k = c["kinds"][kind]
            rows.append([f"{name} {kind}", k["requests"], k["errors"], k["p50_ms"], k["p99_ms"]])
    table = benchutil.table(["run / kind", "requests", "errors", "p50 ms", "p99 ms"], rows)
    rss = benchutil.table(
        ["run", "RSS start (MiB, per process)", "RSS end"],
        [
            [
                name,
                " ".join(f"{(v or 0) / 1024:.0f}" for v in c["rss_kib_start"].values()),
                " ".join(f"{(v or 0) / 1024:.0f}" for v in c["rss_kib_end"].values()),
            ]
            for name, c in cases.items()
        ],
    )
    return table + "\n\n" + rss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="20 players x 10 s, 4 s outage")
    p.add_argument("--players", type=int, help="paced players per run (default 200)")
    p.add_argument("--duration", type=float, help="seconds per run (default 60)")
    p.add_argument("--outage", type=float, help="seconds Postgres is stopped (default 10)")
    p.add_argument("--clips", type=int, default=10, help="clips in the scene (default 10)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    a = p.parse_args(argv)
    players = a.players or (20 if a.quick else 200)
    seconds = a.duration or (10.0 if a.quick else 60.0)
    outage = a.outage or (4.0 if a.quick else 10.0)
    if outage >= seconds:
        p.error("--outage must be shorter than --duration")

    info = benchutil.machine()
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-load-"))
    cluster = None
    cases: dict[str, dict[str, Any]] = {}
    try:
        cluster = start_cluster(tmp)
        storage_root = tmp / "storage"
        scene = asyncio.run(populate(cluster.dsn, storage_root, a.clips))
        for processes in (2, 1):
            for out in (0.0, outage):
                name = f"processes={processes}" + (f" outage={out:g}s" if out else "")
                print(f"{name}: {players} players x {seconds:g} s ...", flush=True)
                cases[name] = run_case(
                    tmp,
                    cluster,
                    storage_root,
                    scene,
                    processes=processes,
                    players=players,
                    seconds=seconds,
                    outage=out,
                    wait=not a.no_wait,
                )
                c = cases[name]
                print(f"  {c['requests']} requests, {c['errors']} errors", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    data = {
        "machine": info,
        "settings": {
            "players": players,
            "seconds": seconds,
            "outage_seconds": outage,
            "clips": a.clips,
            "profile": PROFILE,
            "buffer_ahead_s": BUFFER_AHEAD,
            "segment_durations": [4.0, 4.0, 4.0, 2.5],
            "scene_seconds": round(a.clips * 14.5, 1),
        },
        "cases": cases,
    }
    path = benchutil.write_result("load-quick" if a.quick else "load", data)
    print(_report(cases))
    print(f"written: {path}")
    return 1 if any(c["errors"] for c in cases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
