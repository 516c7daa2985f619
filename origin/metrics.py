"""What `/metrics` shows, in Prometheus' text format: requests by route, status and
who answered them (the aiohttp app or the fast path), signing outcomes, read-cache
entries, the job table by kind and status, and this process (pid, RSS, open files,
CPU). Request counts are plain integers bumped on the request path; everything is
turned into metric families only when scraped."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from origin.scenecache import ReadCaches

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (route template, status, "app" | "connection") -> requests
RequestCounts = Counter[tuple[str, int, str]]


class FastPathAnswers:
    """Answers the fast path made (origin/fastpath/), by status: a few integers, the
    cheapest thing to bump on that path."""

    __slots__ = ("ok", "not_modified", "other")

    def __init__(self) -> None:
        self.ok = 0
        self.not_modified = 0
        self.other: Counter[int] = Counter()

    def count(self, status: int) -> None:
        if status == 200:
            self.ok += 1
        elif status == 304:
            self.not_modified += 1
        else:
            self.other[status] += 1

    def counts(self, route: str) -> RequestCounts:
        found: RequestCounts = Counter(
            {(route, 200, "fast_path"): self.ok, (route, 304, "fast_path"): self.not_modified}
        )
        for status, n in self.other.items():
            found[(route, status, "fast_path")] += n
        return found


def _family(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    samples: Iterable[tuple[Sequence[object], float]],
) -> Metric:
    metric = family(name, doc, labels=labels)
    for values, n in samples:
        metric.add_metric([str(v) for v in values], n)
    return metric


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def exposition(
    requests: RequestCounts,
    signing: Mapping[str, int],
    denied: Mapping[str, int],
    caches: ReadCaches,
    jobs: Mapping[tuple[str, str], int] | None,
    deliveries: Mapping[str, int] | None = None,
) -> bytes:
    """The text exposition of one scrape (`jobs` None: the table could not be read)."""
    sizes = {
        "playlists": len(caches.playlists),
        "versions": len(caches.versions),
        "ready": len(caches.ready),
        "segment_docs": len(caches.segment_docs),
    }
    families = [
        _family(
            CounterMetricFamily,
            "storyforge_http_requests",
            "Requests answered, by route template, status and who answered "
            "(app: the aiohttp app; fast_path: a warm scene document, origin/fastpath/)",
            ["route", "status", "answered_by"],
            sorted(requests.items()),
        ),
        _family(
            CounterMetricFamily,
            "storyforge_signing_checks",
            "Signing guard outcomes on /v/ and /e/ requests",
            ["outcome"],
            (((k,), n) for k, n in sorted(signing.items())),
        ),
        _family(
            CounterMetricFamily,
            "storyforge_signing_denied",
            "Requests refused by the signing guard, by reason",
            ["reason"],
            (((k,), n) for k, n in sorted(denied.items())),
        ),
        _family(
            GaugeMetricFamily,
            "storyforge_read_cache_entries",
            "Entries in the read-path caches",
            ["cache"],
            (((name,), n) for name, n in sizes.items()),
        ),
        _family(
            GaugeMetricFamily,
            "storyforge_process_info",
            "This process (one series per origin process: `serve --processes N` runs N)",
            ["pid"],
            [((os.getpid(),), 1)],
        ),
        _family(
            GaugeMetricFamily,
            "storyforge_jobs_scrape_ok",
            "1 when the job table could be read for this scrape",
            [],
            [((), 0 if jobs is None else 1)],
        ),
    ]
    if jobs is not None:
        families.append(
            _family(
                GaugeMetricFamily,
                "storyforge_jobs",
                "Jobs in the job table, by kind and status",
                ["kind", "status"],
                sorted(jobs.items()),
            )
        )
    if deliveries is not None:
        families.append(
            _family(
                GaugeMetricFamily,
                "storyforge_webhook_deliveries",
                "Webhook deliveries (one event to one endpoint) by status: waiting, queued, "
                "delivered, dead",
                ["status"],
                (((k,), n) for k, n in sorted(deliveries.items())),
            )
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    ProcessCollector(registry=registry)  # process_* : RSS, open files, CPU seconds
    return generate_latest(registry)
