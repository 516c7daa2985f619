"""Webhooks end to end: a receiver on loopback verifies every delivery with
`standardwebhooks`; an event and the change it reports commit or roll back together
(the worker is killed between them); deliveries survive failing attempts, arrive in
order per scene, go dead after their retry window with their attempts kept, and a
loopback endpoint is refused without a connection when private addresses are not
allowed. Only loopback is ever contacted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core import db, layout, outbox
from origin.app import create_app
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, make_clip
from tests.helpers.polling import until
from tests.helpers.scenes import API_TOKEN, new_scene, upload
from tests.helpers.servers import OriginTestServer
from tests.helpers.webhooks import SECRET, Receiver
from tests.helpers.workers import running_workers

ROOT = Path(__file__).resolve().parents[2]


def hooked(settings, *urls: str, **changes):
    return dataclasses.replace(
        settings,
        webhook_urls=urls,
        webhook_secret=SECRET,
        webhook_allow_private=True,
        webhook_backoff_base=0.2,
        **changes,
    )


async def emit(dsn: str, urls, event_type: str, scene_id: str, data: dict) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            return await outbox.emit(conn, urls, event_type, scene_id=scene_id, data=data)
    finally:
        await conn.close()


async def webhook_job(dsn: str, event_id: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(
            "SELECT j.status, j.attempts, j.errors::text AS errors, j.last_error FROM jobs j "
            "JOIN webhook_deliveries d ON d.job_id = j.id WHERE d.event_id = $1",
            event_id,
        )
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)
async def test_event_commits_with_its_change_and_arrives_through_failures(settings, tmp_path):
    receiver = Receiver(answer=lambda _id, n: 500 if n <= 2 else 200)
    async with TestServer(receiver.app(), host="127.0.0.1") as hook:
        s = hooked(settings, f"http://127.0.0.1:{hook.port}/hook", job_lease_seconds=3.0)
        async with TestClient(OriginTestServer(create_app(s))) as client:
            client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
            scene, (user,) = await new_scene(client)
            clip = make_clip(tmp_path / "a.mp4", width=320, height=180, duration=2)
            segment = (await upload(client, scene, user, clip))["segmentId"]

        # Hold inserts into the outbox, so the worker's publishing transaction stops
        # right between the segment's change and its event; then kill the worker.
        hold = await asyncpg.connect(s.database_url)
        watch = await asyncpg.connect(s.database_url)
        held = hold.transaction()
        await held.start()
        await hold.execute("LOCK TABLE webhook_events IN SHARE MODE")
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": s.database_url,
            "STORAGE": "local",
            "STORAGE_ROOT": str(s.storage_root),
            "JOB_LEASE_SECONDS": "3",
            "TIMELINE_INTERVAL": "2",
            "WEBHOOK_URLS": s.webhook_urls[0],
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "LOG_FORMAT": "text",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "storyforge.cli", "worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO webhook_events%'"
            await until(lambda: watch.fetchval(waiting), timeout=120)
            status = "SELECT status FROM segments WHERE id = $1"
            # the segment is ready inside the worker's transaction, invisible outside it
            assert await watch.fetchval(status, segment) == "processing"
            ready = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.relation = 'segments'::regclass AND l.mode = 'RowExclusiveLock' AND a.query LIKE 'INSERT INTO webhook_events%'"
            assert await watch.fetchval(ready) == 1  # it has updated `segments`
        finally:
            worker.kill()
            worker.wait(10)
        await held.rollback()
        await hold.close()
        await until(lambda: _no_backend_in(watch, "INSERT INTO webhook_events%"), timeout=30)
        # rolled back together: no ready segment, no event
        assert await watch.fetchval(status, segment) == "processing"
        events = "SELECT count(*) FROM webhook_events WHERE scene_id = $1"
        assert await watch.fetchval(events, scene) == 0

        # another worker takes the job over once its lease expires; the event arrives
        # through two failing attempts, verified every time, processed once
        async with running_workers(s, concurrency=2, lease_seconds=3.0):
            await until(lambda: _processed(receiver), timeout=180)
        assert await watch.fetchval(status, segment) == "ready"
        assert await watch.fetchval(events, scene) == 1
        await watch.close()
    ((event_id, payload),) = receiver.processed.items()
    assert payload["type"] == "segment.ready"
    assert payload["data"]["segmentId"] == segment and payload["data"]["sceneId"] == scene
    tries = [a for a in receiver.attempts if a.id == event_id]
    assert [a.status for a in tries] == [500, 500, 200] and all(a.verified for a in tries)
    job = await webhook_job(s.database_url, event_id)
    assert job["status"] == "succeeded" and job["attempts"] == 3
    assert [e["error"] for e in json.loads(job["errors"])] == ["the endpoint answered 500"] * 2


async def _no_backend_in(conn, pattern: str) -> bool:
    n = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state <> 'idle'", pattern
    )
    return n == 0


async def _processed(receiver: Receiver) -> bool:
    return bool(receiver.processed)


async def test_one_scene_in_order_and_dead_after_its_window(settings):
    """The first event of a scene always fails: it is retried until its window ends,
    then dead with every attempt kept, and only then does the scene's next event go
    out; another scene's event is not held up. /metrics shows the dead job."""
    first_id: list[str] = []
    receiver = Receiver(answer=lambda event_id, n: 500 if event_id in first_id else 200)
    async with TestServer(receiver.app(), host="127.0.0.1") as hook:
        s = hooked(settings, f"http://127.0.0.1:{hook.port}/hook", webhook_retry_seconds=1.5)
        scene, other = layout.new_id("scn"), layout.new_id("scn")
        first_id.append(
            await emit(s.database_url, s.webhook_urls, "scene.deleted", scene, {"n": 1})
        )
        second = await emit(s.database_url, s.webhook_urls, "export.ready", scene, {"n": 2})
        elsewhere = await emit(s.database_url, s.webhook_urls, "export.failed", other, {"n": 3})
        async with running_workers(s, concurrency=2):
            await until(lambda: _has(receiver, second), timeout=60)
    first = first_id[0]
    order = [a.id for a in receiver.attempts]
    assert order.index(second) > max(i for i, e in enumerate(order) if e == first)
    assert elsewhere in receiver.processed and first not in receiver.processed
    assert receiver.processed[second]["data"] == {"n": 2}
    dead = await webhook_job(s.database_url, first)
    errors = json.loads(dead["errors"])
    assert dead["status"] == "dead" and len(errors) == dead["attempts"] >= 2
    assert "gave up after" in dead["last_error"]
    async with TestClient(OriginTestServer(create_app(s))) as client:
        text = await (await client.get("/metrics")).text()
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('storyforge_jobs{kind="webhook",status="dead"}')
    )
    assert float(line.split()[-1]) >= 1
    line = next(
        x for x in text.splitlines() if x.startswith('storyforge_webhook_deliveries{status="dead"}')
    )
    assert float(line.split()[-1]) >= 1


