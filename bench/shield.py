"""Origin shield benchmark (issue 28): paced players through Varnish (the project's VCL,
infra/varnish/storyforge.vcl) in front of `storyforge serve`, and the same with
PostgreSQL stopped in the middle.

In one run, on this machine:

1. Set-up. A private PostgreSQL cluster in a temporary directory, migrated;
   LocalStorage beside it; one scene of ``--clips`` ready clips (bench/load.py
   ``populate``: rows as the transcoder writes them, segments of 4, 4, 4 and 2.5 s,
   720p media stored at the sizes the rows declare).
2. Runs. For each run a fresh `storyforge serve --processes 1` (one process: its
   /metrics counts every request it answered) and a fresh, empty Varnish in front of
   it (storyforge/dev/varnish.py, as `storyforge dev --cdn` runs it). ``--players``
   players play through Varnish as hls.js does a VOD with its defaults (bench/load.py:
   master, 720p variant, then media segments until 30 s are buffered ahead, then one as
   each plays out; one keep-alive connection each; arriving evenly over the first 60%
   of the run). Every answer must be a 200 with its whole body within 30 s. The second
   run stops PostgreSQL for ``--outage`` seconds in the middle (``pg_ctl stop -m fast``,
   then started again).
3. Reported per run and kind (master, variant, segment): requests at the players,
   errors, the cache's hit ratio (`X-Cache: HIT` over requests), the distinct objects
   the players asked for, the requests the origin answered (its
   ``storyforge_http_requests_total`` on the route, before and after), the origin
   requests per distinct object (target for segments: <= 1.05), and p50/p99 of the
   time to the last byte at the player.

Usage: ``.venv/bin/python bench/shield.py [--quick] [--players N] [--duration S]
[--outage S] [--clips N] [--no-wait]``. ``--quick``: 40 players x 15 s, 5 s outage,
5 clips. Writes ``bench/results/shield.json`` (``shield-quick.json`` with ``--quick``).
Needs Debian's varnish and varnish-modules (``scripts/setup bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import benchutil
from load import BUFFER_AHEAD, PROFILE, _media, _pct, populate
from serve import start_cluster, start_origin, stop

from origin.playback.routes import SCENE_DOCUMENT_ROUTE, SEGMENT_FILE_ROUTE
from storyforge.dev import varnish
from storyforge.dev.cluster import Cluster, free_port

KINDS = ("master", "variant", "segment")
ROUTES = {"master": SCENE_DOCUMENT_ROUTE, "variant": SCENE_DOCUMENT_ROUTE}
ANSWER_TIMEOUT = 30.0
SEGMENT_TARGET = 1.05  # origin requests per distinct segment


@dataclass
class Seen:
    """What the players of one run saw, by kind."""

    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    urls: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    during_outage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    outage: tuple[float, float] | None = None  # monotonic start, end (0: not yet)

    def answered(self, kind: str, url: str, started: float, error: str, hit: bool) -> None:
        now = time.monotonic()
        self.urls[kind].add(url)
        if error:
            self.errors[kind].append(error)
        else:
            self.times[kind].append(now - started)
            self.hits[kind] += hit
        if self.outage is not None and self.outage[0] <= now:
            if not self.outage[1] or now <= self.outage[1]:
                self.during_outage[kind] += 1


async def fetch(session: aiohttp.ClientSession, url: str, kind: str, seen: Seen) -> bytes | None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            async with session.get(url) as r:
                body = await r.read()
                length, cache = r.content_length, r.headers.get("X-Cache", "")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        seen.answered(kind, url, started, f"{type(exc).__name__}: {exc}", False)
        return None
    if r.status != 200 or (length is not None and length != len(body)):
        seen.answered(kind, url, started, f"{r.status} ({len(body)} bytes)", False)
        return None
    seen.answered(kind, url, started, "", cache == "HIT")
    return body


async def player(base: str, scene: str, until: float, start_at: float, seen: Seen) -> None:
    """One viewer through the cache, paced as bench/load.py's (hls.js defaults)."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        while time.monotonic() < until:
            if await fetch(session, f"{base}/v/{scene}/master.m3u8", "master", seen) is None:
                await asyncio.sleep(1.0)
                continue
            text = await fetch(session, f"{base}/v/{scene}/{PROFILE}.m3u8", "variant", seen)
            if text is None:
                await asyncio.sleep(1.0)
                continue
            playhead_start = time.monotonic()
            buffered = 0.0
            for uri, duration in _media(text.decode()):
                ahead = buffered - (time.monotonic() - playhead_start)
                if ahead > BUFFER_AHEAD:
                    await asyncio.sleep(ahead - BUFFER_AHEAD)
                if time.monotonic() >= until:
                    return
                await fetch(session, f"{base}/v/{scene}/{uri}", "segment", seen)
                buffered += duration


