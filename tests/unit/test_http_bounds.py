"""The per-process upload cap and the 408 a late request head gets (origin/http/)."""

from __future__ import annotations

import json

import pytest

from origin.http.body import ShuttingDown, UploadSlots
from origin.http.connection import timeout_answer
from origin.http.errors import ApiError


def test_upload_slots_refuse_past_the_cap_and_when_closed():
    slots = UploadSlots(2)
    with slots.take(), slots.take():
        with pytest.raises(ApiError) as refused:
            with slots.take():
                pass
        assert refused.value.status == 503
        assert refused.value.headers["Retry-After"].isdigit()
        assert slots.taken == 2 and slots.refused == 1
    assert slots.taken == 0
    with slots.take():  # a slot given back is taken again
        assert slots.taken == 1
    slots.closed = True
    with pytest.raises(ShuttingDown) as stopping:
        with slots.take():
            pass
    assert stopping.value.status == 503 and stopping.value.headers["Connection"] == "close"


def test_a_slot_is_given_back_when_the_upload_fails():
    slots = UploadSlots(1)
    with pytest.raises(RuntimeError), slots.take():
        raise RuntimeError("storage down")
    assert slots.taken == 0


def test_timeout_answer_is_a_whole_408_that_closes():
    raw = timeout_answer(2.5)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Connection"] == "close"
    assert int(fields["Content-Length"]) == len(body)
    assert json.loads(body)["error"] == {
        "code": "request_timeout",
        "message": "the request head did not arrive within 2.5 s",
    }
