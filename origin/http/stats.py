"""What the HTTP layer counts for `/metrics`: requests by route, status and who
answered them (the aiohttp app or the fast path) with their latencies and bytes,
requests in flight and cut by their clients, signing guard outcomes and database
outages seen by the read path. Plain counters bumped on the request path; families
only when scraped (core/metrics.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core.metrics import family, histogram, new_latency_series, observe

# (route template, status, "app" | "fast_path") -> requests
RequestCounts = Counter[tuple[str, int, str]]


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
    """Answers the fast path made (origin/http/connection.py), all counted under one route
    template (`route`, the app's route of the documents it answers): a few integers and
    one latency series, the cheapest things to bump on that path."""

    __slots__ = ("route", "ok", "not_modified", "other", "latency", "bytes_sent")

    def __init__(self, route: str) -> None:
        self.route = route
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

    def counts(self) -> RequestCounts:
        route = self.route
        found: RequestCounts = Counter(
            {(route, 200, "fast_path"): self.ok, (route, 304, "fast_path"): self.not_modified}
        )
        for status, n in self.other.items():
            found[(route, status, "fast_path")] += n
        return found


def http_families(stats: HttpStats, fast: FastPathAnswers) -> list[Metric]:
    """Requests, latencies, bytes and in-flight of the app and the fast path."""
    requests = stats.requests + fast.counts()
    latencies = sorted(stats.latencies.items())
    if fast.latency[-1] or any(fast.latency[:-1]):
        latencies.append(((fast.route, "fast_path"), fast.latency))
    return [
        family(
            CounterMetricFamily,
            "storyforge_http_requests",
            "Requests answered, by route template, status and who answered "
            "(app: the aiohttp app; fast_path: a warm scene document, origin/http/fastpath.py)",
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
