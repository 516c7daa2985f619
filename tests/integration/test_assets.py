"""The assets bucket over HTTP (issue 15, issue 13 §5), on LocalStorage and on moto's S3
server: avatars, topic icons and scene references written through the API, served
under `/a/` with the fields stored with them; hostile uploads refused with a 4xx and a
reason, leaving nothing behind; references signed like their scene; and a running
`storyforge serve` whose memory does not move when a decompression bomb arrives."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from core import layout, signing
from core.storage import open_configured_storage
from origin import keys
from origin.app import create_app
from tests.helpers import images
from tests.helpers.clips import FFPROBE, HAVE_FFMPEG, NO_FFMPEG_REASON, make_wav
from tests.helpers.scenes import API_TOKEN, AUTH, new_scene
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import free_port, on_moto, wait_port

ENT = "ent_0123456789abcdef"
TOP = "top_" + os.urandom(8).hex()
needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)


@pytest.fixture(params=["local", "s3"])
def backend_settings(request, settings):
    if request.param == "local":
        return settings
    return on_moto(settings, request.getfixturevalue("moto_endpoint"))


@pytest.fixture
async def client(backend_settings):
    async with TestClient(OriginTestServer(create_app(backend_settings))) as c:
        c.headers_auth = {"Authorization": AUTH}
        yield c


@pytest.fixture(scope="module")
def voice_51(tmp_path_factory) -> bytes:
    """Two seconds of 5.1 at 44.1 kHz, 16-bit PCM."""
    if not HAVE_FFMPEG:
        pytest.skip(NO_FFMPEG_REASON)
    path = tmp_path_factory.mktemp("voice") / "in.wav"
    return make_wav(path, seconds=2.0, rate=44_100, layout="5.1").read_bytes()


async def _put(client, path: str, body: bytes, ctype: str = "application/octet-stream"):
    return await client.put(path, data=body, headers={**client.headers_auth, "Content-Type": ctype})


async def _stored_keys(client, prefix: str) -> list[str]:
    storage = client.server.app[keys.STORAGE]
    bucket = client.server.app[keys.SETTINGS].assets_bucket
    return [info.key async for info in storage.list(bucket, prefix)]


async def _rows(client, like: str) -> int:
    async with client.server.app[keys.POOL].acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM assets WHERE key LIKE $1", like)


async def test_avatar_round_trip_strips_metadata_and_changes_etag(client):
    _, (user,) = await new_scene(client)
    upload = images.photo_jpeg(1200, 800)
    assert b"GPS" in upload and b"Exif" in upload
    r = await _put(client, f"/api/v1/users/{user}/avatar", upload, "image/jpeg")
    assert r.status == 201, await r.text()
    body = await r.json()
    key = layout.avatar_key(user)
    assert body["url"] == f"/a/{key}" and (body["width"], body["height"]) == (512, 512)
    assert body["contentType"] == "image/jpeg" and body["kind"] == "avatar"

    r = await client.get(f"/a/{key}")
    assert r.status == 200
    first = await r.read()
    assert len(first) == body["size"]
    assert r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["Cache-Control"] == "public, max-age=300"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    im = Image.open(io.BytesIO(first))
    assert (im.format, im.size) == ("JPEG", (512, 512))
    assert dict(im.getexif()) == {} and not {"exif", "icc_profile", "xmp"} & set(im.info)
    for needle in (b"Exif", b"GPS", b"StoryPhone", b"<script"):
        assert needle not in first, needle
    old_etag = r.headers["ETag"]
    assert (await client.get(f"/a/{key}", headers={"If-None-Match": old_etag})).status == 304

    # a new avatar: 200 (replaced), a new ETag, and the old validator gets the new bytes
    r = await _put(client, f"/api/v1/users/{user}/avatar", images.png(900, 900), "image/png")
    assert r.status == 200, await r.text()
    r = await client.get(f"/a/{key}", headers={"If-None-Match": old_etag})
    assert r.status == 200
    second = await r.read()
    assert second != first and r.headers["ETag"] != old_etag
    assert Image.open(io.BytesIO(second)).size == (512, 512)
    r = await client.head(f"/a/{key}")
    assert r.status == 200 and r.headers["Cache-Control"] == "public, max-age=300"
    assert int(r.headers["Content-Length"]) == len(second)
    assert await _rows(client, key) == 1


async def test_topic_icon_and_portrait_are_pngs(client):
    scene, _ = await new_scene(client)
    r = await _put(client, f"/api/v1/topics/{TOP}/icon", images.animated_gif(), "image/gif")
    assert r.status in (200, 201), await r.text()
    r = await client.get(f"/a/{layout.topic_icon_key(TOP)}")
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    icon = Image.open(io.BytesIO(await r.read()))
    assert icon.format == "PNG" and getattr(icon, "n_frames", 1) == 1

    name = layout.portrait_name(ENT)
    # a JPEG sent for a .png name is stored as the PNG the name promises
    r = await _put(client, f"/api/v1/scenes/{scene}/references/{name}", images.photo_jpeg())
    assert r.status == 201, await r.text()
    assert (await r.json())["entityId"] == ENT
    r = await client.get(f"/a/{layout.reference_key(scene, name)}")
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(await r.read())).size == (1024, 683)


@needs_ffmpeg
async def test_voice_anchor_round_trip_listing_and_delete(client, voice_51, tmp_path):
    scene, _ = await new_scene(client)
    path = f"/api/v1/scenes/{scene}/references/voice_anchor.wav"
    r = await _put(client, path, voice_51, "audio/wav")
    assert r.status == 201, await r.text()
    assert 1.99 <= (await r.json())["duration"] <= 2.01
    key = layout.reference_key(scene, "voice_anchor.wav")
    r = await client.get(f"/a/{key}")
    assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
    stored = tmp_path / "stored.wav"
    stored.write_bytes(await r.read())
    probe = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
         "-show_format", str(stored)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    info = json.loads(probe.stdout)
    [stream] = info["streams"]
    assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == (
        "pcm_s16le",
        "48000",
        2,
    )
    assert abs(float(stream["duration"]) - 2.0) < 0.01
    assert "tags" not in info["format"]  # no encoder or other metadata
    # it plays: every sample decodes
    decoded = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "stream=nb_read_packets", "-of", "csv=p=0", str(stored)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert int(decoded.stdout.strip()) > 0 and decoded.stderr == ""

    r = await client.get(f"/api/v1/scenes/{scene}/references", headers=client.headers_auth)
    assert r.status == 200
    [listed] = (await r.json())["references"]
    assert listed["name"] == "voice_anchor.wav" and listed["url"] == f"/a/{key}"
    assert listed["kind"] == "voice_anchor"

    r = await client.delete(path, headers=client.headers_auth)
    assert r.status == 204
    assert (await client.get(f"/a/{key}")).status == 404
    assert (await client.delete(path, headers=client.headers_auth)).status == 404
    r = await client.get(f"/api/v1/scenes/{scene}/references", headers=client.headers_auth)
    assert (await r.json())["references"] == []
    assert await _stored_keys(client, layout.reference_prefix(scene)) == []


HOSTILE = [
    ("bomb", "style_frame.png", images.png_bomb(), 422, "too_many_pixels"),
    ("truncated-jpeg", "style_frame.png", images.truncated_jpeg(), 422, "damaged_image"),
    ("png-zip", "style_frame.png", images.png_zip_polyglot(), 422, "polyglot"),
    ("svg", "style_frame.png", images.SVG, 415, "unsupported_media_type"),
    ("html-named-png", f"char_{ENT}_portrait.png", images.HTML, 415, "unsupported_media_type"),
    ("hls-named-wav", "voice_anchor.wav", images.hls_playlist_named_wav(), 415, None),
    ("riff-hls", "voice_anchor.wav", images.wav_header_then_playlist(), 422, "damaged_audio"),
]


@needs_ffmpeg
async def test_hostile_uploads_are_refused_and_nothing_is_stored(client):
    scene, (user,) = await new_scene(client)
    for label, name, upload, status, code in HOSTILE:
        ctype = "audio/wav" if name.endswith(".wav") else "image/png"
        r = await _put(client, f"/api/v1/scenes/{scene}/references/{name}", upload, ctype)
        assert r.status == status, (label, await r.text())
        error = (await r.json())["error"]
        assert error["message"] and (code is None or error["code"] == code), (label, error)
    r = await _put(client, f"/api/v1/users/{user}/avatar", images.png_bomb(), "image/png")
    assert r.status == 422
    assert "900 megapixels" in (await r.json())["error"]["message"]
    assert await _stored_keys(client, f"scenes/{scene}/") == []
    assert await _stored_keys(client, layout.avatar_key(user)) == []
    assert await _rows(client, f"scenes/{scene}/%") == 0
    assert await _rows(client, layout.avatar_key(user)) == 0


async def test_malformed_requests(client, backend_settings):
    scene, (user,) = await new_scene(client)
    png = images.png(64, 64)
    cases = [
        ("/api/v1/topics/space-opera/icon", 400),
        ("/api/v1/users/bob/avatar", 400),
        (f"/api/v1/scenes/{scene}/references/notes.txt", 400),
        (f"/api/v1/scenes/{scene}/references/char_bob_portrait.png", 400),
        ("/api/v1/scenes/scn_0000000000000000/references/style_frame.png", 404),
        ("/api/v1/users/usr_0000000000000000/avatar", 404),
    ]
    for path, status in cases:
        r = await _put(client, path, png)
        assert r.status == status, (path, await r.text())
        assert (await r.json())["error"]["message"]
    r = await client.put(f"/api/v1/users/{user}/avatar", data=png)
    assert r.status == 401
    r = await _put(client, f"/api/v1/users/{user}/avatar", b"")
    assert r.status == 400 and (await r.json())["error"]["code"] == "empty_upload"


async def test_byte_limit_while_streaming(settings):
    small = dataclasses.replace(settings, asset_max_bytes=64 * 1024)
    async with TestClient(OriginTestServer(create_app(small))) as client:
        client.headers_auth = {"Authorization": AUTH}
        _, (user,) = await new_scene(client)
        path = f"/api/v1/users/{user}/avatar"
        r = await _put(client, path, b"\xff\xd8\xff" + b"\x00" * 70_000)
        assert r.status == 413  # Content-Length says so

        async def chunked():  # no Content-Length: counted while it arrives
            for _ in range(100):
                yield b"\x00" * 4096

        r = await client.put(path, data=chunked(), headers=client.headers_auth)
        assert r.status == 413
        assert "65536 bytes" in (await r.json())["error"]["message"]
        assert await _stored_keys(client, "avatars/") == []


async def test_assets_are_served_with_their_stored_fields(client, backend_settings):
    """Issue 13 §5: whatever an asset was stored with is what `/a/` answers with (the
    poster is written by the transcoder with its own Cache-Control)."""
    scene, _ = await new_scene(client)
    storage = client.server.app[keys.STORAGE]
    key = layout.poster_key(scene)
    await storage.put(
        backend_settings.assets_bucket,
        key,
        images.photo_jpeg(64, 64),
        content_type="image/jpeg",
        cache_control="public, max-age=123",
        tags={"type": "thumbnail"},
    )
    for method in ("GET", "HEAD"):
        r = await client.request(method, f"/a/{key}")
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, max-age=123", method
        assert r.headers["Content-Type"] == "image/jpeg"
    r = await client.get(f"/a/{key}", headers={"If-None-Match": r.headers["ETag"]})
    assert r.status == 304


@pytest.fixture
async def hmac_client(settings):
    key = signing.HmacKey("k1", b"0123456789abcdef0123")
    signed = dataclasses.replace(settings, signing="hmac", hmac_keys=(key,))
    async with TestClient(OriginTestServer(create_app(signed))) as c:
        c.headers_auth = {"Authorization": AUTH}
        yield c


async def test_references_follow_the_scenes_signing(hmac_client):
    client = hmac_client
    scene, (user,) = await new_scene(client)
    other, _ = await new_scene(client)
    for sid in (scene, other):
        path = f"/api/v1/scenes/{sid}/references/style_frame.png"
        assert (await _put(client, path, images.png(320, 180))).status == 201
    assert (await _put(client, f"/api/v1/users/{user}/avatar", images.png(64, 64))).status == 201
    ref = f"/a/{layout.reference_key(scene, 'style_frame.png')}"

    r = await client.get(ref)
    assert r.status == 403 and "missing token" in (await r.json())["error"]["message"]
    r = await client.get(f"/api/v1/scenes/{scene}/references", headers=client.headers_auth)
    body = await r.json()
    [listed] = body["references"]
    assert listed["url"].startswith(ref + "?exp=") and "expiresAt" in body
    r = await client.get(listed["url"])
    assert r.status == 200 and r.headers["Content-Type"] == "image/png"
    # the token opens this scene's references only, not another scene's nor its media
    query = listed["url"].split("?", 1)[1]
    other_ref = f"/a/{layout.reference_key(other, 'style_frame.png')}?{query}"
    assert (await client.get(other_ref)).status == 403
    assert (await client.get(f"/v/{scene}/master.m3u8?{query}")).status == 403
    # the scene's media token does not open its references either
    r = await client.get(f"/api/v1/scenes/{scene}/playlist", headers=client.headers_auth)
    media_query = (await r.json())["hlsUrl"].split("?", 1)[1]
    assert (await client.get(f"{ref}?{media_query}")).status == 403
    # avatars are public
    assert (await client.get(f"/a/{layout.avatar_key(user)}")).status == 200
    # the listing needs the bearer token
    assert (await client.get(f"/api/v1/scenes/{scene}/references")).status == 401


def _vm(pid: int, field: str) -> int:
    """A /proc/{pid}/status field in KiB (VmRSS now, VmHWM the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _call(base: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        base + path,
        data=body,
        method=method,
        headers={"Authorization": AUTH, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.slow
def test_bomb_leaves_the_serving_process_memory_alone(pg_dsn, tmp_path):
    """`storyforge serve` as deployed: after a warm-up upload, a 30,000 x 30,000 PNG
    (900 MB decoded) is refused and the process' peak RSS (VmHWM) grows < 50 MB."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": pg_dsn,
        "STORAGE": "local",
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "API_TOKENS": API_TOKEN,
        "LOG_FORMAT": "text",
        "PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "storyforge.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        base = f"http://127.0.0.1:{port}"
        status, user = _call(
            base, "POST", "/api/v1/users", b'{"username": "u%s"}' % os.urandom(4).hex().encode()
        )
        assert status == 201, user
        avatar = f"/api/v1/users/{user['id']}/avatar"
        for _ in range(2):  # warm: Pillow's plugins loaded, a real decode done
            assert _call(base, "PUT", avatar, images.photo_jpeg(2000, 1500))[0] in (200, 201)
        peak, rss = _vm(proc.pid, "VmHWM"), _vm(proc.pid, "VmRSS")
        bomb = images.png_bomb()
        started = time.monotonic()
        status, body = _call(base, "PUT", avatar, bomb)
        elapsed = time.monotonic() - started
        assert status == 422 and body["error"]["code"] == "too_many_pixels", body
        grown_peak = _vm(proc.pid, "VmHWM") - peak
        grown_rss = _vm(proc.pid, "VmRSS") - rss
        print(
            f"bomb: {len(bomb)} bytes, refused in {elapsed * 1000:.0f} ms; "
            f"peak RSS +{grown_peak / 1024:.1f} MB, RSS +{grown_rss / 1024:.1f} MB"
        )
        assert grown_peak < 50 * 1024 and grown_rss < 50 * 1024
    finally:
        proc.terminate()
        proc.wait(15)


async def test_scene_rows_go_with_the_scene(client, backend_settings):
    """The references' rows belong to the scene row (ON DELETE CASCADE)."""
    scene, _ = await new_scene(client)
    path = f"/api/v1/scenes/{scene}/references/style_frame.png"
    assert (await _put(client, path, images.png(64, 64))).status == 201
    conn = await asyncpg.connect(backend_settings.database_url)
    try:
        await conn.execute("DELETE FROM scenes WHERE id = $1", scene)
        assert await conn.fetchval("SELECT count(*) FROM assets WHERE scene_id = $1", scene) == 0
    finally:
        await conn.close()
    storage = await open_configured_storage(backend_settings)
    try:
        await storage.delete_prefix(backend_settings.assets_bucket, f"scenes/{scene}/")
    finally:
        await storage.aclose()
    await asyncio.sleep(0)
