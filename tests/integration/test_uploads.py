"""tus 1.0.0 uploads against the running origin, on LocalStorage and on moto's S3:
the protocol's answers (creation, HEAD, PATCH, termination, expiration, checksum,
discovery, CORS), what is stored and what is left behind, the lease that keeps two
requests from writing one upload, and an upload taken over by another origin."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import os

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from core.storage import open_configured_storage
from origin.app import create_app
from tests.helpers.scenes import API_TOKEN, new_scene
from tests.helpers.servers import OriginTestServer
from tests.helpers.workers import running_workers

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
PATCH_TYPE = {"Content-Type": "application/offset+octet-stream"}


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@pytest.fixture(params=["local", "s3"])
def tus_settings(request, settings):
    if request.param == "s3":
        return dataclasses.replace(
            settings,
            storage="s3",
            s3_endpoint_url=request.getfixturevalue("moto_endpoint"),
            s3_access_key="test",
            s3_secret_key="test",
            upload_lock_seconds=3.0,
        )
    return dataclasses.replace(settings, upload_lock_seconds=3.0)


@pytest.fixture
async def client(tus_settings):
    async with TestClient(OriginTestServer(create_app(tus_settings))) as c:
        c.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        yield c


async def create(client, scene, user, length, **extra):
    headers = {
        **client.headers_auth,
        **TUS,
        "Upload-Length": str(length),
        "Upload-Metadata": meta(sceneId=scene, contributor=user, filename="clip.mp4"),
        **extra,
    }
    r = await client.post("/api/v1/uploads", headers=headers)
    assert r.status == 201, await r.text()
    return r.headers["Location"]


async def patch(client, url, offset, data, **extra):
    headers = {**TUS, **PATCH_TYPE, "Upload-Offset": str(offset), **extra}
    return await client.patch(url, data=data, headers=headers)


async def internal_keys(settings) -> list[str]:
    storage = await open_configured_storage(settings)
    try:
        return [i.key async for i in storage.list(settings.internal_bucket, "")]
    finally:
        await storage.aclose()


async def keys_of(settings, upload_url: str, job_id: str | None = None) -> list[str]:
    upload_id = upload_url.rsplit("/", 1)[1]
    found = [k for k in await internal_keys(settings) if upload_id in k]
    if job_id:
        found += [k for k in await internal_keys(settings) if job_id in k]
    return found


async def leased(settings, upload_url: str) -> bool:
    """Whether a request holds the upload's lease now (a parked one is free to take)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetchval(
            "SELECT lock_token IS NOT NULL AND lock_expires_at > now() FROM uploads WHERE id = $1",
            upload_url.rsplit("/", 1)[1],
        )
    finally:
        await conn.close()


async def row(settings, upload_url: str):
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetchrow(
            "SELECT * FROM uploads WHERE id = $1", upload_url.rsplit("/", 1)[1]
        )
    finally:
        await conn.close()


async def test_discovery_and_creation_refusals(client, tus_settings):
    r = await client.options("/api/v1/uploads")
    assert r.status == 204
    assert r.headers["Tus-Version"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    }
    assert r.headers["Tus-Max-Size"] == str(tus_settings.max_upload_bytes)
    assert "sha1" in r.headers["Tus-Checksum-Algorithm"].split(",")

    scene, (user,) = await new_scene(client)
    good = {"Upload-Length": "10", "Upload-Metadata": meta(sceneId=scene, contributor=user)}
    cases = [
        ({**TUS, **good}, 401),  # no token
        ({**client.headers_auth, **good}, 412),  # no Tus-Resumable
        ({**client.headers_auth, **good, "Tus-Resumable": "0.2.2"}, 412),
        ({**client.headers_auth, **TUS, **good, "Upload-Length": "ten"}, 400),
        ({**client.headers_auth, **TUS, **good, "Upload-Length": "0"}, 400),
        (
            {**client.headers_auth, **TUS, **good, "Upload-Length": str(2 * 1024**3 + 1)},
            413,
        ),
        (
            {**client.headers_auth, **TUS, "Upload-Defer-Length": "1", "Upload-Metadata": meta()},
            400,
        ),
        ({**client.headers_auth, **TUS, **good, "Upload-Metadata": "sceneId !!!"}, 400),
        ({**client.headers_auth, **TUS, **good, "Upload-Metadata": meta(sceneId=scene)}, 400),
        (
            {
                **client.headers_auth,
                **TUS,
                **good,
                "Upload-Metadata": meta(sceneId="scn_0000000000000000", contributor=user),
            },
            404,
        ),
        (
            {
                **client.headers_auth,
                **TUS,
                **good,
                "Upload-Metadata": meta(sceneId=scene, contributor=user, filetype="text/html"),
            },
            415,
        ),
        (
            {
                **client.headers_auth,
                **TUS,
                **good,
                "Upload-Metadata": meta(sceneId=scene, contributor=user, sequence="0"),
            },
            400,
        ),
    ]
    before = await internal_keys(tus_settings)
    for headers, status in cases:
        r = await client.post("/api/v1/uploads", headers=headers)
        assert r.status == status, (headers, await r.text())
        assert r.headers["Tus-Resumable"] == "1.0.0"
        assert (await r.json())["error"]["message"]
        if status == 412:
            assert r.headers["Tus-Version"] == "1.0.0"
    assert await internal_keys(tus_settings) == before


