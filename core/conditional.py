"""The one place for HTTP Range parsing, entity-tag matching and the conditional decision
behind serving a stored object: full body, byte range, 304, 412 or 416, from the
request's conditional and Range fields and the object's validators (RFC 9110 §13 and
§14). No I/O: storage backends and handlers act on the result."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_ETAG_RE = re.compile(r'(?:W/)?"[^"]*"')  # RFC 9110 §8.8.3 entity-tag (etagc loosely)


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200, 206, 304, 412 or 416
    start: int = 0  # inclusive byte positions of the body to send (200/206)
    end: int = -1

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def http_date(value: str | None) -> datetime | None:
    """An HTTP-date field value (RFC 9110 §5.6.7) as an aware datetime; None when absent
    or invalid (§13.1.3, §13.1.4: an invalid date is ignored)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else None


def entity_tags(header: str) -> list[str]:
    """The members of an If-Match / If-None-Match list (RFC 9110 §13.1.1), `*` included."""
    return [t.strip() for t in header.split(",") if t.strip()]


def is_entity_tag(value: str) -> bool:
    """`value` is one syntactically valid entity-tag, weak or strong (RFC 9110 §8.8.3)."""
    return _ETAG_RE.fullmatch(value) is not None


def _weak_match(etag: str, candidates: list[str]) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison, used by If-None-Match."""
    bare = etag.removeprefix("W/")
    return any(c == "*" or c.removeprefix("W/") == bare for c in candidates)


def _strong_match(etag: str, candidates: list[str]) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison, used by If-Match."""
    if etag.startswith("W/"):
        return False
    return any(c == "*" or c == etag for c in candidates)


def none_match(if_none_match: str | None, etag: str) -> bool:
    """The If-None-Match condition (RFC 9110 §13.1.2) for a representation with `etag`:
    True when the field is absent or none of its entity tags matches `etag` by weak
    comparison (send the representation); False when one matches or the field is `*`
    (answer 304 to GET and HEAD, 412 to other methods)."""
    if if_none_match is None:
        return True
    return not _weak_match(etag, entity_tags(if_none_match))


def if_range_validator(value: str) -> str | datetime | None:
    """The validator an If-Range field carries (RFC 9110 §13.1.5): a strong entity tag or
    an HTTP-date; None when it can never match (a weak tag, which strong comparison never
    matches; an invalid date; anything else), so the Range must be ignored."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value if is_entity_tag(value) and not value.startswith("W/") else None
    return http_date(value)


def byte_range(header: str) -> tuple[int | None, int | None] | None:
    """The one byte-range-spec of a Range field (RFC 9110 §14.1.1) as (first, last): last
    None for `first-`, first None for a suffix of `last` bytes. None when the field is to
    be ignored (§14.2): another unit, several ranges (answered with the whole body),
    `bytes=-`, or last < first (an invalid range-spec)."""
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first = int(m.group(1)) if m.group(1) else None
    last = int(m.group(2)) if m.group(2) else None
    if first is None and last is None:
        return None
    if first is not None and last is not None and last < first:
        return None
    return first, last


def resolve_range(
    spec: tuple[int | None, int | None], size: int
) -> tuple[int, int] | Literal["unsatisfiable"]:
    """A byte-range-spec from `byte_range` against an object of `size` bytes, as inclusive
    (start, end) with `last` clamped to the object; "unsatisfiable" when no byte of the
    object is selected (§14.1.2: a first-pos at or past the end, a zero-length suffix,
    any range of an empty object; answered with 416)."""
    first, last = spec
    if first is None:  # suffix range: the last N bytes
        assert last is not None
        if last == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - last), size - 1)
    if first >= size:
        return "unsatisfiable"
    return (first, size - 1 if last is None else min(last, size - 1))


def parse_range(header: str, size: int) -> tuple[int, int] | None | Literal["unsatisfiable"]:
    """One byte range of `size` bytes as inclusive (start, end); None when the header
    should be ignored (see `byte_range`); "unsatisfiable" when no byte of the object is
    selected (§14.1.2, 416)."""
    spec = byte_range(header)
    return None if spec is None else resolve_range(spec, size)


def decide(
    method: str, headers: Mapping[str, str], *, etag: str, last_modified: datetime, size: int
) -> Decision:
    """Evaluate preconditions in the order of RFC 9110 §13.2.2, then Range (§14.2)."""
    mtime = last_modified.replace(microsecond=0)
    whole = Decision(200, 0, size - 1)
    # §13.2.2 step 1: If-Match, else step 2: If-Unmodified-Since
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _strong_match(etag, entity_tags(if_match)):
            return Decision(412)
    else:
        ius = http_date(headers.get("If-Unmodified-Since"))
        if ius is not None and mtime > ius:
            return Decision(412)
    # step 3: If-None-Match, else step 4: If-Modified-Since (GET/HEAD only)
    inm = headers.get("If-None-Match")
    if inm is not None:
        if not none_match(inm, etag):
            return Decision(304) if method in ("GET", "HEAD") else Decision(412)
    elif method in ("GET", "HEAD"):
        ims = http_date(headers.get("If-Modified-Since"))
        if ims is not None and mtime <= ims:
            return Decision(304)
    # step 5: Range, only for GET (§14.2), honoured only if If-Range still matches
    range_header = headers.get("Range")
    if method != "GET" or range_header is None:
        return whole
    if_range = headers.get("If-Range")
    if if_range is not None:
        validator = if_range_validator(if_range)
        # §13.1.5: a strong entity tag matches by strong comparison, a date exactly
        if validator is None or validator != (etag if isinstance(validator, str) else mtime):
            return whole
    parsed = parse_range(range_header, size)
    if parsed is None:
        return whole
    if isinstance(parsed, str):  # "unsatisfiable"
        return Decision(416)
    start, end = parsed
    return Decision(206, start, end)
