"""`storyforge dev`, the embedded default: a private PostgreSQL cluster (cluster.py),
LocalStorage, the origin and worker processes (supervisor.py; restarted when they
exit by storyforge/supervise.py, Postgres too) and the demo scene (demo.py), all
under one state directory; with `--cdn`, Varnish in front of the origin (varnish.py:
the project's VCL; the origin and workers purge it by cache tag, and the URLs they
emit, the demo player's included, go through it). Development tooling: origin and
workers never import this package."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from core import db, logs
from storyforge import StartupError, supervise
from storyforge.dev import supervisor, varnish
from storyforge.dev.cluster import ClusterError, free_port, open_cluster


def run(home: Path, *, port: int, workers: int, demo: bool, cdn_port: int | None = None) -> int:
    """Run the embedded stack until SIGINT/SIGTERM; a second run reuses HOME's data.
    Every child (Postgres, the origin, each worker, Varnish with `cdn_port`) that exits
    is restarted with backoff; one that keeps exiting (storyforge/supervise.py) stops
    the stack."""
    logs.configure("text")  # restarts are logged (storyforge.supervise)
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if workers < 0:
        raise StartupError("--workers must be >= 0")
    cache_dir: Path | None = None
    if cdn_port is not None:
        try:
            varnish.varnishd()
            cache_dir = varnish.prepare(varnish.Site(origin_port=port))
        except (varnish.VarnishError, ValueError) as exc:
            raise StartupError(str(exc)) from exc
    try:
        return _run(home, port, workers, demo, cdn_port, cache_dir)
    finally:
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)


def _run(
    home: Path, port: int, workers: int, demo: bool, cdn_port: int | None, cache_dir: Path | None
) -> int:
    stopping = supervise.stop_requested()
    try:
        cluster = open_cluster(home / "pg")
        if not cluster.initialised():
            print(f"creating a PostgreSQL cluster in {cluster.datadir}", flush=True)
            cluster.init()
    except ClusterError as exc:
        raise StartupError(str(exc)) from exc
    postgres = supervise.Child("postgres", cluster.server, stop_signal=signal.SIGINT)
    children: list[supervise.Child] = []
    front: list[supervise.Child] = []  # Varnish, in front of the origin
    try:
        supervise.step([postgres], time.monotonic())
        assert postgres.proc is not None
        try:
            cluster.wait_ready(postgres.proc)
            asyncio.run(db.migrate_dsn(cluster.dsn))
        except (ClusterError, db.DatabaseError) as exc:
            raise StartupError(str(exc)) from exc
        token_file = home / "api-token"
        if not token_file.exists():
            token_file.write_text(secrets.token_urlsafe(24))
            token_file.chmod(0o600)
        env = {
            **os.environ,
            "DATABASE_URL": cluster.dsn,
            "STORAGE": "local",
            "STORAGE_ROOT": str(home / "storage"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "text",
            "API_TOKENS": token_file.read_text().strip(),
            # webhooks to receivers on this machine (WEBHOOK_URLS) are the point here
            "WEBHOOK_ALLOW_PRIVATE": os.environ.get("WEBHOOK_ALLOW_PRIVATE", "true"),
        }
        cache = f"http://127.0.0.1:{cdn_port}" if cdn_port is not None else None
        if cache is not None:
            # purged by tag; every URL the origin emits goes through the cache
            env |= {"CDN": "varnish", "CDN_PURGE_URLS": cache + "/", "CDN_BASE_URL": cache}

        def command(*args: str, **extra: str) -> Callable[[], subprocess.Popen[bytes]]:
            return lambda: supervisor.spawn(list(args), {**env, **extra})

        children = [postgres, supervise.Child("origin", command("serve"))]
        children += [
            supervise.Child(
                f"worker {i + 1}",
                # each worker's /metrics on a port of its own
                command("worker", "--concurrency", "1", WORKER_METRICS_PORT=str(free_port())),
            )
            for i in range(workers)
        ]
        if cdn_port is not None and cache_dir is not None:
            front = [supervise.Child("varnish", lambda: varnish.start(cache_dir, cdn_port))]
            children += front
        base = f"http://127.0.0.1:{port}"
        supervisor.wait_ready(base, lambda: supervise.step(children, time.monotonic()), stopping)
        print(f"ready: {base}", flush=True)
        if cache is not None:
            _wait_cache(cache, lambda: supervise.step(children, time.monotonic()), stopping)
            print(f"cdn: {cache}", flush=True)
        if demo and not stopping():
            from storyforge.dev.demo import ensure_demo_scene

            scene_id = asyncio.run(ensure_demo_scene(base, env["API_TOKENS"], home))
            print(f"demo scene {scene_id}: {cache or base}/player/{scene_id}", flush=True)
        supervise.run(children, stopping)
        return 0
    finally:
        # the cache first, then the origin and the workers, then the database they use
        supervise.stop(front, grace=10.0)
        supervise.stop([c for c in children if c is not postgres and c not in front], grace=40.0)
        supervise.stop([postgres], grace=30.0)


def _wait_cache(cache: str, running: Callable[[], None], stopping: Callable[[], bool]) -> None:
    """Wait until the origin answers through Varnish (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stopping():
        running()
        try:
            with urllib.request.urlopen(cache + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    if not stopping():
        raise StartupError(f"Varnish did not answer at {cache} within 30 s")
