"""A real varnishd in front of an origin under test, running the project's VCL
(infra/varnish/storyforge.vcl, through storyforge/dev/varnish.py as `storyforge dev
--cdn` runs it), and what the tests read back: the origin's request counts and the
cache's answers."""

from __future__ import annotations

import shutil

from tests.helpers.metrics import Samples

HAVE_VARNISH = bool(shutil.which("varnishd") or shutil.which("varnishd", path="/usr/sbin"))
NO_VARNISH_REASON = (
    "varnishd not installed (CI installs it: apt-get install varnish varnish-modules, "
    "scripts/setup test)"
)
TAG_FIELDS = ("Surrogate-Key", "xkey", "Cache-Tag", "sf-swr")


def origin_requests(samples: Samples, route: str) -> float:
    """Requests the origin answered on `route`, whatever the status or the path."""
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "storyforge_http_requests_total" and dict(labels).get("route") == route
    )


def purges(samples: Samples, outcome: str = "sent") -> tuple[float, float]:
    """(requests, tags) of Varnish purges every process counted with `outcome`."""
    labels = (("backend", "varnish"), ("outcome", outcome))
    return (
        samples.get(("storyforge_cdn_invalidation_requests_total", labels), 0.0),
        samples.get(("storyforge_cdn_invalidation_paths_total", labels), 0.0),
    )


def leaked_tags(headers) -> list[str]:  # type: ignore[no-untyped-def]
    """The tag fields an answer of the cache still carries (none may)."""
    return [name for name in TAG_FIELDS if name in headers]