async def _has(receiver: Receiver, event_id: str) -> bool:
    return event_id in receiver.processed


async def test_private_endpoints_are_refused_without_a_connection(settings):
    connections = 0

    async def accept(reader, writer) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        urls = (f"http://127.0.0.1:{port}/hook", f"http://localhost:{port}/hook")
        s = dataclasses.replace(hooked(settings, *urls), webhook_allow_private=False)
        event = await emit(s.database_url, urls, "segment.failed", layout.new_id("scn"), {})
        conn = await asyncpg.connect(s.database_url)
        try:
            query = "SELECT d.endpoint, d.status, j.status AS job, j.last_error FROM webhook_deliveries d JOIN jobs j ON j.id = d.job_id WHERE d.event_id = $1 ORDER BY d.endpoint"
            async with running_workers(s):
                rows = await until(lambda: _all_dead(conn, query, event), timeout=60)
        finally:
            await conn.close()
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 0
    assert [r["job"] for r in rows] == ["dead", "dead"]
    assert rows[0]["last_error"] == (
        "refused 127.0.0.1: 127.0.0.1 is a loopback address (WEBHOOK_ALLOW_PRIVATE=false)"
    )
    assert rows[1]["last_error"].startswith("refused localhost: ")
    assert "loopback address (WEBHOOK_ALLOW_PRIVATE=false)" in rows[1]["last_error"]


async def _all_dead(conn, query: str, event: str):
    rows = await conn.fetch(query, event)
    return rows if rows and all(r["status"] == "dead" for r in rows) else None


async def test_emit_needs_the_changing_transaction_and_a_known_type(pg_dsn):
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await outbox.emit(conn, (), "segment.ready", scene_id=layout.new_id("scn"), data={})
        async with conn.transaction():
            with pytest.raises(ValueError):
                await outbox.emit(conn, (), "segment.exploded", scene_id="scn_x", data={})
        # without endpoints the event is still recorded, with no delivery
        scene = layout.new_id("scn")
        async with conn.transaction():
            event = await outbox.emit(conn, (), "scene.deleted", scene_id=scene, data={"a": 1})
        rows = await conn.fetch(db.q("outbox_scene_events"), scene)
        assert [(r["id"], r["type"], r["seq"]) for r in rows] == [(event, "scene.deleted", 1)]
        body = json.loads(rows[0]["payload"])
        assert body["type"] == "scene.deleted" and body["data"] == {"a": 1}
        assert body["timestamp"].endswith("Z")
    finally:
        await conn.close()
