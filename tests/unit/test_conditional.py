"""The pure send / 206 / 304 / 412 / 416 decision (RFC 9110 §13.2.2, §14)."""

from datetime import UTC, datetime

import pytest

from origin.conditional import Decision, decide, parse_range

ETAG = '"abc"'
MTIME = datetime(2026, 1, 31, 10, 0, 0, tzinfo=UTC)
SIZE = 1000
BEFORE = "Sat, 31 Jan 2026 09:00:00 GMT"
AT = "Sat, 31 Jan 2026 10:00:00 GMT"
AFTER = "Sat, 31 Jan 2026 11:00:00 GMT"


@pytest.mark.parametrize(
    "method,headers,expected",
    [
        ("GET", {}, Decision(200, 0, 999)),
        ("HEAD", {}, Decision(200, 0, 999)),
        # §13.1.2 If-None-Match, weak comparison
        ("GET", {"If-None-Match": ETAG}, Decision(304)),
        ("GET", {"If-None-Match": 'W/"abc"'}, Decision(304)),
        ("GET", {"If-None-Match": '"x", "abc"'}, Decision(304)),
        ("GET", {"If-None-Match": "*"}, Decision(304)),
        ("HEAD", {"If-None-Match": ETAG}, Decision(304)),
        ("GET", {"If-None-Match": '"other"'}, Decision(200, 0, 999)),
        # §13.1.3 If-Modified-Since, ignored when If-None-Match is present
        ("GET", {"If-Modified-Since": AT}, Decision(304)),
        ("GET", {"If-Modified-Since": AFTER}, Decision(304)),
        ("GET", {"If-Modified-Since": BEFORE}, Decision(200, 0, 999)),
        ("GET", {"If-Modified-Since": "garbage"}, Decision(200, 0, 999)),
        ("GET", {"If-None-Match": '"other"', "If-Modified-Since": AFTER}, Decision(200, 0, 999)),
        # §13.1.1 If-Match, strong comparison; §13.1.4 If-Unmodified-Since
        ("GET", {"If-Match": ETAG}, Decision(200, 0, 999)),
        ("GET", {"If-Match": '"other"'}, Decision(412)),
        ("GET", {"If-Match": 'W/"abc"'}, Decision(412)),
        ("GET", {"If-Unmodified-Since": BEFORE}, Decision(412)),
        ("GET", {"If-Unmodified-Since": AT}, Decision(200, 0, 999)),
        # §14.2 Range
        ("GET", {"Range": "bytes=0-0"}, Decision(206, 0, 0)),
        ("GET", {"Range": "bytes=-10"}, Decision(206, 990, 999)),
        ("GET", {"Range": "bytes=-5000"}, Decision(206, 0, 999)),
        ("GET", {"Range": "bytes=500-"}, Decision(206, 500, 999)),
        ("GET", {"Range": "bytes=10-20000"}, Decision(206, 10, 999)),
        ("GET", {"Range": "bytes=1000-"}, Decision(416)),
        ("GET", {"Range": "bytes=-0"}, Decision(416)),
        ("GET", {"Range": "bytes=0-1,5-6"}, Decision(200, 0, 999)),
        ("GET", {"Range": "bytes=9-3"}, Decision(200, 0, 999)),
        ("GET", {"Range": "items=0-1"}, Decision(200, 0, 999)),
        ("HEAD", {"Range": "bytes=0-0"}, Decision(200, 0, 999)),
        # §13.1.5 If-Range: a stale validator means "send it all"
        ("GET", {"Range": "bytes=0-0", "If-Range": ETAG}, Decision(206, 0, 0)),
        ("GET", {"Range": "bytes=0-0", "If-Range": '"old"'}, Decision(200, 0, 999)),
        ("GET", {"Range": "bytes=0-0", "If-Range": AT}, Decision(206, 0, 0)),
        ("GET", {"Range": "bytes=0-0", "If-Range": BEFORE}, Decision(200, 0, 999)),
        # a 304 wins over a Range
        ("GET", {"Range": "bytes=0-0", "If-None-Match": ETAG}, Decision(304)),
    ],
)
def test_decide(method, headers, expected):
    assert decide(method, headers, etag=ETAG, last_modified=MTIME, size=SIZE) == expected


def test_empty_object():
    assert decide("GET", {}, etag=ETAG, last_modified=MTIME, size=0) == Decision(200, 0, -1)
    assert parse_range("bytes=-1", 0) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"


def test_length():
    assert Decision(206, 10, 19).length == 10
