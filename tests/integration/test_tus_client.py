"""The real tus-js-client (npm) in Node uploads a 30 MB clip in 5 MiB chunks to a
running origin (`storyforge serve` in a process of its own), is interrupted mid-way,
resumes from the server's offset through findPreviousUploads, and the clip becomes a
ready segment whose source is byte for byte the file: on LocalStorage with the
connection cut by the client, on moto's S3 with the origin killed and restarted."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from core.storage import open_configured_storage
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, make_clip
from tests.helpers.scenes import API_TOKEN, AUTH
from tests.helpers.services import free_port
from tests.helpers.workers import running_workers

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "helpers" / "tus_upload.cjs"
NODE = shutil.which("node")
HAVE_CLIENT = (ROOT / "node_modules" / "tus-js-client" / "package.json").is_file()
CHUNK = 5 * 1024 * 1024

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON),
    pytest.mark.skipif(NODE is None, reason="node is not on PATH (scripts/setup installs it)"),
    pytest.mark.skipif(not HAVE_CLIENT, reason="node_modules/tus-js-client missing: run npm ci"),
]


@pytest.fixture(scope="module")
def clip_30mb(tmp_path_factory) -> Path:
    """A 3 s clip followed by a top-level `free` box of 30 MB of random bytes (ISO/IEC
    14496-12 §8.1.2: its contents are ignored), so the upload is large and the
    transcode short."""
    path = make_clip(tmp_path_factory.mktemp("tus") / "big.mp4", width=320, height=180, duration=3)
    filler = 30 * 1000 * 1000
    with path.open("ab") as f:
        f.write((filler + 8).to_bytes(4, "big") + b"free")
        f.write(os.urandom(filler))
    return path


class Origin:
    """`storyforge serve` as a process of its own, which the test may kill -9."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port, self.proc = env, port, None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "storyforge.cli", "serve"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the origin did not become ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


async def node_upload(options: dict, on_event=None) -> tuple[int, list[dict]]:
    proc = await asyncio.create_subprocess_exec(
        NODE, str(SCRIPT), json.dumps(options), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    events = []
    assert proc.stdout is not None
    async with asyncio.timeout(300):
        async for line in proc.stdout:
            event = json.loads(line)
            events.append(event)
            if on_event is not None:
                on_event(event)
        return await proc.wait(), events


async def scene_and_user(base: str) -> tuple[str, str]:
    async with aiohttp.ClientSession(base, headers={"Authorization": AUTH}) as s:
        r = await s.post("/api/v1/users", json={"username": "tus" + os.urandom(4).hex()})
        user = (await r.json())["id"]
        r = await s.post("/api/v1/scenes", json={"title": "Resumed"})
        return (await r.json())["id"], user


@pytest.mark.parametrize("interruption", ["connection-cut", "origin-restart"])
async def test_tus_js_client_resumes_and_the_clip_becomes_ready(
    interruption, settings, clip_30mb, tmp_path, request
):
    if interruption == "origin-restart":  # on S3, through moto's server
        settings = dataclasses.replace(
            settings,
            storage="s3",
            s3_endpoint_url=request.getfixturevalue("moto_endpoint"),
            s3_access_key="test",
            s3_secret_key="test",
        )
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": settings.database_url,
        "STORAGE": settings.storage,
        "STORAGE_ROOT": str(settings.storage_root),
        "S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "S3_ACCESS_KEY_ID": settings.s3_access_key or "",
        "S3_SECRET_ACCESS_KEY": settings.s3_secret_key or "",
        "API_TOKENS": API_TOKEN,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "text",
        "UPLOAD_LOCK_SECONDS": "2",
    }
    origin = Origin(env, port)
    origin.start()
    base = f"http://127.0.0.1:{port}"
    try:
        scene, user = await scene_and_user(base)
        size = clip_30mb.stat().st_size
        options = {
            "endpoint": f"{base}/api/v1/uploads",
            "file": str(clip_30mb),
            "token": API_TOKEN,
            "metadata": {"sceneId": scene, "contributor": user, "filename": "big.mp4"},
            "chunkSize": CHUNK,
            "urlStorage": str(tmp_path / "tus-urls.json"),
        }
        # 1. interrupted mid-way, inside the third chunk
        mid = 2 * CHUNK + CHUNK // 2
        if interruption == "connection-cut":
            code, first = await node_upload({**options, "stopAfter": mid})
            assert code == 3, first
        else:

            def kill_at_mid(event: dict) -> None:
                if event["event"] == "progress" and event["sent"] >= mid:
                    origin.kill()

            code, first = await node_upload(options, kill_at_mid)
            assert code == 1 and first[-1]["event"] == "error", first[-3:]
            origin.start()
        created = next(e for e in first if e["event"] == "response" and e["method"] == "POST")
        upload_url = f"{base}{created['location']}"
        offsets = [int(e["offset"]) for e in first if e["event"] == "request" and e["offset"]]
        assert offsets[:2] == [0, CHUNK] and offsets[2] == 2 * CHUNK  # 5 MiB chunks

        conn = await asyncpg.connect(settings.database_url)
        try:
            row = await conn.fetchrow(
                "SELECT received, status FROM uploads WHERE id = $1", upload_url.rsplit("/", 1)[1]
            )
        finally:
            await conn.close()
        server_offset = row["received"]
        assert row["status"] == "open" and 2 * CHUNK <= server_offset < size

        # 2. a new client finds the upload and resumes from the server's offset
        code, second = await node_upload({**options, "retryDelays": [200, 500, 1000, 2000, 4000]})
        assert code == 0, second[-5:]
        assert next(e for e in second if e["event"] == "previous")["urls"] == [upload_url]
        requests = [e for e in second if e["event"] == "request"]
        assert (requests[0]["method"], requests[0]["url"]) == ("HEAD", upload_url)
        patches = [int(e["offset"]) for e in requests if e["method"] == "PATCH"]
        assert patches[0] == server_offset  # nothing the server had was sent again
        assert all(b - a == CHUNK for a, b in zip(patches, patches[1:], strict=False))
        final = [e for e in second if e["event"] == "response" and e["location"]]
        status_url = final[-1]["location"]
        assert status_url.startswith("/api/v1/segments/seg_")

        # 3. the clip becomes ready, its source the very file
        async with running_workers(settings), aiohttp.ClientSession(base) as s:
            for _ in range(600):
                body = await (await s.get(status_url)).json()
                if body["status"] != "processing":
                    break
                await asyncio.sleep(0.5)
        assert body["status"] == "ready", body
        storage = await open_configured_storage(settings)
        try:
            key = f"{scene}/{body['id']}/source.mp4"
            source = await (await storage.get(settings.videos_bucket, key)).read()
        finally:
            await storage.aclose()
        assert hashlib.sha256(source).digest() == hashlib.sha256(clip_30mb.read_bytes()).digest()
    finally:
        origin.kill()
