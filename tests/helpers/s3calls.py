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


@contextlib.contextmanager
def delete_errors(client: Any, *, every: int, batches: int) -> Iterator[list[list[str]]]:
    """Per-key errors in S3 DeleteObjects answers, as S3 reports them (HTTP 200, an
    `Errors` entry per failed key): in the first `batches` DeleteObjects calls, every
    `every`-th key is withheld from the request (so it really stays) and reported
    back as `InternalError`. Yields the keys of every call made, in order."""
    calls: list[list[str]] = []

    def withhold(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        keys = [o["Key"] for o in params["Delete"]["Objects"]]
        calls.append(keys)
        if len(calls) > batches:
            return
        withheld = keys[every - 1 :: every]
        kept = [k for k in keys if k not in set(withheld)]
        params["Delete"]["Objects"] = [{"Key": k} for k in kept]
        context["sf_withheld"] = withheld

    def report(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        withheld = context.get("sf_withheld") or []
        parsed.setdefault("Errors", []).extend(
            {"Key": k, "Code": "InternalError", "Message": "We encountered an internal error."}
            for k in withheld
        )

    client.meta.events.register("provide-client-params.s3.DeleteObjects", withhold)
    client.meta.events.register("after-call.s3.DeleteObjects", report)
    try:
        yield calls
    finally:
        client.meta.events.unregister("provide-client-params.s3.DeleteObjects", withhold)
        client.meta.events.unregister("after-call.s3.DeleteObjects", report)