async def test_upload_in_pieces_becomes_a_segment(client, tus_settings):
    scene, (user,) = await new_scene(client)
    data = os.urandom(12 * MiB + 12345)
    url = await create(client, scene, user, len(data))
    r = await client.head(url, headers=TUS)
    assert r.status == 200
    assert (r.headers["Upload-Offset"], r.headers["Upload-Length"]) == ("0", str(len(data)))
    assert r.headers["Cache-Control"] == "no-store" and "Upload-Expires" in r.headers
    assert "sceneId" in r.headers["Upload-Metadata"]

    # pieces that do not fall on part boundaries: S3 keeps the rest as pending objects
    cuts = [0, 1 * MiB, 7 * MiB + 3, 11 * MiB, len(data)]
    for start, end in zip(cuts, cuts[1:], strict=False):
        r = await patch(client, url, start, data[start:end])
        assert r.status == 204, await r.text()
        assert r.headers["Upload-Offset"] == str(end)
        if end < len(data):
            assert "Upload-Expires" in r.headers and "Location" not in r.headers
            # a wrong offset is 409 and changes nothing
            r = await patch(client, url, start, data[start:end])
            assert r.status == 409
            assert (await client.head(url, headers=TUS)).headers["Upload-Offset"] == str(end)
    segment_url = r.headers["Location"]
    assert segment_url.startswith("/api/v1/segments/seg_")
    status = await (await client.get(segment_url)).json()
    assert status["status"] == "processing" and status["sceneId"] == scene
    r = await client.head(url, headers=TUS)
    assert r.headers["Upload-Offset"] == str(len(data)) and r.headers["Location"] == segment_url

    storage = await open_configured_storage(tus_settings)
    try:
        key = f"jobs/{status['jobId']}/raw_output.mp4"
        obj = await storage.get(tus_settings.internal_bucket, key)
        assert hashlib.sha256(await obj.read()).digest() == hashlib.sha256(data).digest()
    finally:
        await storage.aclose()
    # nothing but the joined upload is left
    assert await keys_of(tus_settings, url, status["jobId"]) == [key]
    # a PATCH after completion
    r = await patch(client, url, len(data), b"x")
    assert r.status in (409, 413)


async def test_refusals_leave_nothing(client, tus_settings):
    scene, (user,) = await new_scene(client)
    url = await create(client, scene, user, 100)
    forged = "/api/v1/uploads/upl_" + "a" * 26
    for method in ("HEAD", "PATCH", "DELETE"):
        for target in (forged, "/api/v1/uploads/upl_x", "/api/v1/uploads/..%2f..%2fetc"):
            headers = {**TUS, **PATCH_TYPE, "Upload-Offset": "0"}
            r = await client.request(method, target, data=b"abc", headers=headers)
            assert r.status == 404, (method, target)
    assert (await patch(client, url, 5, b"abc")).status == 409  # wrong offset
    assert (await patch(client, url, 0, b"x" * 101)).status == 413  # past Upload-Length
    r = await client.patch(url, data=b"abc", headers={**TUS, "Upload-Offset": "0"})
    assert r.status == 415  # not application/offset+octet-stream
    r = await patch(client, url, 0, b"abc", **{"Upload-Checksum": "crc32 AAAA"})
    assert r.status == 400
    digest = base64.b64encode(hashlib.sha1(b"abd").digest()).decode()
    r = await patch(client, url, 0, b"abc", **{"Upload-Checksum": f"sha1 {digest}"})
    assert r.status == 460
    assert (await client.head(url, headers=TUS)).headers["Upload-Offset"] == "0"
    good = base64.b64encode(hashlib.sha1(b"abc").digest()).decode()
    r = await patch(client, url, 0, b"abc", **{"Upload-Checksum": f"sha1 {good}"})
    assert r.status == 204 and r.headers["Upload-Offset"] == "3"
    record = await row(tus_settings, url)
    assert record["received"] == 3 and not await leased(tus_settings, url)

    # termination: 204, then the upload is gone and so are its bytes
    r = await client.delete(url, headers=TUS)
    assert r.status == 204
    assert (await client.head(url, headers=TUS)).status == 404
    assert (await patch(client, url, 3, b"def")).status == 404
    assert await keys_of(tus_settings, url) == []
    if tus_settings.storage == "local":
        staging = tus_settings.storage_root / ".uploads" / tus_settings.internal_bucket
        assert not staging.exists() or not list(staging.iterdir())


