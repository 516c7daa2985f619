"""The captions API over HTTP (issue 27): PUT WebVTT or SRT per clip and BCP 47
language, normalised and stored whole or refused whole (4xx with the line, nothing
stored), listed, read back and deleted; every change a new scene version with its
`captions.updated` event; captions go with their clip. Published segments are set up
through the real database and storage, without ffmpeg."""

from __future__ import annotations

import base64
import json

from tests.helpers.scenes import publish, scene_with_users, tus_create

VTT = (
    "\ufeffWEBVTT\r\n\r\nNOTE from the editor\r\n\r\n"
    "00:00.500 --> 00:01.500\r\n<i>Hello</i> & welcome\r\n\r\n"
    "00:03.000 --> 00:09.000\r\nruns past the end\r\n\r\n"
    "00:07.000 --> 00:08.000\r\nafter the end\r\n"
).encode()
SRT = b"1\r\n00:00:01,000 --> 00:00:02,000\r\nOl\xc3\xa1\r\n"


def path(segment: str, lang: str | None = None) -> str:
    base = f"/api/v1/segments/{segment}/captions"
    return base if lang is None else f"{base}/{lang}"


async def put(client, segment: str, lang: str, body: bytes, ctype: str = "text/vtt", auth=True):
    headers = {"Content-Type": ctype, **(client.headers_auth if auth else {})}
    return await client.put(path(segment, lang), data=body, headers=headers)


