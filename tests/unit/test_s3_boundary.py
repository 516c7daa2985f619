"""Which of a GET's conditions go to S3 in the GetObject (RFC 9110 §13.2.2, §14.2):
only what S3 evaluates as RFC 9110 does; the rest is decided on the object it returns."""

from datetime import UTC, datetime

import pytest

from core.storage.s3_boundary import get_object_args

ETAG = '"abc"'
AT = "Sat, 31 Jan 2026 10:00:00 GMT"
DATE = datetime(2026, 1, 31, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "conditions,expected",
    [
        ({}, {}),
        ({"If-Match": ETAG}, {"IfMatch": ETAG}),
        ({"If-Match": "*"}, {}),  # holds for any object that exists
        ({"If-Unmodified-Since": AT}, {"IfUnmodifiedSince": DATE}),
        ({"If-Unmodified-Since": "garbage"}, {}),  # §13.1.4: an invalid date is ignored
        ({"If-Match": ETAG, "If-Unmodified-Since": AT}, {"IfMatch": ETAG}),  # §13.1.4
        ({"If-None-Match": ETAG}, {"IfNoneMatch": ETAG}),
        ({"If-None-Match": 'W/"abc"'}, {"IfNoneMatch": ETAG}),  # weak comparison
        ({"If-None-Match": '"x", "abc"'}, {}),  # a list: decided on the object
        ({"If-None-Match": "*"}, {}),
        ({"If-None-Match": "abc"}, {}),  # not an entity-tag
        ({"If-Modified-Since": AT}, {"IfModifiedSince": DATE}),
        ({"If-None-Match": '"x"', "If-Modified-Since": AT}, {"IfNoneMatch": '"x"'}),  # §13.1.3
        ({"If-None-Match": '"x", "y"', "If-Modified-Since": AT}, {}),
        # an If-Match S3 cannot evaluate holds back steps 3-4 (412 must win over 304)
        ({"If-Match": '"x", "y"', "If-None-Match": ETAG}, {}),
        ({"If-Match": 'W/"abc"', "If-Modified-Since": AT}, {}),
        ({"If-Match": "*", "If-None-Match": ETAG}, {"IfNoneMatch": ETAG}),
        ({"Range": "bytes=0-99"}, {"Range": "bytes=0-99"}),
        ({"Range": " bytes=5- "}, {"Range": "bytes=5-"}),
        ({"Range": "bytes=-10"}, {"Range": "bytes=-10"}),
        ({"Range": "bytes=-0"}, {"Range": "bytes=-0"}),  # S3 answers 416, as decide does
        ({"Range": "bytes=0-1,5-6"}, {}),  # §14.2: the whole body
        ({"Range": "bytes=9-3"}, {}),
        ({"Range": "items=0-1"}, {}),
        ({"Range": "bytes=0-0", "If-Range": ETAG}, {"Range": "bytes=0-0"}),  # checked after
        ({"Range": "bytes=0-0", "If-Range": AT}, {"Range": "bytes=0-0"}),
        ({"Range": "bytes=0-0", "If-Range": 'W/"abc"'}, {}),  # §13.1.5: never matches
        ({"Range": "bytes=0-0", "If-Range": "garbage"}, {}),
        (
            {"If-None-Match": ETAG, "Range": "bytes=0-0"},
            {"IfNoneMatch": ETAG, "Range": "bytes=0-0"},
        ),
    ],
)
def test_get_object_args(conditions, expected):
    assert get_object_args(conditions) == expected


def test_without_range():
    conditions = {"If-None-Match": ETAG, "Range": "bytes=0-0", "If-Range": ETAG}
    assert get_object_args(conditions, ranged=False) == {"IfNoneMatch": ETAG}