async def test_creation_with_upload_and_method_override(client, tus_settings):
    scene, (user,) = await new_scene(client)
    headers = {
        **client.headers_auth,
        **TUS,
        **PATCH_TYPE,
        "Upload-Length": "10",
        "Upload-Metadata": meta(sceneId=scene, contributor=user, sequence="4"),
    }
    r = await client.post("/api/v1/uploads", data=b"01234", headers=headers)
    assert r.status == 201 and r.headers["Upload-Offset"] == "5"
    url = r.headers["Location"]
    r = await client.post(
        url,
        data=b"56789",
        headers={**TUS, **PATCH_TYPE, "Upload-Offset": "5", "X-HTTP-Method-Override": "PATCH"},
    )
    assert r.status == 204 and r.headers["Upload-Offset"] == "10"
    status = await (await client.get(r.headers["Location"])).json()
    assert status["sequence"] == 4
    # the same sequence again: the second upload cannot become a clip (409), and is gone
    headers["Upload-Metadata"] = meta(sceneId=scene, contributor=user, sequence="4")
    r = await client.post("/api/v1/uploads", data=b"0123456789", headers=headers)
    assert r.status == 409 and "sequence 4 is taken" in (await r.json())["error"]["message"]
    # (the refused upload's URL is not known to the client; its row says why)


