"""The `storyforge` command: dev (embedded stack), serve, worker, migrate, gc, jobs.

Start-up failures (bad configuration, unreachable database or storage, missing
PostgreSQL binaries) print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from storyforge import EXIT_STARTUP, StartupError


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
    dev.add_argument(
        "--cdn",
        action="store_true",
        help="put Varnish (infra/varnish/storyforge.vcl) in front of the origin, purged by "
        "cache tag; prints 'cdn: URL' after 'ready:' (needs Debian's varnish and "
        "varnish-modules)",
    )
    dev.add_argument(
        "--cdn-port", type=int, default=6081, help="Varnish's HTTP port with --cdn (default: 6081)"
    )

    serve = sub.add_parser(
        "serve",
        help="run the origin HTTP server",
        description="Run the origin HTTP server configured by the environment "
        "(DATABASE_URL, STORAGE, ...). Migrations are not applied: run 'storyforge migrate'.",
    )
    serve.add_argument("--host", help="bind address (default: $HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $PORT or 8080)")
    serve.add_argument(
        "--processes",
        default="1",
        help="origin processes sharing the port (SO_REUSEPORT), each with its own caches; "
        "a process that dies is restarted with backoff. 'auto': one per CPU core (default: 1)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds answers in flight get to finish on SIGTERM/SIGINT (default: 30)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT, so several servers can share the port "
        "(what --processes does for each of its processes)",
    )

    worker = sub.add_parser(
        "worker",
        help="run a job worker (delete_scene, expire_upload, export, refine, remove_segment, "
        "transcode, webhook jobs)",
        description="Claim the jobs this version runs (delete_scene, expire_upload, export, "
        "refine, remove_segment, transcode, webhook) from the database and run them, the "
        "highest priority first (refine last); jobs of other kinds stay queued. SIGTERM stops claiming and lets running jobs finish within the "
        "grace period, then hands the rest back.",
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
        description="Apply the pending migrations shipped in the package "
        "(migrations/NNNN_*.sql) in order, each in a transaction, under an advisory "
        "lock. Refuse (exit status 2) if none are found, if an applied file was edited, or if "
        "the database holds migrations this version does not know.",
    )

    gc = sub.add_parser(
        "gc",
        help="list (--dry-run) or remove (--apply) stored objects that no row points to; "
        "--apply also prunes history past its retention",
        description="Find objects in the four buckets whose row is gone (a clip's folder "
        "without its segment, a scene's objects without its scene, a job's internal objects "
        "without its job, an avatar without its user) and whose newest object is older than "
        "--min-age; print them, and with --apply delete them. Deleting scenes and clips "
        "removes their objects on its own: this is for orphans left by a crash. With "
        "--apply, first delete the history older than its retention (JOB_RETENTION, "
        "OUTBOX_RETENTION, UPLOAD_RETENTION), in batches of 1000 rows; the workers do the "
        "same a few batches at a time.",
    )
    mode = gc.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    mode.add_argument("--apply", action="store_true", help="remove what is listed")
    gc.add_argument(
        "--min-age",
        type=float,
        default=24.0,
        help="hours since an orphan's newest object was written (default: 24; an upload "
        "lands before its row is committed, so keep it above your longest request)",
    )

    from storyforge import jobs

    jobs.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from core import logs
    from core.settings import ConfigError, Settings

    try:
        if args.command == "dev":
            from storyforge import dev

            return dev.run(
                Path(args.home),
                port=args.port,
                workers=args.workers,
                demo=not args.no_demo,
                cdn_port=args.cdn_port if args.cdn else None,
            )
        settings = Settings.from_env()
        logs.configure(settings.log_format)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "serve":
            host = args.host or settings.host
            port = args.port if args.port is not None else settings.port
            processes = _processes(args.processes)
            if processes > 1:
                return _serve_processes(processes, host, port, args.grace)
            return _serve(settings, host, port, args.grace, args.reuse_port)
        if args.command == "worker":
            return _worker(settings, args.concurrency, args.grace)
        if args.command == "gc":
            return _gc(settings, apply=args.apply, min_age_hours=args.min_age)
        if args.command == "jobs":
            return _jobs(settings, args)
    except ConfigError as exc:
        print(f"storyforge: configuration error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except StartupError as exc:
        print(f"storyforge: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return 1


def _startup_errors() -> tuple[type[BaseException], ...]:
    from core.db import DatabaseError
    from core.storage import StorageError

    return (DatabaseError, StorageError)


def _new_loop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


def _migrate(settings) -> int:
    from core import db

    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            applied = runner.run(db.migrate_dsn(settings.database_url))
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def _processes(value: str) -> int:
    if value == "auto":
        return len(os.sched_getaffinity(0)) or 1
    if not value.isdigit() or int(value) < 1:
        raise StartupError(f"--processes must be a whole number >= 1 or 'auto', not {value!r}")
    return int(value)


def _serve(settings, host: str, port: int, grace: float, reuse_port: bool) -> int:
    from origin.app import create_app
    from origin.server import run

    try:
        run(create_app(settings), host, port, grace=grace, reuse_port=reuse_port)
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:
        raise StartupError(f"cannot listen: {exc}") from exc
    return 0


def _serve_processes(n: int, host: str, port: int, grace: float) -> int:
    """N `storyforge serve --reuse-port` children on one port, supervised: one that
    exits is restarted with backoff; SIGTERM/SIGINT stops them all within `grace`."""
    import logging
    import subprocess

    from storyforge import supervise

    log = logging.getLogger("storyforge.serve")
    stopping = supervise.stop_requested()
    args = [
        sys.executable, "-m", "storyforge.cli", "serve", "--reuse-port",
        "--host", host, "--port", str(port), "--grace", str(grace),
    ]  # fmt: skip

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL)

    children = [supervise.Child(f"origin process {i + 1}/{n}", start) for i in range(n)]
    log.info("serving on %s:%d with %d processes", host, port, n)
    try:
        supervise.run(children, stopping)
    finally:
        supervise.stop(children, grace + 5.0)
    return 0


def _worker(settings, concurrency: int, grace: float) -> int:
    from workers.runtime.main import run

    if concurrency < 1:
        raise StartupError("--concurrency must be at least 1")
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(run(settings, concurrency=concurrency, grace=grace))
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:
        raise StartupError(
            f"cannot serve the worker's /metrics on port {settings.worker_metrics_port} "
            f"(WORKER_METRICS_PORT; 0 turns it off): {exc}"
        ) from exc
    return 0


def _jobs(settings, args: argparse.Namespace) -> int:
    from storyforge import jobs

    try:
        return jobs.run(settings, args)
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc


def _gc(settings, *, apply: bool, min_age_hours: float) -> int:
    from datetime import timedelta

    from core import db, gc, retention
    from core.storage import open_configured_storage

    if not min_age_hours >= 0:
        raise StartupError(f"--min-age must be >= 0 hours, not {min_age_hours}")

    pruned: dict[str, int] = {}

    async def run() -> list[gc.Found]:
        pool = await db.connect_pool(settings.database_url, size=2)
        storage = await open_configured_storage(settings)
        try:
            if apply:
                pruned.update(await retention.prune(pool, retention.Retention.of(settings)))
            found = await gc.find_orphans(
                pool, storage, settings, min_age=timedelta(hours=min_age_hours)
            )
            return await gc.remove(storage, found) if apply else found
        finally:
            await storage.aclose()
            await pool.close()

    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            found = runner.run(run())
    except _startup_errors() as exc:
        raise StartupError(str(exc)) from exc
    if apply:
        print("pruned\t" + "\t".join(f"{n} {what}" for what, n in pruned.items()))
    verb = "removed" if apply else "orphan"
    for entry in found:
        count = entry.deleted if apply else entry.objects
        print(
            f"{verb}\t{entry.bucket}/{entry.owner.prefix}\t{count} objects\t{entry.bytes} bytes"
            f"\tno {entry.owner.table[:-1]} {entry.owner.id}"
        )
    total = sum(e.deleted if apply else e.objects for e in found)
    size = sum(e.bytes for e in found)
    print(
        f"{'removed' if apply else 'would remove'} {total} objects ({size} bytes) of {len(found)} "
        "orphaned owners"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
