"""Playback survives its dependencies going away (issue 14, Build 1). Postgres (a private
cluster, so the shared one keeps serving other tests) is stopped under a request loop:
first hung (SIGSTOP: answers wait at most the revalidation bound), then stopped:
warm stitched playlists, storyboard, chapters, per-segment playlists, `.ts` (also of a
clip only ever listed in a served playlist) and the scene JSON keep answering 200 with
the same bytes from the read caches; routes that need the database
answer 503 with `Retry-After`; nothing answers 500; the outage is logged once, shown in
/metrics and /readyz, and ends without a restart (a deletion then takes effect within a
second). moto's S3 (a private server) stopped: file routes answer 503, an upload fails
readably and publishes nothing, playlists still answer from memory; something answering
errors on S3's port instead: 502.

Each outage is shared by two origins at once, the fast path on and off (the two paths
of tests/conftest.py BOTH_PATHS), so each dependency is stopped only once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from origin.app import create_app
from origin.playback.documents import REVALIDATE_SECONDS
from tests.helpers.metrics import requests, scrape
from tests.helpers.scenes import AUTH, TS_BYTES, publish, scene_with_users
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import child_pids, free_port, migrated_cluster, on_moto, wait_port

OUTAGE_SECONDS = 4.0  # several times the caches' 1 s TTL and the 1 s probe interval
SCENE_FILES = ("master.m3u8", "720p.m3u8", "1080p.m3u8", "storyboard.vtt", "chapters.vtt")
SEGMENT_FILES = ("master.m3u8", "720p.m3u8", "720p_0001.ts", "1080p_0002.ts", "storyboard.vtt")


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[Any]:
    """A PostgreSQL cluster of this module's own: stopping it disturbs no other test."""
    with migrated_cluster("storyforge-outage-") as cluster:
        yield cluster


def _postgres_pids(cluster: Any) -> list[int]:
    """The cluster's postmaster and its children (read from /proc)."""
    master = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    return [master, *child_pids(master)]


@asynccontextmanager
async def two_origins(settings: Any) -> AsyncIterator[list[TestClient]]:
    """Origins on `settings`, the fast path on and off, each with its own client."""
    async with AsyncExitStack() as stack:
        clients = []
        for fast in (True, False):
            app = create_app(dataclasses.replace(settings, fast_path=fast))
            client = await stack.enter_async_context(TestClient(OriginTestServer(app)))
            client.headers_auth = {"Authorization": AUTH}
            clients.append(client)
        yield clients


async def _get(client: TestClient, path: str, method: str = "GET", **kw: Any) -> tuple[int, Any]:
    r = await client.request(method, path, **kw)
    return r.status, (r.headers, await r.read())


def _urls(scene: str, segments: list[str]) -> list[str]:
    """Scene documents, the segments' own files and the scene JSON."""
    return [
        *(f"/v/{scene}/{name}" for name in SCENE_FILES),
        *(f"/v/{scene}/{seg}/{name}" for seg in segments for name in SEGMENT_FILES),
        f"/api/v1/scenes/{scene}/playlist",
    ]


def _is_503(status: int, answer: Any, code: str) -> bool:
    headers, body = answer
    return (
        status == 503
        and headers.get("Retry-After", "").isdigit()
        and headers.get("Content-Type", "").startswith("application/json")
        and f'"code": "{code}"'.encode() in body.replace(b'":"', b'": "')
    )


