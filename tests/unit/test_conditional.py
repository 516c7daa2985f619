"""The pure send / 206 / 304 / 412 / 416 decision (RFC 9110 §13.2.2, §14)."""

from datetime import UTC, datetime

import pytest

from core.conditional import (
    Decision,
    byte_range,
    decide,
    if_range_validator,
    none_match,
    parse_range,
    resolve_range,
)

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
        ("GET", {"Range": "bytes=0-0", "If-Range": 'W/"abc"'}, Decision(200, 0, 999)),
        ("GET", {"Range": "bytes=0-0", "If-Range": "garbage"}, Decision(200, 0, 999)),
        ("GET", {"Range": "bytes=1000-", "If-Range": '"old"'}, Decision(200, 0, 999)),
        ("GET", {"Range": "bytes=1000-", "If-Range": ETAG}, Decision(416)),
        # a 304 wins over a Range
        ("GET", {"Range": "bytes=0-0", "If-None-Match": ETAG}, Decision(304)),
        # §13.2.2 order: If-Match first; If-Unmodified-Since only without it (§13.1.4)
        ("GET", {"If-Match": '"other"', "If-None-Match": ETAG}, Decision(412)),
        ("GET", {"If-Match": ETAG, "If-Unmodified-Since": BEFORE}, Decision(200, 0, 999)),
        ("GET", {"If-Match": "*"}, Decision(200, 0, 999)),
        ("GET", {"If-Match": '"x", "abc"'}, Decision(200, 0, 999)),
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


@pytest.mark.parametrize(
    "if_none_match,expected",
    [
        (None, True),  # no field: nothing to match, send it
        ('"abc"', False),
        ('W/"abc"', False),  # weak comparison (RFC 9110 §8.8.3.2)
        ('"x", "abc"', False),
        (' "x" ,W/"abc" ', False),
        ("*", False),  # any current representation matches
        ('"x", *', False),
        ('"other"', True),
        ('"x", "y"', True),
        ('"ABC"', True),  # opaque tags compare byte for byte
        ("abc", True),  # not an entity-tag: matches nothing
        ("", True),
    ],
)
def test_none_match(if_none_match, expected):
    assert none_match(if_none_match, ETAG) is expected


def test_none_match_on_a_weak_etag():
    assert none_match('"abc"', 'W/"abc"') is False
    assert none_match('W/"abc"', 'W/"abc"') is False
    assert none_match('"abd"', 'W/"abc"') is True


@pytest.mark.parametrize(
    "header,spec",
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=5-", (5, None)),
        ("bytes=-10", (None, 10)),
        ("bytes=-0", (None, 0)),
        (" bytes=3-9 ", (3, 9)),
        ("bytes=7-7", (7, 7)),
        # ignored (RFC 9110 §14.2): the whole body is sent
        ("bytes=9-3", None),  # last < first: invalid range-spec (§14.1.1)
        ("bytes=-", None),
        ("bytes=0-1,5-6", None),  # several ranges
        ("bytes=0-1, 5-", None),
        ("items=0-1", None),
        ("bytes 0-1", None),
        ("bytes=a-1", None),
        ("bytes=1-2-3", None),
        ("", None),
    ],
)
def test_byte_range(header, spec):
    assert byte_range(header) == spec


@pytest.mark.parametrize(
    "spec,size,expected",
    [
        ((0, 0), 1000, (0, 0)),
        ((100, 199), 1000, (100, 199)),
        ((10, 20000), 1000, (10, 999)),  # last clamped to the object
        ((999, None), 1000, (999, 999)),
        ((0, None), 1000, (0, 999)),
        ((None, 10), 1000, (990, 999)),
        ((None, 5000), 1000, (0, 999)),  # a suffix longer than the object: all of it
        ((1000, None), 1000, "unsatisfiable"),  # §14.1.2: first-pos past the end
        ((5000, 6000), 1000, "unsatisfiable"),
        ((None, 0), 1000, "unsatisfiable"),  # a zero-length suffix selects nothing
        ((0, None), 0, "unsatisfiable"),  # nothing of an empty object can be selected
        ((None, 1), 0, "unsatisfiable"),
    ],
)
def test_resolve_range(spec, size, expected):
    assert resolve_range(spec, size) == expected


@pytest.mark.parametrize(
    "value,expected",
    [
        ('"abc"', '"abc"'),
        (' "abc" ', '"abc"'),
        ('W/"abc"', None),  # a weak tag never matches by strong comparison (§13.1.5)
        ('"abc', None),
        ("*", None),
        (AT, MTIME),
        ("garbage", None),
        ("", None),
    ],
)
def test_if_range_validator(value, expected):
    assert if_range_validator(value) == expected