async def test_cors_for_browsers(client):
    r = await client.options(
        "/api/v1/uploads",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status == 204
    assert "PATCH" in r.headers["Access-Control-Allow-Methods"]
    for name in ("Upload-Offset", "Tus-Resumable", "Upload-Metadata", "Authorization"):
        assert name in r.headers["Access-Control-Allow-Headers"]
    r = await client.head(
        "/api/v1/uploads/upl_" + "b" * 26, headers={**TUS, "Origin": "https://app.example"}
    )
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    exposed = r.headers["Access-Control-Expose-Headers"]
    for name in ("Upload-Offset", "Location", "Upload-Expires", "Tus-Resumable"):
        assert name in exposed


async def test_one_writer_at_a_time_and_any_origin_takes_over(client, tus_settings):
    """A PATCH in flight holds the upload: a second one is 409 and writes nothing; once
    the first ends another origin process (its own app, pool and storage) takes the
    next PATCH."""
    scene, (user,) = await new_scene(client)
    url = await create(client, scene, user, 2 * MiB)
    release = asyncio.Event()

    async def slow_body():
        yield b"a" * 1000
        await release.wait()
        yield b"b" * 1000

    first = asyncio.create_task(patch(client, url, 0, slow_body()))
    for _ in range(100):
        if await leased(tus_settings, url):
            break
        await asyncio.sleep(0.05)
    second = await patch(client, url, 0, b"c" * 10)
    assert second.status == 409
    assert "another request" in (await second.json())["error"]["message"]
    release.set()
    r = await first
    assert r.status == 204 and r.headers["Upload-Offset"] == "2000"
    async with TestClient(OriginTestServer(create_app(tus_settings))) as other:
        r = await patch(other, url, 2000, b"d" * (2 * MiB - 2000))
        assert r.status == 204 and "Location" in r.headers


async def test_a_parked_lease_shortcuts_the_next_patch_and_never_outlives_a_takeover(
    client, tus_settings
):
    """A PATCH that leaves bytes to come parks its lease: the process's next PATCH at
    that offset writes without a claim (its part numbers follow on: one allocated per
    PATCH, not two), any other origin takes the upload at once, and a parked lease the
    upload has moved past is refused with the protocol's answer, leaving the bytes
    intact."""
    scene, (user,) = await new_scene(client)
    data = os.urandom(5 * MiB + 777)
    url = await create(client, scene, user, len(data))
    cuts = [0, 1 * MiB, 2 * MiB, 3 * MiB]
    for start, end in zip(cuts, cuts[1:], strict=False):
        r = await patch(client, url, start, data[start:end])
        assert r.status == 204, await r.text()
    parked = await row(tus_settings, url)
    assert parked["lock_token"] is not None  # parked: still named, but free to take
    assert not await leased(tus_settings, url)
    if tus_settings.storage == "local":  # one part per PATCH: numbers 1, 2, 3 (S3: buffered)
        assert [p["n"] for p in json.loads(parked["parts"])] == [1, 2, 3]
    assert parked["next_part"] == 5  # 1 claimed, 2 and 3 shortcut, 4 kept for the next

    async with TestClient(OriginTestServer(create_app(tus_settings))) as other:
        r = await patch(other, url, 3 * MiB, data[3 * MiB : 4 * MiB])  # taken at once
        assert r.status == 204 and r.headers["Upload-Offset"] == str(4 * MiB)
    # the first origin's parked lease is at 3 MiB: the upload moved on without it
    r = await patch(client, url, 3 * MiB, data[3 * MiB : 4 * MiB])
    assert r.status == 409, await r.text()
    assert "is not the upload's offset" in (await r.json())["error"]["message"]
    assert (await client.head(url, headers=TUS)).headers["Upload-Offset"] == str(4 * MiB)
    r = await patch(client, url, 4 * MiB, data[4 * MiB :])
    assert r.status == 204 and "Location" in r.headers, await r.text()
    status = await (await client.get(r.headers["Location"])).json()
    storage = await open_configured_storage(tus_settings)
    try:
        obj = await storage.get(
            tus_settings.internal_bucket, f"jobs/{status['jobId']}/raw_output.mp4"
        )
        assert hashlib.sha256(await obj.read()).digest() == hashlib.sha256(data).digest()
    finally:
        await storage.aclose()

    # terminated elsewhere while parked here: 404, nothing stored
    url = await create(client, scene, user, 2 * MiB)
    assert (await patch(client, url, 0, b"a" * MiB)).status == 204
    async with TestClient(OriginTestServer(create_app(tus_settings))) as other:
        assert (await other.delete(url, headers=TUS)).status == 204
    r = await patch(client, url, MiB, b"b" * MiB)
    assert r.status == 404, await r.text()
    assert await keys_of(tus_settings, url) == []


async def test_expired_upload_is_410_and_removed(tus_settings):
    """An upload still open at its expiry gets 410 and its stored bytes are removed by
    the expire_upload job."""
    quick = dataclasses.replace(tus_settings, upload_expiry_seconds=1)
    async with TestClient(OriginTestServer(create_app(quick))) as client:
        client.headers_auth = {"Authorization": f"Bearer {API_TOKEN}"}
        scene, (user,) = await new_scene(client)
        url = await create(client, scene, user, 10 * MiB)
        assert (await patch(client, url, 0, os.urandom(6 * MiB))).status == 204
        staging = quick.storage_root / ".uploads" / quick.internal_bucket
        if quick.storage == "local":  # 6 MiB in the staging tree
            assert [p.stat().st_size for p in staging.rglob("data")] == [6 * MiB]
        else:  # one 5 MiB part, and 1 MiB pending in the bucket
            assert len(await keys_of(quick, url)) == 1
        conn = await asyncpg.connect(quick.database_url)
        try:  # due now rather than after the minute of grace
            await conn.execute(
                "UPDATE jobs SET run_after = now() + interval '1.2 seconds' WHERE dedupe_key = $1",
                "expire_upload:" + url.rsplit("/", 1)[1],
            )
        finally:
            await conn.close()
        await asyncio.sleep(1.1)
        for method in ("HEAD", "PATCH"):
            headers = {**TUS, **PATCH_TYPE, "Upload-Offset": str(6 * MiB)}
            r = await client.request(method, url, data=b"x", headers=headers)
            assert r.status == 410, method
        async with running_workers(quick):
            for _ in range(100):
                if (await row(quick, url))["status"] == "expired":
                    break
                await asyncio.sleep(0.1)
        record = await row(quick, url)
        assert record["status"] == "expired"
        for _ in range(50):
            if not await keys_of(quick, url, record["job_id"]):
                break
            await asyncio.sleep(0.1)
        assert await keys_of(quick, url, record["job_id"]) == []
        if quick.storage == "local":
            assert not list(staging.iterdir())
        assert (await client.head(url, headers=TUS)).status == 410
