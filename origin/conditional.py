"""The pure decision behind serving a stored object over HTTP: full body, byte range,
304, 412 or 416, from the request's conditional and Range headers and the object's
validators (RFC 9110 §13 and §14). No I/O: the handler acts on the result."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200, 206, 304, 412 or 416
    start: int = 0  # inclusive byte positions of the body to send (200/206)
    end: int = -1

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # RFC 9110 §13.1.3: an invalid date is ignored
    return parsed if parsed.tzinfo else None


def _etags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def _weak_match(etag: str, candidates: list[str]) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison, used by If-None-Match."""
    bare = etag.removeprefix("W/")
    return any(c == "*" or c.removeprefix("W/") == bare for c in candidates)


def none_match(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match field value matches `etag` (RFC 9110 §13.1.2: weak
    comparison; `*` matches any current representation)."""
    return bool(if_none_match) and _weak_match(etag, _etags(if_none_match or ""))


def _strong_match(etag: str, candidates: list[str]) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison, used by If-Match and If-Range."""
    if etag.startswith("W/"):
        return False
    return any(c == "*" or c == etag for c in candidates)


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """One byte range of `size` bytes as inclusive (start, end); None when the header
    should be ignored (syntax we don't serve, multiple ranges -> whole body, §14.2);
    "unsatisfiable" when no byte of the object is selected (§14.1.2, 416)."""
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid range-spec: ignore the header
    if start >= size:
        return "unsatisfiable"
    return (start, min(end, size - 1))


def decide(
    method: str, headers: Mapping[str, str], *, etag: str, last_modified: datetime, size: int
) -> Decision:
    """Evaluate preconditions in the order of RFC 9110 §13.2.2, then Range (§14.2)."""
    mtime = last_modified.replace(microsecond=0)
    whole = Decision(200, 0, size - 1)
    # §13.2.2 step 1: If-Match, else step 2: If-Unmodified-Since
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _strong_match(etag, _etags(if_match)):
            return Decision(412)
    else:
        ius = _http_date(headers.get("If-Unmodified-Since"))
        if ius is not None and mtime > ius:
            return Decision(412)
    # step 3: If-None-Match, else step 4: If-Modified-Since (GET/HEAD only)
    inm = headers.get("If-None-Match")
    if inm is not None:
        if _weak_match(etag, _etags(inm)):
            return Decision(304) if method in ("GET", "HEAD") else Decision(412)
    elif method in ("GET", "HEAD"):
        ims = _http_date(headers.get("If-Modified-Since"))
        if ims is not None and mtime <= ims:
            return Decision(304)
    # step 5: Range, only for GET (§14.2), honoured only if If-Range still matches
    range_header = headers.get("Range")
    if method != "GET" or range_header is None:
        return whole
    if_range = headers.get("If-Range")
    if if_range is not None:
        if if_range.startswith('"') or if_range.startswith("W/"):
            if not _strong_match(etag, [if_range.strip()]):
                return whole
        else:
            date = _http_date(if_range)
            if date is None or mtime != date:
                return whole
    parsed = parse_range(range_header, size)
    if parsed is None:
        return whole
    if isinstance(parsed, str):  # "unsatisfiable"
        return Decision(416)
    start, end = parsed
    return Decision(206, start, end)
