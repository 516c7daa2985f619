"""Session fixtures for real services: a throwaway PostgreSQL cluster and moto's S3 server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.scenes import API_TOKEN
from tests.helpers.services import free_port, migrated_cluster, wait_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """A throwaway PostgreSQL cluster for the whole run (fsync off), migrated once."""
    with migrated_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster) -> str:
    """DSN of the migrated test database."""
    return pg_cluster.dsn


@contextlib.contextmanager
def _database(pg_cluster, *, migrated: bool) -> Iterator[str]:
    """A database of its own on the test cluster (its DSN), dropped afterwards."""
    import asyncio
    import uuid

    import asyncpg

    from core import db

    name = "t_" + uuid.uuid4().hex[:12]
    admin = pg_cluster.dsn.rsplit("/", 1)[0] + "/postgres"
    dsn = pg_cluster.dsn.rsplit("/", 1)[0] + "/" + name

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    try:
        if migrated:
            asyncio.run(db.migrate_dsn(dsn))
        yield dsn
    finally:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def fresh_db(pg_cluster) -> Iterator[str]:
    """An empty, unmigrated database of its own for a test; dropped afterwards."""
    with _database(pg_cluster, migrated=False) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def module_db(pg_cluster) -> Iterator[str]:
    """A migrated database of the test module's own, for a module whose workers must
    claim its jobs only; dropped afterwards."""
    with _database(pg_cluster, migrated=True) as dsn:
        yield dsn


@pytest.fixture
async def fresh_pool(fresh_db):
    """A pool on a migrated database of the test's own (`fresh_db`): no other test's
    jobs can be claimed by the test's or the other way round."""
    import asyncpg

    from core import db

    conn = await asyncpg.connect(fresh_db)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    pool = await db.connect_pool(fresh_db, size=12)
    try:
        yield pool
    finally:
        await pool.close()


# Modules whose tests talk HTTP to an origin: each of their tests that uses the
# `settings` fixture runs twice, with the fast path on and off (FAST_PATH).
BOTH_PATHS = {
    "test_app",
    "test_browser",
    "test_ingest",
    "test_lifecycle",
    "test_metrics",
    "test_playback",
    "test_signed",
    "test_assets",
    "test_chapters",
    "test_bounds",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "fast_path" in metafunc.fixturenames and module in BOTH_PATHS:
        metafunc.parametrize("fast_path", [True, False], ids=["fast-path", "plain"], indirect=True)


@pytest.fixture
def fast_path(request) -> bool:
    """FAST_PATH of the origin under test: on, unless parametrised (BOTH_PATHS)."""
    return getattr(request, "param", True)


@pytest.fixture
def settings(pg_dsn, tmp_path, fast_path):
    """Settings for an origin + workers on the test database and LocalStorage."""
    from core.settings import Settings

    return Settings.from_env(
        {},
        database_url=pg_dsn,
        storage_root=tmp_path / "storage",
        api_tokens=(API_TOKEN,),
        log_format="text",
        job_lease_seconds=10.0,
        timeline_interval=2.0,
        fast_path=fast_path,
        cdn_invalidation_window=0.5,
        webhook_allow_private=True,
        # one stage: a refinement re-encodes every clip at `medium`; the tests of
        # issue 17 (test_refine) turn it on
        refine=False,
    )


@pytest.fixture
async def origin_client(settings):
    """The origin app on a real loopback port, with a client."""
    from aiohttp.test_utils import TestClient

    from origin.app import create_app
    from tests.helpers.servers import OriginTestServer

    async with TestClient(OriginTestServer(create_app(settings))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        yield client


@pytest.fixture
async def pool(settings):
    """A connection pool on the test database (modules may define their own)."""
    from core import db

    p = await db.connect_pool(settings.database_url, size=4)
    yield p
    await p.close()


@pytest.fixture
async def run_workers(settings):
    """Start in-process workers (the real job loop and handlers) on demand; they are
    stopped at teardown."""
    import asyncio

    from core import db
    from core.cdn import open_invalidations
    from core.storage import open_configured_storage
    from workers.runtime.loop import run_worker
    from workers.runtime.main import handlers

    started: list[tuple[asyncio.Task, asyncio.Event]] = []
    pool = await db.connect_pool(settings.database_url, size=6)
    storage = await open_configured_storage(settings)
    invalidations = await open_invalidations(settings, pool)

    def start(concurrency: int = 1, lease_seconds: float = 10.0) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_worker(
                pool,
                handlers(settings, storage, invalidations),
                concurrency=concurrency,
                lease_seconds=lease_seconds,
                poll_interval=0.2,
                grace_seconds=5,
                stop=stop,
                name=f"test-worker-{len(started)}",
            )
        )
        started.append((task, stop))

    yield start
    for _task, stop in started:
        stop.set()
    for task, _ in started:
        await asyncio.wait_for(task, 30)
    await invalidations.aclose()
    await storage.aclose()
    await pool.close()
