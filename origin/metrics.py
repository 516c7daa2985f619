"""What `/metrics` shows, in Prometheus' text format: requests by route, status and
who answered them (the aiohttp app or the fast path), signing outcomes, read-cache
entries, the job table by kind and status, thumbnails at a moment (cache hits, ffmpeg
runs, the concurrency bound), and this process (pid, RSS, open files, CPU). Request counts are plain integers bumped on the request path; everything is
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
        answers = _family(
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
            _family(kind, f"storyforge_thumbnail_{name}", doc, [], [((), value)])
            for kind, name, doc, value in scalars
        ]


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
    extra: Sequence[Metric] = (),
) -> bytes:
    """The text exposition of one scrape (`jobs` None: the table could not be read);
    `extra`: more families (e.g. `ThumbnailStats.families`)."""
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
    families.extend(extra)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    ProcessCollector(registry=registry)  # process_* : RSS, open files, CPU seconds
    return generate_latest(registry)