async def scene_version(pool, scene: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT version FROM scenes WHERE id = $1", scene)


async def events(pool, scene: str) -> list[dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT payload FROM webhook_events WHERE scene_id = $1 AND type = $2 ORDER BY seq",
            scene,
            "captions.updated",
        )
    return [json.loads(r["payload"])["data"] for r in rows]


async def test_put_list_read_replace_delete(origin_client, settings, pool):
    client = origin_client
    scene, (user,) = await scene_with_users(client)
    seg = await publish(settings, scene, user, 1, [4.0, 2.0])  # a 6 s clip
    before = await scene_version(pool, scene)

    r = await put(client, seg, "EN", VTT)
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["language"] == "en"
    en_revision = body["revision"]
    assert (body["cues"], body["dropped"]) == (2, 1)  # one clamped, one dropped
    assert r.headers["Location"] == path(seg, "en")
    assert await scene_version(pool, scene) == before + 1

    r = await client.get(path(seg, "en"))
    assert r.status == 200 and r.headers["Content-Type"] == "text/vtt; charset=utf-8"
    assert await r.text() == (
        "WEBVTT\n\n"
        "00:00:00.500 --> 00:00:01.500\n<i>Hello</i> &amp; welcome\n\n"
        "00:00:03.000 --> 00:00:06.000\nruns past the end\n\n"
    )

    r = await put(client, seg, "pt-br", SRT, "application/x-subrip")
    assert r.status == 201 and (await r.json())["language"] == "pt-BR"
    pt_first = (await r.json())["revision"]
    r = await put(client, seg, "pt-BR", SRT.replace(b"01,000", b"00,250"), "application/x-subrip")
    assert r.status == 200
    pt_revision = (await r.json())["revision"]
    # every write a new revision, never one used before
    assert len({en_revision, pt_first, pt_revision}) == 3
    assert (
        "00:00:00.250 --> 00:00:02.000\nOlá\n"
        in await (await client.get(path(seg, "pt-BR"))).text()
    )

    listing = await (await client.get(path(seg))).json()
    assert [(c["language"], c["revision"], c["url"]) for c in listing["captions"]] == [
        ("en", en_revision, path(seg, "en")),
        ("pt-BR", pt_revision, path(seg, "pt-BR")),
    ]

    r = await client.delete(path(seg, "en"), headers=client.headers_auth)
    assert r.status == 204
    assert (await client.delete(path(seg, "en"), headers=client.headers_auth)).status == 404
    assert (await client.get(path(seg, "en"))).status == 404
    assert await scene_version(pool, scene) == before + 4
    assert [(e["language"], e["revision"], e["deleted"]) for e in await events(pool, scene)] == [
        ("en", en_revision, False),
        ("pt-BR", pt_first, False),
        ("pt-BR", pt_revision, False),
        ("en", None, True),
    ]
    assert all(e["segmentId"] == seg and e["sceneId"] == scene for e in await events(pool, scene))


async def test_refusals_store_nothing(origin_client, settings, pool):
    client = origin_client
    scene, (user,) = await scene_with_users(client)
    seg = await publish(settings, scene, user, 1, [4.0])
    before = await scene_version(pool, scene)
    cases = [
        (await put(client, seg, "en", VTT, auth=False), 401, None),
        (await put(client, seg, "english_US", VTT), 400, "bad_language"),
        (await put(client, seg, "en", VTT, "text/html"), 415, None),
        (await put(client, seg, "en", b"<!DOCTYPE html><html></html>"), 415, None),
        (await put(client, seg, "en", b"#EXTM3U\n#EXTINF:4,\na.ts\n"), 415, None),
        (await put(client, seg, "en", b"\x00\x01\x02WEBVTT"), 415, None),
        (
            await put(
                client, seg, "en", b"WEBVTT\n\n00:00.000 --> 00:01.000\n<script>x</script>\n"
            ),
            422,
            "line 4",
        ),
        (
            await put(client, seg, "en", b"WEBVTT\n\n" + b"x" * settings.captions_max_bytes),
            413,
            None,
        ),
        (await put(client, seg, "en", b""), 400, None),
        (await put(client, "seg_000000000000", "en", VTT), 404, None),
    ]
    for r, status, detail in cases:
        assert r.status == status, await r.text()
        if detail is not None:
            text = await r.text()
            assert detail in text, text
    assert (await (await client.get(path(seg))).json())["captions"] == []
    assert await scene_version(pool, scene) == before
    assert await events(pool, scene) == []
    assert (await client.get(path("seg_000000000000"))).status == 404


async def test_captions_go_with_their_clip(origin_client, settings, pool):
    """A clip that never played is deleted at once with its captions; a ready clip's
    captions leave the API with it and their rows with its purge (cascade)."""
    client = origin_client
    scene, (user,) = await scene_with_users(client)
    processing = await publish(settings, scene, user, 1, [4.0], ready=False)
    ready = await publish(settings, scene, user, 2, [4.0])
    async with pool.acquire() as conn:  # as a clip still transcoding: no duration yet
        await conn.execute("UPDATE segments SET duration = NULL WHERE id = $1", processing)
    for seg in (processing, ready):
        assert (await put(client, seg, "en", VTT)).status == 201
    # captions of a processing clip are not clamped: its duration is not known yet
    assert (await (await client.get(path(processing))).json())["captions"][0]["cues"] == 3

    for seg in (processing, ready):
        r = await client.delete(f"/api/v1/segments/{seg}", headers=client.headers_auth)
        assert r.status == 202
        assert (await client.get(path(seg))).status == 404
        assert (await put(client, seg, "fr", VTT)).status == 404
    async with pool.acquire() as conn:
        count = "SELECT count(*) FROM captions WHERE segment_id = $1"
        assert await conn.fetchval(count, processing) == 0
        assert await conn.fetchval(count, ready) == 1  # until the grace period ends
        await conn.execute("DELETE FROM segments WHERE id = $1", ready)  # the purge
        assert await conn.fetchval(count, ready) == 0


async def test_captions_arrive_with_a_tus_upload(origin_client, pool):
    """`captions.{lang}` in Upload-Metadata: checked at creation (refused whole with
    the captions API's status), stored with the clip when its last byte arrives."""
    client = origin_client
    scene, (user,) = await scene_with_users(client)
    body = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)
    location = await tus_create(
        client,
        scene,
        user,
        len(body),
        filetype="video/mp4",
        **{"captions.pt-br": SRT.decode(), "captions.en": VTT.decode()},
    )
    r = await client.patch(
        location,
        data=body,
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert r.status == 204, await r.text()
    segment = r.headers["Location"].rsplit("/", 1)[1]
    listing = await (await client.get(path(segment))).json()
    assert [(c["language"], c["cues"]) for c in listing["captions"]] == [("en", 3), ("pt-BR", 1)]
    assert "<i>Hello</i> &amp; welcome" in await (await client.get(path(segment, "en"))).text()
    assert {e["language"] for e in await events(pool, scene)} == {"en", "pt-BR"}

    for metadata, status in (
        ({"captions.english_US": VTT.decode()}, 400),
        ({"captions.en": "WEBVTT\n\n00:01.000 --> 00:00.000\nbackwards\n"}, 422),
        ({"captions.en": "<html><script>x</script></html>"}, 415),
    ):
        values = {"sceneId": scene, "contributor": user, "filetype": "video/mp4", **metadata}
        r = await client.post(
            "/api/v1/uploads",
            headers={
                **client.headers_auth,
                "Tus-Resumable": "1.0.0",
                "Upload-Length": "1000",
                "Upload-Metadata": ",".join(
                    f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items()
                ),
            },
        )
        assert r.status == status, await r.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM uploads WHERE scene_id = $1", scene) == 1
