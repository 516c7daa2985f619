"""moto's CloudFront (server mode, over HTTP) for tests: a distribution to invalidate,
the invalidations it received, and throttling injected into CreateInvalidation."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiobotocore.session import get_session
from botocore.awsrequest import AWSResponse


@contextlib.asynccontextmanager
async def cloudfront(endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "cloudfront",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as client:
        yield client


async def create_distribution(endpoint: str) -> str:
    async with cloudfront(endpoint) as cf:
        made = await cf.create_distribution(
            DistributionConfig={
                "CallerReference": uuid.uuid4().hex,
                "Comment": "storyforge test",
                "Enabled": True,
                "Origins": {
                    "Quantity": 1,
                    "Items": [{"Id": "origin", "DomainName": "origin.example.com"}],
                },
                "DefaultCacheBehavior": {
                    "TargetOriginId": "origin",
                    "ViewerProtocolPolicy": "redirect-to-https",
                },
            }
        )
    return str(made["Distribution"]["Id"])


async def invalidated_paths(endpoint: str, distribution_id: str) -> list[list[str]]:
    """The paths of every invalidation the distribution received (sorted in each)."""
    found = []
    async with cloudfront(endpoint) as cf:
        listed = await cf.list_invalidations(DistributionId=distribution_id)
        for item in listed["InvalidationList"].get("Items") or []:
            one = await cf.get_invalidation(DistributionId=distribution_id, Id=item["Id"])
            found.append(sorted(one["Invalidation"]["InvalidationBatch"]["Paths"]["Items"]))
    return found


@contextlib.contextmanager
def throttled(client: Any, times: int) -> Iterator[list[str]]:
    """The first `times` CreateInvalidation calls of `client` are answered as
    CloudFront answers a throttled one (HTTP 400, code Throttling) without reaching
    the server. Yields the caller references of every call, in order."""
    calls: list[str] = []

    def answer(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        calls.append(params["body"].decode() if isinstance(params["body"], bytes) else "")
        if len(calls) > times:
            return None
        response = AWSResponse("https://cloudfront.test/", 400, {}, None)
        return response, {
            "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }

    client.meta.events.register("before-call.cloudfront.CreateInvalidation", answer)
    try:
        yield calls
    finally:
        client.meta.events.unregister("before-call.cloudfront.CreateInvalidation", answer)
