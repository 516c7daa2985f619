"""origin/ingest/tus.py: the tus 1.0.0 fields and decisions, against expected values."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from origin.ingest import tus
from origin.ingest.tus import TusError

MiB = 1024 * 1024


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("value", "status"), [(None, 412), ("0.2.2", 412), ("1.0", 412), ("1.0.0", None)]
)
def test_version(value, status):
    if status is None:
        tus.check_version(value)
    else:
        with pytest.raises(TusError) as err:
            tus.check_version(value)
        assert err.value.status == status


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        (" 42 ", 42),
        ("9" * 19, int("9" * 19)),
        ("-1", None),
        ("1e3", None),
        ("", None),
        (None, None),
        ("9" * 20, None),
        ("+5", None),
    ],
)
def test_parse_int(value, expected):
    if expected is None:
        with pytest.raises(TusError) as err:
            tus.parse_int("Upload-Offset", value)
        assert err.value.status == 400
    else:
        assert tus.parse_int("Upload-Offset", value) == expected


def test_metadata_round_trip_and_refusals():
    field = f"sceneId {b64('scn_1')},contributor {b64('usr_2')},empty,filename {b64('clip é.mp4')}"
    parsed = tus.parse_metadata(field)
    assert parsed == {
        "sceneId": "scn_1",
        "contributor": "usr_2",
        "empty": "",
        "filename": "clip é.mp4",
    }
    assert tus.parse_metadata(tus.encode_metadata(parsed)) == parsed
    assert tus.parse_metadata(None) == {} and tus.parse_metadata("  ") == {}
    for bad in [
        f"a {b64('x')},a {b64('y')}",  # duplicate key
        "a !!!",  # not base64
        f"a {b64('x')},",  # an empty pair
        "a,b " + base64.b64encode(bytes([255])).decode(),  # not UTF-8
        f"filename {b64('a' + chr(0) + 'b.mp4')}",  # NUL: PostgreSQL text cannot hold it
        "k" * 5000,
    ]:
        with pytest.raises(TusError) as err:
            tus.parse_metadata(bad)
        assert err.value.status == 400, bad


def test_checksum():
    digest = hashlib.sha1(b"abc").digest()
    assert tus.parse_checksum(None) is None
    parsed = tus.parse_checksum(f"sha1 {base64.b64encode(digest).decode()}")
    assert parsed == tus.Checksum("sha1", digest)
    h = parsed.hasher()
    h.update(b"abc")
    assert h.digest() == digest
    for bad in ["crc32 AAAA", "sha1 !!", f"sha256 {base64.b64encode(digest).decode()}", "sha1"]:
        with pytest.raises(TusError) as err:
            tus.parse_checksum(bad)
        assert err.value.status == 400


def test_method_override_only_on_post():
    assert tus.effective_method("POST", "patch") == "PATCH"
    assert tus.effective_method("POST", None) == "POST"
    assert tus.effective_method("GET", "DELETE") == "GET"


def test_fields():
    at = datetime(2026, 12, 1, 16, 0, 5, tzinfo=UTC)
    assert tus.answer_fields(at) == {
        "Tus-Resumable": "1.0.0",
        "Cache-Control": "no-store",
        "Upload-Expires": "Tue, 01 Dec 2026 16:00:05 GMT",
    }
    assert "Upload-Expires" not in tus.answer_fields()
    assert tus.discovery_fields(100) == {
        "Tus-Resumable": "1.0.0",
        "Tus-Version": "1.0.0",
        "Tus-Extension": "creation,creation-with-upload,termination,expiration,checksum",
        "Tus-Max-Size": "100",
        "Tus-Checksum-Algorithm": "sha1,sha256,md5",
    }


@pytest.mark.parametrize(
    ("length", "minimum", "expected"),
    [
        (1, 5 * MiB, 5 * MiB),
        (2 * 1024**3, 5 * MiB, 5 * MiB),  # 410 parts
        (100 * 1024**3, 5 * MiB, 12 * MiB),  # 9,000 parts would be 11.4 MiB each
        (10, 1, MiB),
    ],
)
def test_part_size(length, minimum, expected):
    size = tus.part_size(length, minimum)
    assert size == expected
    assert -(-length // size) <= 9000
