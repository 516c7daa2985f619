"""The `storyforge` command: dev (embedded stack), serve, worker, migrate.

Start-up failures (bad configuration, unreachable database or storage, missing
PostgreSQL binaries) print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

EXIT_STARTUP = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="storyforge",
        description="StoryForge origin: HLS origin server, ffmpeg workers and tools. "
        "Configuration comes from environment variables (see README.md).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run the embedded stack: private PostgreSQL, local storage, origin, workers",
        description="Run everything on this machine: a private PostgreSQL cluster and local "
        "storage under --home, the origin and worker processes. Prints 'ready: URL' when the "
        "origin answers /readyz. Ctrl-C or SIGTERM stops it all; a second run reuses the data.",
    )
    dev.add_argument(
        "--home",
        default=".storyforge",
        help="state directory for the database cluster and storage (default: ./.storyforge)",
    )
    dev.add_argument("--port", type=int, default=8080, help="origin HTTP port (default: 8080)")
    dev.add_argument(
        "--workers", type=int, default=2, help="number of worker processes (default: 2)"
    )
    dev.add_argument(
        "--no-demo", action="store_true", help="do not create the demo scene on first start"
    )

    serve = sub.add_parser(
        "serve",
        help="run the origin HTTP server",
        description="Run the origin HTTP server configured by the environment "
        "(DATABASE_URL, STORAGE, ...). Migrations are not applied: run 'storyforge migrate'.",
    )
    serve.add_argument("--host", help="bind address (default: $HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $PORT or 8080)")

    worker = sub.add_parser(
        "worker",
        help="run a job worker (transcode, export, delete)",
        description="Claim jobs from the database and run them. SIGTERM stops claiming and "
        "lets running jobs finish within the grace period, then hands the rest back.",
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, help="jobs run at once in this process (default: 1)"
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds running jobs get to finish on SIGTERM before they are handed back "
        "(default: 30)",
    )

    sub.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply pending migrations/NNNN_*.sql in order, each in a transaction, "
        "under an advisory lock; refuse if an applied file was edited.",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from origin import logs
    from origin.settings import ConfigError, Settings

    try:
        if args.command == "dev":
            return _dev(args)
        settings = Settings.from_env()
        logs.configure(settings.log_format)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "serve":
            return _serve(settings, args.host, args.port)
        if args.command == "worker":
            return _worker(settings, args.concurrency, args.grace)
    except ConfigError as exc:
        print(f"storyforge: configuration error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except StartupError as exc:
        print(f"storyforge: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return 1


class StartupError(RuntimeError):
    pass


def _startup_errors() -> tuple[type[BaseException], ...]:
    from origin.db import DatabaseError
    from origin.pgcluster import ClusterError
    from origin.storage import StorageError

    return (DatabaseError, StorageError, ClusterError)


def _new_loop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


def _migrate(settings) -> int:
    from origin import db

    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            applied = runner.run(db.migrate_dsn(settings.database_url))
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def _serve(settings, host: str | None, port: int | None) -> int:
    from origin.app import create_app
    from origin.server import serve

    try:
        # asyncio's own loop, not uvloop: uvloop has no loop.sendfile, so aiohttp
        # would copy LocalStorage files through user space (bench/serve.py measured
        # 2.4x the bytes/s for 1 MB segments with sendfile).
        asyncio.run(
            serve(
                create_app(settings),
                host or settings.host,
                port if port is not None else settings.port,
            )
        )
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:
        raise StartupError(f"cannot listen: {exc}") from exc
    return 0


def _worker(settings, concurrency: int, grace: float) -> int:
    from workers.main import run

    if concurrency < 1:
        raise StartupError("--concurrency must be at least 1")
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(run(settings, concurrency=concurrency, grace=grace))
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc
    return 0


# --- the embedded default ---------------------------------------------------------


def _dev(args: argparse.Namespace) -> int:
    from origin import db, pgcluster

    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if args.workers < 0:
        raise StartupError("--workers must be >= 0")
    try:
        cluster = pgcluster.open_cluster(home / "pg")
        first_start = not cluster.initialised()
        if first_start:
            print(f"creating a PostgreSQL cluster in {cluster.datadir}", flush=True)
            cluster.init()
        cluster.start()
    except pgcluster.ClusterError as exc:
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
            "PORT": str(args.port),
            "LOG_FORMAT": "text",
            "API_TOKENS": token_file.read_text().strip(),
        }
        cmd = [sys.executable, "-m", "storyforge.cli"]
        # children ignore the terminal's Ctrl-C: we stop them in order below
        children.append(_spawn([*cmd, "serve"], env))
        for _ in range(args.workers):
            children.append(_spawn([*cmd, "worker", "--concurrency", "1"], env))
        base = f"http://127.0.0.1:{args.port}"
        _wait_ready(base, children, lambda: stopping)
        print(f"ready: {base}", flush=True)
        if not args.no_demo and not stopping:
            from workers.demo import ensure_demo_scene

            scene_id = asyncio.run(ensure_demo_scene(base, env["API_TOKENS"], home))
            print(f"demo scene {scene_id}: {base}/player/{scene_id}", flush=True)
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    raise StartupError(
                        f"child process {_role(child)} exited with status {child.returncode}"
                    )
            time.sleep(0.2)
        return 0
    finally:
        _stop_children(children)
        cluster.stop()


def _role(child: subprocess.Popen[bytes]) -> str:
    """What a child runs, e.g. "serve" or "worker --concurrency 1"."""
    args = child.args
    return " ".join(map(str, args[3:])) if isinstance(args, list) else str(args)


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )


def _wait_ready(base: str, children: list[subprocess.Popen[bytes]], stopping) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not stopping():
        for child in children:
            if child.poll() is not None:
                raise StartupError(f"'{_role(child)}' exited during start-up")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    if not stopping():
        raise StartupError(f"the origin did not become ready at {base}/readyz within 90 s")


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 40
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