async def test_postgres_outage_playback_continues(settings, private_cluster, caplog):
    caplog.set_level(logging.WARNING)
    settings = dataclasses.replace(settings, database_url=private_cluster.dsn)
    async with two_origins(settings) as clients:
        api = clients[0]
        scene, (user,) = await scene_with_users(api)
        segments = [await publish(settings, scene, user, i + 1, [4.0, 2.5]) for i in range(3)]
        cold, _ = await scene_with_users(api)  # a scene no origin has served yet
        await publish(settings, cold, user, 1, [4.0])
        urls = _urls(scene, segments[:2])
        # a clip whose own files were never asked for: the stitched playlists list it
        listed = f"/v/{scene}/{segments[2]}/720p_0002.ts"
        before = {listed: TS_BYTES}
        for client in clients:
            for url in urls:
                status, (_, body) = await _get(client, url)
                assert status == 200, url
                before[url] = body

        # hung, not stopped (every server process SIGSTOPped): an answer the caches
        # have waits REVALIDATE_SECONDS at most, not asyncpg's minute
        await asyncio.sleep(1.1)  # versions and readiness expired: each is re-read
        pids = _postgres_pids(private_cluster)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            hung = time.monotonic()
            answers = await asyncio.gather(
                *(_get(c, u) for c in clients for u in (urls[0], urls[-1], listed))
            )
            waited = time.monotonic() - hung
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert [status for status, _ in answers] == [200] * len(answers)
        assert waited < REVALIDATE_SECONDS + 1.5, waited

        route = "/v/{scene_id}/{name}"
        fast_before = requests(await scrape(clients[0]), route, 200, "fast_path")
        asked = 0
        private_cluster.stop()  # pg_ctl -m fast: every connection is closed
        statuses: Counter[tuple[str, int]] = Counter()
        started = time.monotonic()
        while time.monotonic() - started < OUTAGE_SECONDS:
            for client in clients:
                for url in [*urls, listed]:
                    for method in ("GET", "HEAD"):
                        status, (_, body) = await _get(client, url, method)
                        statuses["warm", status] += 1
                        asked += client is clients[0] and url.count("/") == 3  # a scene document
                        assert status == 200, (url, method, status, body[:200])
                        assert method == "HEAD" or body == before[url], url
                db_only = [
                    ("GET", f"/v/{cold}/master.m3u8", {}),
                    ("GET", f"/api/v1/segments/{segments[0]}", {}),
                    ("GET", f"/api/v1/scenes/{cold}/playlist", {}),
                    ("POST", "/api/v1/scenes", {"json": {"title": "x"}}),
                    ("DELETE", f"/api/v1/segments/{segments[1]}", {}),
                    (
                        "POST",
                        f"/api/v1/scenes/{scene}/segments?contributor={user}",
                        {"data": b"\x00" * 4096},
                    ),
                ]
                for method, url, kw in db_only:
                    status, answer = await _get(client, url, method, headers=api.headers_auth, **kw)
                    statuses["db-only", status] += 1
                    assert _is_503(status, answer, "database_unavailable"), (url, status, answer)
            await asyncio.sleep(0.05)
        for client in clients:
            status, (_, body) = await _get(client, "/readyz")
            assert status == 503 and b"database" in body and b"storage" not in body, body
            samples = await scrape(client)
            assert samples[("storyforge_database_reachable", ())] == 0
            assert samples[("storyforge_read_cache_stale_answers_total", ())] > 0
        # the fast path kept answering warm scene documents (a probe now and then
        # goes to the app): at least half of those the fast origin was asked for
        fast = requests(await scrape(clients[0]), route, 200, "fast_path") - fast_before
        assert fast >= asked / 2, (fast, asked)
        outage_logs = [r for r in caplog.records if r.getMessage().startswith("database unr")]
        assert len(outage_logs) == len(clients), [r.getMessage() for r in outage_logs]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

        private_cluster.start(fast=True)
        deadline = time.monotonic() + 15
        while True:  # recovery without restart: the next probe reconnects
            answers = [await _get(c, f"/api/v1/segments/{segments[0]}") for c in clients]
            if all(status == 200 for status, _ in answers):
                break
            assert time.monotonic() < deadline, answers
            await asyncio.sleep(0.2)
        for client in clients:
            assert (await _get(client, f"/v/{cold}/master.m3u8"))[0] == 200
            assert (await _get(client, "/readyz"))[0] == 200
            samples = await scrape(client)
            assert samples[("storyforge_database_reachable", ())] == 1
        ended = [r for r in caplog.records if r.getMessage().startswith("database reachable")]
        assert len(ended) == len(clients)

        # a deletion committed after the outage takes effect within a second
        status, _ = await _get(api, f"/api/v1/scenes/{scene}", "DELETE", headers=api.headers_auth)
        assert status in (200, 202, 204)
        deleted = time.monotonic()
        for client in clients:
            while (await _get(client, f"/v/{scene}/master.m3u8"))[0] != 404:
                assert time.monotonic() - deleted < 1.0
                await asyncio.sleep(0.02)
    # no answer at all was a 5xx other than the 503s counted above
    assert set(statuses) == {("warm", 200), ("db-only", 503)}, statuses


@asynccontextmanager
async def garbage_server(port: int) -> AsyncIterator[None]:
    """An HTTP server on `port` answering every request 500 with a body that is not XML."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=500, text="<<< not S3 >>>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


@pytest.fixture
def private_moto() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """moto's S3 server of this test's own (so it can be stopped), on a fixed port."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
            )
        )
        wait_port(port)

    start()
    try:
        yield port, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


async def test_storage_outage_file_routes_503(settings, private_moto, tmp_path, caplog):
    port, procs = private_moto
    settings = on_moto(settings, f"http://127.0.0.1:{port}")
    async with two_origins(settings) as clients:
        api = clients[0]
        scene, (user,) = await scene_with_users(api)
        segment = await publish(settings, scene, user, 1, [4.0, 2.5])
        urls = _urls(scene, [segment])
        for client in clients:
            for url in urls:
                assert (await _get(client, url))[0] == 200, url

        procs[0].terminate()
        procs[0].wait(10)
        media = [u for u in urls if u.endswith(".ts")]
        # each refused read takes botocore's retries (seconds): all at once
        checks = [(client, url) for client in clients for url in [*urls, "/readyz"]]
        upload = _get(
            api,
            f"/api/v1/scenes/{scene}/segments",
            "POST",
            params={"contributor": user},
            data=b"\x00" * 4096,
            headers={**api.headers_auth, "Content-Type": "video/mp4"},
        )
        *answers, uploaded = await asyncio.gather(*(_get(c, u) for c, u in checks), upload)
        for (_, url), (status, answer) in zip(checks, answers, strict=True):
            if url in media:
                assert _is_503(status, answer, "storage_unavailable"), (url, status, answer)
            elif url == "/readyz":
                body = answer[1]
                assert status == 503 and b"storage" in body and b"database" not in body, body
            else:  # built from rows, kept in memory
                assert status == 200, (url, status)
        assert _is_503(*uploaded, "storage_unavailable"), uploaded
        # nothing half-published: the scene still has its one clip and no other row
        status, (_, body) = await _get(api, f"/api/v1/scenes/{scene}/playlist")
        assert status == 200 and body.count(b'"sequence"') == 1, body
        conn = await asyncpg.connect(settings.database_url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM segments WHERE scene_id = $1", scene)
        finally:
            await conn.close()
        assert rows == 1

        # something else answers on S3's port, with errors: 502, still no 500
        async with garbage_server(port):
            answers = await asyncio.gather(*(_get(c, media[0]) for c in clients))
        for status, answer in answers:
            assert status == 502 and answer[0].get("Retry-After", "").isdigit(), (status, answer)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
