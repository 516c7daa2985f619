"""`storyforge dev`, the embedded default: a private PostgreSQL cluster (cluster.py),
LocalStorage, the origin and worker processes (supervisor.py) and the demo scene
(demo.py), all under one state directory. Development tooling: origin and workers
never import this package."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
from pathlib import Path

from origin import db
from storyforge import StartupError
from storyforge.dev import supervisor
from storyforge.dev.cluster import ClusterError, open_cluster


def run(home: Path, *, port: int, workers: int, demo: bool) -> int:
    """Run the embedded stack until SIGINT/SIGTERM; a second run reuses HOME's data."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if workers < 0:
        raise StartupError("--workers must be >= 0")
    try:
        cluster = open_cluster(home / "pg")
        first_start = not cluster.initialised()
        if first_start:
            print(f"creating a PostgreSQL cluster in {cluster.datadir}", flush=True)
            cluster.init()
        cluster.start()
    except ClusterError as exc:
        raise StartupError(str(exc)) from exc

    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    children: list[subprocess.Popen[bytes]] = []
    try:
        try:
            asyncio.run(db.migrate_dsn(cluster.dsn))
        except db.DatabaseError as exc:
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
        children.append(supervisor.spawn(["serve"], env))
        for _ in range(workers):
            children.append(supervisor.spawn(["worker", "--concurrency", "1"], env))
        base = f"http://127.0.0.1:{port}"
        supervisor.wait_ready(base, children, lambda: stopping)
        print(f"ready: {base}", flush=True)
        if demo and not stopping:
            from storyforge.dev.demo import ensure_demo_scene

            scene_id = asyncio.run(ensure_demo_scene(base, env["API_TOKENS"], home))
            print(f"demo scene {scene_id}: {base}/player/{scene_id}", flush=True)
        supervisor.watch(children, lambda: stopping)
        return 0
    finally:
        supervisor.stop(children)
        cluster.stop()
