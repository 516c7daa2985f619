"""What a worker process's `/metrics` shows: jobs it finished by kind and outcome,
their durations, wall seconds spent in ffmpeg/ffprobe by job kind, jobs running now,
and the process (pid, RSS, open files, CPU); and the small HTTP server that serves it
on `WORKER_METRICS_PORT` (one port per worker process; 0: none)."""

from __future__ import annotations

import contextvars
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core import metrics

log = logging.getLogger("storyforge.worker")

# upper bounds (seconds) of the job duration histogram's buckets
JOB_BUCKETS: tuple[float, ...] = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
OUTCOMES = (
    "succeeded",
    "deferred",  # its work continues later (a removed clip's grace period)
    "retried",
    "failed",
    "dead",
    "lease_lost",
    "released",  # handed back at shutdown
    "unrecorded",  # the database could not take the outcome: the lease will expire
)


class JobStats:
    """A worker process's job figures, bumped by the job loop and the ffmpeg runner."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.durations: dict[str, list[float]] = {}
        self.tool_seconds: dict[str, float] = {}
        self.running = 0

    def finished(self, kind: str, outcome: str, seconds: float) -> None:
        self.outcomes[(kind, outcome)] += 1
        series = self.durations.get(kind)
        if series is None:
            series = self.durations[kind] = metrics.new_latency_series(JOB_BUCKETS)
        metrics.observe(series, seconds, JOB_BUCKETS)

    def families(self, kinds: list[str]) -> list[metrics.Metric]:
        return [
            metrics.family(
                CounterMetricFamily,
                "storyforge_worker_jobs",
                "Jobs this worker finished, by kind and outcome",
                ["kind", "outcome"],
                [((k, o), self.outcomes[(k, o)]) for k in kinds for o in OUTCOMES],
            ),
            metrics.histogram(
                "storyforge_worker_job_duration_seconds",
                "Time from a job's start to its outcome, by kind",
                ["kind"],
                (((k,), s) for k, s in sorted(self.durations.items())),
                JOB_BUCKETS,
            ),
            metrics.family(
                CounterMetricFamily,
                "storyforge_worker_tool_seconds",
                "Wall seconds spent in ffmpeg and ffprobe runs, by job kind",
                ["kind"],
                [((k,), self.tool_seconds.get(k, 0.0)) for k in kinds],
            ),
            metrics.family(
                GaugeMetricFamily,
                "storyforge_worker_running_jobs",
                "Jobs this worker is running now",
                [],
                [((), self.running)],
            ),
        ]


# the stats and job kind of the job the current task runs (set by the job loop)
_current: contextvars.ContextVar[tuple[JobStats, str] | None] = contextvars.ContextVar(
    "storyforge_job_stats", default=None
)


def running_job(stats: JobStats, kind: str) -> contextvars.Token[tuple[JobStats, str] | None]:
    """Attribute what the current task runs from now on to a job of `kind`."""
    return _current.set((stats, kind))


def tool_ran(seconds: float) -> None:
    """An ffmpeg/ffprobe run of the current job took `seconds` (no job: not counted)."""
    current = _current.get()
    if current is not None:
        stats, kind = current
        stats.tool_seconds[kind] = stats.tool_seconds.get(kind, 0.0) + seconds


@asynccontextmanager
async def metrics_server(
    stats: JobStats, kinds: list[str], host: str, port: int
) -> AsyncIterator[int | None]:
    """Serve `GET /metrics` on host:port while the block runs; yields the port (None
    when `port` is 0: no server)."""
    if port == 0:
        yield None
        return

    async def handler(request: web.Request) -> web.Response:
        body = metrics.exposition(stats.families(kinds))
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("worker metrics on http://%s:%d/metrics", host, port)
        yield port
    finally:
        await runner.cleanup()
