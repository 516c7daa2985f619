"""Counting the S3 API calls a client makes, through botocore's own event system."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def s3_calls(client: Any) -> Iterator[list[str]]:
    """The names of the S3 operations (``GetObject``, ``HeadObject``, ...) that the
    aiobotocore ``client`` calls inside the block, in order: botocore emits
    ``before-call`` once per API call."""
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call.s3", record)
    try:
        yield calls
    finally:
        client.meta.events.unregister("before-call.s3", record)
