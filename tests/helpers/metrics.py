"""`/metrics` read back: the Prometheus text parsed into samples."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client) -> Samples:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await r.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests(samples: Samples, route: str, status: int, by: str) -> float:
    """Requests answered on `route` with `status` by `by` (app or fast_path)."""
    key = (
        "storyforge_http_requests_total",
        (("answered_by", by), ("route", route), ("status", str(status))),
    )
    return samples.get(key, 0.0)
