"""Prometheus' text format for every process's `/metrics`: latency series and how a
family or histogram is made of plain counts, the families both processes show (the
job table by kind and status with the age of the oldest due job, CDN invalidation
requests and webhook deliveries of every process, from Postgres; this process: pid,
RSS, open files, CPU) and the exposition. Counts are plain integers and lists bumped
on the hot paths; they become metric families only when scraped. What only the origin
counts is in origin/http/stats.py (requests, signing, outages), origin/playback/
(read caches, thumbnails); the worker's own in workers/runtime/metrics.py."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
            "varnish, none: no CDN configured) and outcome (sent, skipped, failed)",
            ["backend", "outcome"],
            ((k, v[0]) for k, v in sorted(invalidations.items())),
        ),
        family(
            CounterMetricFamily,
            "storyforge_cdn_invalidation_paths",
            "Paths (cloudfront, none) or cache tags (varnish) in those CDN invalidation requests",
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
