"""What `/metrics` shows, in Prometheus' text format: requests by route, status and
who answered them (the aiohttp app or the fast path) with their latencies and bytes,
requests in flight, signing outcomes, read-cache entries, hits and misses, the job
table (depth by kind and status, 0 when empty, and the age of the oldest due job),
CDN invalidation requests of every process (from Postgres), thumbnails at a moment
(cache hits, ffmpeg runs, the concurrency bound), and this process (pid, RSS, open
files, CPU). Counts are plain integers and lists bumped on the request path; they
become metric families only when scraped."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from origin.scenecache import LRU, ReadCaches

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (route template, status, "app" | "fast_path") -> requests
RequestCounts = Counter[tuple[str, int, str]]

# upper bounds (seconds) of the request latency histogram's buckets
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def new_latency_series(buckets: Sequence[float] = LATENCY_BUCKETS) -> list[float]:
    """Counts per bucket (the last slot: above every bound), then the sum of seconds."""
    return [0.0] * (len(buckets) + 2)


def observe(
    series: list[float], seconds: float, buckets: Sequence[float] = LATENCY_BUCKETS
) -> None:
    series[bisect_left(buckets, seconds)] += 1
    series[-1] += seconds


class HttpStats:
    """What the app's answers add up to: requests by (route, status, answered_by),
    latency series by (route, answered_by), bytes sent by answered_by, how many
    requests the app is handling right now, and requests whose client went away before
    their answer (by route; not among the answered requests)."""

    __slots__ = ("requests", "latencies", "bytes_sent", "in_flight", "client_closed")

    def __init__(self) -> None:
        self.requests: RequestCounts = Counter()
        self.latencies: dict[tuple[str, str], list[float]] = {}
        self.bytes_sent: Counter[str] = Counter()
        self.in_flight = 0
        self.client_closed: Counter[str] = Counter()

    def answered(self, route: str, status: int, seconds: float, sent: int) -> None:
        self.requests[(route, status, "app")] += 1
        series = self.latencies.get((route, "app"))
        if series is None:
            series = self.latencies[(route, "app")] = new_latency_series()
        observe(series, seconds)
        self.bytes_sent["app"] += sent


class FastPathAnswers:
    """Answers the fast path made (origin/fastpath/), all for one route: a few integers
    and one latency series, the cheapest things to bump on that path."""

    __slots__ = ("ok", "not_modified", "other", "latency", "bytes_sent")

    def __init__(self) -> None:
        self.ok = 0
        self.not_modified = 0
        self.other: Counter[int] = Counter()
        self.latency = new_latency_series()
        self.bytes_sent = 0

    def count(self, status: int, seconds: float, sent: int) -> None:
        if status == 200:
            self.ok += 1
        elif status == 304:
            self.not_modified += 1
        else:
            self.other[status] += 1
        observe(self.latency, seconds)
        self.bytes_sent += sent

    def counts(self, route: str) -> RequestCounts:
        found: RequestCounts = Counter(
            {(route, 200, "fast_path"): self.ok, (route, 304, "fast_path"): self.not_modified}
        )
        for status, n in self.other.items():
            found[(route, status, "fast_path")] += n
        return found


class ThumbnailStats:
    """Thumbnails at any moment (origin/stills.py), bumped on their path: answers by
    where they came from, ffmpeg runs started, running now and at most, refusals."""

    __slots__ = ("answers", "ffmpeg_runs", "running", "max_running", "busy", "failures")

    def __init__(self) -> None:
        self.answers: Counter[str] = Counter()  # memory | storage | ffmpeg
        self.ffmpeg_runs = 0
        self.running = 0
        self.max_running = 0
        self.busy = 0  # 503: the concurrency bound would have kept it waiting too long
        self.failures = 0

    def families(self, cache_bytes: int) -> list[Metric]:
        answers = family(
            CounterMetricFamily,
            "storyforge_thumbnail_answers",
            "Thumbnails at a moment answered, by where the JPEG came from (memory, storage, "
            "a new ffmpeg run, or shared with a concurrent request for the same frame)",
            ["source"],
            (((k,), n) for k, n in sorted(self.answers.items())),
        )
        scalars = [
            (CounterMetricFamily, "ffmpeg_runs", "ffmpeg frame grabs started", self.ffmpeg_runs),
            (GaugeMetricFamily, "ffmpeg_running", "ffmpeg frame grabs running now", self.running),
            (
                GaugeMetricFamily,
                "ffmpeg_running_max",
                "Most ffmpeg frame grabs ever running at once in this process",
                self.max_running,
            ),
            (
                CounterMetricFamily,
                "busy",
                "Thumbnail requests answered 503 (THUMBNAIL_CONCURRENCY busy for too long)",
                self.busy,
            ),
            (CounterMetricFamily, "failures", "ffmpeg frame grabs that failed", self.failures),
            (GaugeMetricFamily, "cache_bytes", "Bytes of thumbnails kept in memory", cache_bytes),
        ]
        return [answers] + [
            family(kind, f"storyforge_thumbnail_{name}", doc, [], [((), value)])
            for kind, name, doc, value in scalars
        ]


def family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    samples: Iterable[tuple[Sequence[object], float]],
) -> Metric:
    """A counter or gauge family with one sample per (label values, value)."""
    metric = kind(name, doc, labels=labels)
    for values, n in samples:
        metric.add_metric([str(v) for v in values], n)
    return metric


def histogram(
    name: str,
    doc: str,
    labels: list[str],
    series: Iterable[tuple[Sequence[object], list[float]]],
    bounds: Sequence[float] = LATENCY_BUCKETS,
) -> Metric:
    """A histogram family from series made by `new_latency_series(bounds)`."""
    metric = HistogramMetricFamily(name, doc, labels=labels)
    for values, counts in series:
        cumulative, buckets = 0.0, []
        for bound, n in zip((*bounds, float("inf")), counts, strict=False):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        metric.add_metric([str(v) for v in values], buckets, sum_value=counts[-1])
    return metric


def http_families(stats: HttpStats, fast: FastPathAnswers, fast_route: str) -> list[Metric]:
    """Requests, latencies, bytes and in-flight of the app and the fast path."""
    requests = stats.requests + fast.counts(fast_route)
    latencies = sorted(stats.latencies.items())
    if fast.latency[-1] or any(fast.latency[:-1]):
        latencies.append(((fast_route, "fast_path"), fast.latency))
    return [
        family(
            CounterMetricFamily,
            "storyforge_http_requests",
            "Requests answered, by route template, status and who answered "
            "(app: the aiohttp app; fast_path: a warm scene document, origin/fastpath/)",
            ["route", "status", "answered_by"],
            sorted(requests.items()),
        ),
        histogram(
            "storyforge_http_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte, by route template "
            "and who answered",
            ["route", "answered_by"],
            latencies,
        ),
        family(
            CounterMetricFamily,
            "storyforge_http_sent_bytes",
            "Bytes of answer bodies sent, by who answered",
            ["answered_by"],
            [(("app",), stats.bytes_sent["app"]), (("fast_path",), fast.bytes_sent)],
        ),
        family(
            GaugeMetricFamily,
            "storyforge_http_in_flight_requests",
            "Requests the app is handling now",
            [],
            [((), stats.in_flight)],
        ),
        family(
            CounterMetricFamily,
            "storyforge_client_closed",
            "Requests whose client closed the connection before the answer (mid-upload, "
            "say), by route template; not counted in storyforge_http_requests",
            ["route"],
            (((route,), n) for route, n in sorted(stats.client_closed.items())),
        ),
    ]


def signing_families(outcomes: Mapping[str, int], denied: Mapping[str, int]) -> list[Metric]:
    return [
        family(
            CounterMetricFamily,
            "storyforge_signing_checks",
            "Signing guard outcomes on /v/ and /e/ requests",
            ["outcome"],
            (((k,), n) for k, n in sorted(outcomes.items())),
        ),
        family(
            CounterMetricFamily,
            "storyforge_signing_denied",
            "Requests refused by the signing guard, by reason",
            ["reason"],
            (((k,), n) for k, n in sorted(denied.items())),
        ),
    ]


def cache_families(caches: ReadCaches) -> list[Metric]:
    named: dict[str, LRU[Any]] = {
        "playlists": caches.playlists,
        "versions": caches.versions,
        "ready": caches.ready,
        "segment_docs": caches.segment_docs,
    }
    return [
        family(
            GaugeMetricFamily,
            "storyforge_read_cache_entries",
            "Entries in the read-path caches",
            ["cache"],
            (((name,), len(lru)) for name, lru in named.items()),
        ),
        family(
            CounterMetricFamily,
            "storyforge_read_cache_lookups",
            "Read-path cache lookups, by cache and result (hit, miss: absent or expired)",
            ["cache", "result"],
            [
                ((name, result), n)
                for name, lru in named.items()
                for result, n in (("hit", lru.hits), ("miss", lru.misses))
            ],
        ),
    ]


def outage_families(reachable: bool, outages: int, stale_answers: int) -> list[Metric]:
    """Whether this process reached Postgres last time it tried, how many outages it
    has seen begin, and how many answers the read path made from stale caches."""
    return [
        family(
            GaugeMetricFamily,
            "storyforge_database_reachable",
            "1 when the origin's last connection attempt to Postgres worked, else 0",
            [],
            [((), 1 if reachable else 0)],
        ),
        family(
            CounterMetricFamily,
            "storyforge_database_outages",
            "Database outages this process has seen begin",
            [],
            [((), outages)],
        ),
        family(
            CounterMetricFamily,
            "storyforge_read_cache_stale_answers",
            "Read-cache entries (versions, readiness, scene JSON rows) answered stale "
            "while Postgres was unreachable",
            [],
            [((), stale_answers)],
        ),
    ]


def job_families(
    counts: Mapping[tuple[str, str], int] | None,
    oldest_due: Mapping[str, float] | None,
    kinds: Sequence[str],
    statuses: Sequence[str],
) -> list[Metric]:
    """The job table as read for this scrape (None: it could not be read). Every
    (kind, status) is present, 0 when there is no such job, so alerts can rely on it."""
    families = [
        family(
            GaugeMetricFamily,
            "storyforge_jobs_scrape_ok",
            "1 when the job table could be read for this scrape",
            [],
            [((), 0 if counts is None else 1)],
        )
    ]
    if counts is None or oldest_due is None:
        return families
    families += [
        family(
            GaugeMetricFamily,
            "storyforge_jobs",
            "Jobs in the job table, by kind and status",
            ["kind", "status"],
            [((k, s), counts.get((k, s), 0)) for k in kinds for s in statuses],
        ),
        family(
            GaugeMetricFamily,
            "storyforge_jobs_oldest_due_seconds",
            "Age of the oldest queued job whose start time has come, by kind (0: none)",
            ["kind"],
            [((k,), oldest_due.get(k, 0.0)) for k in kinds],
        ),
    ]
    return families


def invalidation_families(
    invalidations: Mapping[tuple[str, str], tuple[int, int]] | None,
) -> list[Metric]:
    """CDN invalidation requests of every process, read from Postgres: (backend,
    outcome) -> (requests, paths); None: not read this scrape."""
    if invalidations is None:
        return []
    return [
        family(
            CounterMetricFamily,
            "storyforge_cdn_invalidation_requests",
            "CDN invalidation requests sent by every process, by backend (cloudfront, "
            "none: no CDN configured) and outcome (sent, skipped, failed)",
            ["backend", "outcome"],
            ((k, v[0]) for k, v in sorted(invalidations.items())),
        ),
        family(
            CounterMetricFamily,
            "storyforge_cdn_invalidation_paths",
            "Paths in those CDN invalidation requests",
            ["backend", "outcome"],
            ((k, v[1]) for k, v in sorted(invalidations.items())),
        ),
    ]


def delivery_families(
    deliveries: Mapping[str, int] | None, oldest_pending: float | None = None
) -> list[Metric]:
    """Webhook deliveries by status and the age of the oldest undelivered event, read
    from Postgres (None: not read)."""
    if deliveries is None:
        return []
    families = [
        family(
            GaugeMetricFamily,
            "storyforge_webhook_deliveries",
            "Webhook deliveries (one event to one endpoint) by status: waiting, queued, "
            "delivered, dead",
            ["status"],
            (((k,), n) for k, n in sorted(deliveries.items())),
        )
    ]
    if oldest_pending is not None:
        families.append(
            family(
                GaugeMetricFamily,
                "storyforge_webhook_oldest_pending_seconds",
                "Age of the oldest event with a delivery still waiting or queued (0: none)",
                [],
                [((), oldest_pending)],
            )
        )
    return families


def process_family() -> Metric:
    return family(
        GaugeMetricFamily,
        "storyforge_process_info",
        "This process (one series per process: `serve --processes N` runs N)",
        ["pid"],
        [((os.getpid(),), 1)],
    )


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(families: Iterable[Metric]) -> bytes:
    """The text exposition of one scrape: `families`, this process's info and the
    standard process_* series (RSS, open files, CPU seconds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families, process_family()]))
    ProcessCollector(registry=registry)
    return generate_latest(registry)
