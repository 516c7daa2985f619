"""Session fixtures for real services (a throwaway PostgreSQL cluster with a migrated
template database, moto's S3 server), clips made once per session, the settings of an
origin and its workers under test, in-process workers, and which tests run with the
fast path both on and off (the `both_paths` marker)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.clips import SMALL_LADDER, ClipCache
from tests.helpers.scenes import API_TOKEN
from tests.helpers.services import free_port, migrated_cluster, wait_port

ROOT = Path(__file__).resolve().parent.parent

# The migrated database every `migrated_db`/`module_db`/`fresh_pool` is a copy of
# (CREATE DATABASE ... TEMPLATE): the migrations run once per session, not per test.
TEMPLATE_DB = "storyforge_migrated"


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


def _admin(pg_cluster, sql: str) -> None:
    """One statement on the cluster's `postgres` database (CREATE/DROP DATABASE)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(pg_cluster.dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """A throwaway PostgreSQL cluster for the whole run (fsync off), migrated once;
    its migrated database is copied as TEMPLATE_DB before any test connects to it."""
    with migrated_cluster() as cluster:
        _admin(cluster, f"CREATE DATABASE {TEMPLATE_DB} TEMPLATE storyforge")
        yield cluster


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster) -> str:
    """DSN of the migrated test database (shared by the tests of the session)."""
    return pg_cluster.dsn


@contextlib.contextmanager
def _database(pg_cluster, *, migrated: bool) -> Iterator[str]:
    """A database of its own on the test cluster (its DSN), dropped afterwards:
    empty, or a copy of the migrated template."""
    import uuid

    name = "t_" + uuid.uuid4().hex[:12]
    template = f" TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY" if migrated else ""
    _admin(pg_cluster, f"CREATE DATABASE {name}{template}")
    try:
        yield pg_cluster.dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        _admin(pg_cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def fresh_db(request, pg_cluster) -> Iterator[str]:
    """A database of the test's own, dropped afterwards: empty (unmigrated), or, when
    the test also uses `fresh_pool`, the migrated database that pool is on."""
    with _database(pg_cluster, migrated="fresh_pool" in request.fixturenames) as dsn:
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
    from core import db

    pool = await db.connect_pool(fresh_db, size=12)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> ClipCache:
    """Test clips (`make_clip` arguments) made once per session: `clips.get(...)`."""
    return ClipCache(tmp_path_factory.mktemp("clips"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist workers (scripts/test runs two, a module each at a time): the
    modules holding a `slow` test first, so that the two workers finish together
    rather than one running the longest module last. The order is the same on every
    worker (xdist requires it)."""
    if not hasattr(config, "workerinput"):
        return
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


# --------------------------------------------------------------------- fast path on/off


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `both_paths` (pyproject.toml) runs with FAST_PATH on and off;
    every other test runs once, with it on (the default)."""
    if metafunc.definition.get_closest_marker("both_paths") is None:
        return
    if "fast_path" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: marked both_paths but its origin does not "
            "follow the `fast_path` fixture (use `settings`)"
        )
    metafunc.parametrize("fast_path", [True, False], ids=["fast-path", "plain"], indirect=True)


@pytest.fixture
def fast_path(request) -> bool:
    """FAST_PATH of the origin under test: on (the default), unless the test is
    marked `both_paths`."""
    return getattr(request, "param", True)


@pytest.fixture
def ladder():
    """The encoding ladder of the `settings` fixture: one small rung (any ready clip
    will do); a test that checks the ladder itself overrides this fixture."""
    return SMALL_LADDER


@pytest.fixture
def settings(pg_dsn, tmp_path, fast_path, ladder):
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
        ladder=ladder,
        cdn_invalidation_window=0.5,
        webhook_allow_private=True,
        # one stage: a refinement re-encodes every clip at `medium`; the tests of
        # issue 17 (test_refine) turn it on
        refine=False,
    )


@pytest.fixture
def clock():
    """The clock of `origin_client`'s read caches: `clock.skip(1.0)` passes their TTLs."""
    from tests.helpers.servers import SkippingClock

    return SkippingClock()


@pytest.fixture
async def origin_client(settings, clock):
    """The origin app on a real loopback port, with a client."""
    from aiohttp.test_utils import TestClient

    from origin.app import create_app
    from tests.helpers.servers import OriginTestServer

    async with TestClient(OriginTestServer(create_app(settings, clock=clock))) as client:
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
    """`run_workers(concurrency=1, lease_seconds=10.0)` starts an in-process worker
    on the test's `settings` (tests/helpers/workers.py); stopped at teardown."""
    from tests.helpers.workers import InProcessWorkers

    workers = await InProcessWorkers.open(settings)
    try:
        yield workers.start
    finally:
        await workers.aclose()
