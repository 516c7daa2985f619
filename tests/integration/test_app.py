"""The app factory: probes, JSON errors, request ids."""

import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings
from origin.app import create_app
from tests.helpers.servers import OriginTestServer


@pytest.fixture
async def client(pg_dsn, tmp_path):
    app = create_app(Settings.from_env({}, database_url=pg_dsn, storage_root=tmp_path / "storage"))

    async def boom(request):
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)
    async with TestClient(OriginTestServer(app)) as c:
        yield c


async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status == 200
    assert (await r.json()) == {"status": "ok"}


async def test_readyz_ok(client):
    r = await client.get("/readyz")
    assert r.status == 200
    assert r.headers["Cache-Control"] == "no-store"


async def test_readyz_503_when_database_is_gone(client):
    from origin import keys

    pool = client.app[keys.POOL]
    await pool.close()
    r = await client.get("/readyz")
    assert r.status == 503
    body = await r.json()
    assert "database" in body["problems"]


async def test_unknown_route_is_json_404(client):
    r = await client.get("/nope")
    assert r.status == 404
    assert (await r.json()) == {"error": {"code": "not_found", "message": "Not Found"}}


async def test_method_not_allowed_is_json_405(client):
    r = await client.post("/healthz")
    assert r.status == 405
    assert (await r.json())["error"]["code"] == "method_not_allowed"
    assert "GET" in r.headers["Allow"]


async def test_unhandled_error_is_500_without_traceback(client):
    r = await client.get("/boom", headers={"X-Request-Id": "abc-123"})
    assert r.status == 500
    body = await r.json()
    assert body["error"]["code"] == "internal"
    assert "abc-123" in body["error"]["message"]
    assert "secret internals" not in await r.text()
    assert r.headers["X-Request-Id"] == "abc-123"


async def test_hostile_request_id_is_replaced(client):
    r = await client.get("/healthz", headers={"X-Request-Id": "x" * 500})
    assert r.headers["X-Request-Id"] != "x" * 500
    assert len(r.headers["X-Request-Id"]) == 16


@pytest.mark.parametrize("mode,logged", [("all", {200, 404}), ("errors", {404}), ("off", set())])
async def test_access_log_modes(pg_dsn, tmp_path, caplog, mode, logged):
    import logging

    app = create_app(
        Settings.from_env(
            {"ACCESS_LOG": mode}, database_url=pg_dsn, storage_root=tmp_path / "storage"
        )
    )
    async with TestClient(OriginTestServer(app)) as c:
        with caplog.at_level(logging.INFO, logger="storyforge.origin"):
            await c.get("/healthz", headers={"X-Request-Id": "req-ok"})
            await c.get("/nope", headers={"X-Request-Id": "req-missing"})
    lines = [r.getMessage() for r in caplog.records if r.name == "storyforge.origin"]
    statuses = {int(line.rsplit(" ", 1)[1]) for line in lines}
    assert statuses == logged