async def _outage(cluster: Cluster, at: float, seconds: float, seen: Seen) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    await asyncio.to_thread(cluster.stop)
    stopped = time.monotonic()
    seen.outage = (stopped, 0.0)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - stopped)))
    seen.outage = (stopped, time.monotonic())
    await asyncio.to_thread(cluster.start, fast=True)


async def _players(
    base: str, scene: str, n: int, seconds: float, cluster: Cluster | None, outage: float
) -> Seen:
    seen = Seen()
    start = time.monotonic()
    ramp = seconds * 0.6
    until = start + seconds
    tasks = [player(base, scene, until, start + ramp * i / max(1, n - 1), seen) for i in range(n)]
    if cluster is not None:
        tasks.append(_outage(cluster, start + (seconds - outage) / 2, outage, seen))
    await asyncio.gather(*tasks)
    return seen


def origin_requests(origin: str) -> dict[str, float]:
    """Requests the origin answered, by route (its /metrics, every status)."""
    with urllib.request.urlopen(origin + "/metrics", timeout=10) as r:
        text = r.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("storyforge_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            route = labels.split('route="', 1)[1].split('"', 1)[0]
            counts[route] = counts.get(route, 0.0) + float(value)
    return counts


def run_case(
    tmp: Path,
    cluster: Cluster,
    storage_root: Path,
    scene: str,
    *,
    players: int,
    seconds: float,
    outage: float,
    wait: bool,
) -> dict[str, Any]:
    quiet = benchutil.wait_quiet(timeout=1200 if wait else 0, log=wait)
    name = f"origin-shield-{'outage' if outage else 'steady'}"
    origin = start_origin(tmp, cluster.dsn, storage_root, None, "errors", name=name)
    origin_url = f"http://127.0.0.1:{origin.port}"  # type: ignore[attr-defined]
    port = free_port()
    try:
        with varnish.running(varnish.Site(origin_port=origin.port), port) as cache:  # type: ignore[attr-defined]
            before = origin_requests(origin_url)
            with benchutil.Monitor(extra_pids=benchutil.cluster_pids(cluster)) as mon:
                seen = asyncio.run(
                    _players(cache, scene, players, seconds, cluster if outage else None, outage)
                )
            after = origin_requests(origin_url)
    finally:
        stop(origin)

    def at_origin(kind: str) -> float:
        route = ROUTES.get(kind, SEGMENT_FILE_ROUTE)
        return after.get(route, 0.0) - before.get(route, 0.0)

    kinds: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        requests = len(seen.times[kind]) + len(seen.errors[kind])
        distinct = len(seen.urls[kind])
        kinds[kind] = {
            "requests": requests,
            "errors": len(seen.errors[kind]),
            "error_samples": sorted(set(seen.errors[kind]))[:5],
            "hit_ratio": round(seen.hits[kind] / requests, 4) if requests else None,
            "distinct_objects": distinct,
            "p50_ms": _pct(seen.times[kind], 0.50),
            "p99_ms": _pct(seen.times[kind], 0.99),
        }
    # the scene's documents share one route: master and variant together
    documents = at_origin("master")
    distinct_documents = kinds["master"]["distinct_objects"] + kinds["variant"]["distinct_objects"]
    segments = at_origin("segment")
    result: dict[str, Any] = {
        "players": players,
        "seconds": seconds,
        "requests": sum(k["requests"] for k in kinds.values()),
        "errors": sum(k["errors"] for k in kinds.values()),
        "kinds": kinds,
        "origin_requests": {"documents": documents, "segments": segments},
        "origin_per_object": {
            "documents": round(documents / distinct_documents, 3) if distinct_documents else None,
            "segments": round(segments / kinds["segment"]["distinct_objects"], 3)
            if kinds["segment"]["distinct_objects"]
            else None,
        },
        "quiet_before": quiet,
        "others_during": mon.summary(),
    }
    if outage:
        assert seen.outage is not None
        result["outage"] = {
            "seconds": round(seen.outage[1] - seen.outage[0], 2),
            "answers_during": seen.during_outage,
        }
    return result


def _report(cases: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, c in cases.items():
        per = c["origin_per_object"]
        for kind in KINDS:
            k = c["kinds"][kind]
            origin = c["origin_requests"]["segments" if kind == "segment" else "documents"]
            ratio = per["segments" if kind == "segment" else "documents"]
            rows.append(
                [
                    f"{name} {kind}",
                    k["requests"],
                    k["errors"],
                    k["hit_ratio"],
                    k["distinct_objects"],
                    f"{origin:g}" if kind != "variant" else "(with master)",
                    ratio if kind != "variant" else "",
                    k["p50_ms"],
                    k["p99_ms"],
                ]
            )
    return benchutil.table(
        [
            "run / kind",
            "requests",
            "errors",
            "hit ratio",
            "distinct",
            "origin requests",
            "origin / distinct",
            "p50 ms",
            "p99 ms",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="40 players x 15 s, 5 s outage, 5 clips")
    p.add_argument("--players", type=int, help="paced players per run (default 500)")
    p.add_argument("--duration", type=float, help="seconds per run (default 60)")
    p.add_argument("--outage", type=float, help="seconds Postgres is stopped (default 10)")
    p.add_argument("--clips", type=int, help="clips in the scene (default 20)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    a = p.parse_args(argv)
    players = a.players or (40 if a.quick else 500)
    seconds = a.duration or (15.0 if a.quick else 60.0)
    outage = a.outage or (5.0 if a.quick else 10.0)
    clips = a.clips or (5 if a.quick else 20)
    if outage >= seconds:
        p.error("--outage must be shorter than --duration")
    varnish.varnishd()  # fails early, naming the packages, when Varnish is missing

    info = benchutil.machine()
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-shield-"))
    cluster = None
    cases: dict[str, dict[str, Any]] = {}
    try:
        cluster = start_cluster(tmp)
        storage_root = tmp / "storage"
        scene = asyncio.run(populate(cluster.dsn, storage_root, clips))
        for out in (0.0, outage):
            name = "steady" if not out else f"outage={out:g}s"
            print(f"{name}: {players} players x {seconds:g} s through Varnish ...", flush=True)
            cases[name] = run_case(
                tmp,
                cluster,
                storage_root,
                scene,
                players=players,
                seconds=seconds,
                outage=out,
                wait=not a.no_wait,
            )
            c = cases[name]
            print(
                f"  {c['requests']} requests, {c['errors']} errors, "
                f"origin requests per segment {c['origin_per_object']['segments']}",
                flush=True,
            )
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    data = {
        "machine": info,
        "varnish": benchutil.first_line([varnish.varnishd(), "-V"]),
        "settings": {
            "players": players,
            "seconds": seconds,
            "outage_seconds": outage,
            "clips": clips,
            "profile": PROFILE,
            "buffer_ahead_s": BUFFER_AHEAD,
            "segment_durations": [4.0, 4.0, 4.0, 2.5],
            "segment_target": SEGMENT_TARGET,
        },
        "cases": cases,
    }
    path = benchutil.write_result("shield-quick" if a.quick else "shield", data)
    print(_report(cases))
    print(f"written: {path}")
    over = any((c["origin_per_object"]["segments"] or 0) > SEGMENT_TARGET for c in cases.values())
    return 1 if over or any(c["errors"] for c in cases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
