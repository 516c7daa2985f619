"""The webhook outbox: events (`segment.ready`, `segment.failed`, `export.ready`,
`export.failed`, `scene.deleted`, `captions.updated`) written by `emit` in the same transaction as the
change they report, so there is no event without its change and no change without its
event; one delivery per event and configured endpoint, each carried by a `webhook`
job (workers/jobs/webhook.py), queries in `sql/outbox.sql`.

Order: one scene's events reach one endpoint in the order their transactions
committed. `emit` numbers a scene's events under a row lock held until commit; a
delivery whose predecessor (same scene, same endpoint) is unfinished waits without a
job, and finishing a delivery (delivered or dead) queues the next waiting one, under
the same lock, so no event is left waiting and none overtakes another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core import db, layout, queue

EVENT_TYPES = (
    "segment.ready",
    "segment.failed",
    "export.ready",
    "export.failed",
    "scene.deleted",
    "captions.updated",
)
MAX_ATTEMPTS = 1000
"""A webhook job's bound on attempts; WEBHOOK_RETRY_SECONDS decides when it gives up."""


@dataclass(frozen=True)
class Delivery:
    """One event on its way to one endpoint, as its webhook job sees it."""

    event_id: str
    endpoint: str
    scene_id: str
    seq: int
    status: str  # waiting | queued | delivered | dead
    type: str
    payload: str  # the JSON body as sent: {"type", "timestamp", "data"}
    created_at: datetime


def event_body(event_type: str, created_at: datetime, data: Mapping[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks payload: `type`, `timestamp` (RFC 3339), `data`."""
    stamp = created_at.isoformat().replace("+00:00", "Z")
    return {"type": event_type, "timestamp": stamp, "data": dict(data)}


async def emit(
    conn: asyncpg.Connection,
    endpoints: Sequence[str],
    event_type: str,
    *,
    scene_id: str,
    data: Mapping[str, Any],
) -> str:
    """Write an event about `scene_id` in the caller's transaction (which must be the
    one that makes the change), with a delivery to each of `endpoints`
    (`settings.webhook_urls`). Returns the event id, which is also the `webhook-id`
    receivers deduplicate by. Call it last in the transaction: the scene's event
    counter stays locked until commit."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    if not conn.is_in_transaction():
        raise RuntimeError("emit must run inside the transaction that makes the change")
    seq: int = await conn.fetchval(db.q("outbox_next_seq"), scene_id)
    event_id = layout.new_id("evt")
    now: datetime = await conn.fetchval("SELECT now()")
    body = json.dumps(event_body(event_type, now, data), separators=(",", ":"), sort_keys=True)
    await conn.execute(db.q("outbox_insert_event"), event_id, event_type, scene_id, seq, body)
    for endpoint in dict.fromkeys(endpoints):
        if await conn.fetchval(db.q("outbox_unfinished_before"), scene_id, endpoint, seq):
            await conn.execute(
                db.q("outbox_insert_delivery"), event_id, endpoint, scene_id, seq, "waiting", None
            )
            continue
        job = await _enqueue(conn, event_id, endpoint, scene_id)
        await conn.execute(
            db.q("outbox_insert_delivery"), event_id, endpoint, scene_id, seq, "queued", job
        )
    return event_id


async def _enqueue(conn: asyncpg.Connection, event_id: str, endpoint: str, scene_id: str) -> str:
    job = await queue.enqueue(
        conn,
        "webhook",
        {"event_id": event_id, "endpoint": endpoint},
        dedupe_key=f"webhook:{event_id}:{endpoint}",
        scene_id=scene_id,
        max_attempts=MAX_ATTEMPTS,
    )
    return job.id


async def delivery_for_job(conn: queue.Conn, job_id: str) -> Delivery | None:
    row = await conn.fetchrow(db.q("outbox_delivery_for_job"), job_id)
    if row is None:
        return None
    return Delivery(
        row["event_id"],
        row["endpoint"],
        row["scene_id"],
        row["seq"],
        row["status"],
        row["type"],
        _canonical(row["payload"]),
        row["created_at"],
    )


def _canonical(payload: str) -> str:
    # jsonb gives the stored object back in its own key order and spacing: send the
    # same compact, sorted text on every attempt
    return json.dumps(json.loads(payload), separators=(",", ":"), sort_keys=True)


async def finish_delivery(conn: asyncpg.Connection, delivery: Delivery, *, delivered: bool) -> bool:
    """In the caller's transaction (fenced by the delivery's job lease): the delivery
    is `delivered` or `dead`, and the next waiting delivery of the same scene to the
    same endpoint gets its job. False when it was already finished."""
    if not conn.is_in_transaction():
        raise RuntimeError("finish_delivery must run inside the transaction holding the fence")
    await conn.execute(db.q("outbox_lock_scene"), delivery.scene_id)
    status = "delivered" if delivered else "dead"
    done = await conn.fetchval(
        db.q("outbox_finish_delivery"), delivery.event_id, delivery.endpoint, status
    )
    if done is None:
        return False
    following = await conn.fetchval(
        db.q("outbox_next_waiting"), delivery.scene_id, delivery.endpoint
    )
    if following is not None:
        job = await _enqueue(conn, following, delivery.endpoint, delivery.scene_id)
        await conn.execute(db.q("outbox_queue_delivery"), following, delivery.endpoint, job)
    return True


async def delivery_counts(conn: queue.Conn) -> dict[str, int]:
    """status -> deliveries, for /metrics."""
    return {r["status"]: r["n"] for r in await conn.fetch(db.q("outbox_delivery_counts"))}


async def oldest_pending(conn: queue.Conn) -> float:
    """Seconds the oldest undelivered event (a delivery waiting or queued) has waited,
    0 when none, for /metrics."""
    return max(0.0, float(await conn.fetchval(db.q("outbox_oldest_pending"))))
