"""core/storage/s3_boundary.py `s3_errors`: how a failed S3 call reaches the read path:
unreachable -> StorageError (503), a server error or an unreadable answer -> BadGateway
(502), S3's own 503 SlowDown -> StorageError (503: try again), missing -> ObjectNotFound."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.parsers import ResponseParserError

from core.storage import BadGateway, ObjectNotFound, StorageError
from core.storage.s3_boundary import s3_errors


def _client_error(status: int, code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StorageError),
        (_client_error(500, "InternalError"), BadGateway),
        (_client_error(502, "BadGateway"), BadGateway),
        (ResponseParserError("unable to parse"), BadGateway),
        (_client_error(503, "SlowDown"), StorageError),
        (_client_error(403, "AccessDenied"), StorageError),
        (_client_error(404, "NoSuchKey"), ObjectNotFound),
    ],
)
def test_s3_failures(raised, expected):
    with pytest.raises(StorageError) as info, s3_errors("GetObject", "videos", "k"):
        raise raised
    assert type(info.value) is expected
