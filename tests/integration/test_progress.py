"""`progress` in one unit (issue 24): every job kind reports the fraction of itself
done, in [0, 1], through the real job loop; a finished job says 1; the segment and
export APIs and `storyforge jobs show` answer the same fraction. One of each kind runs
here (transcode, refine, export, webhook, expire_upload, remove_segment,
delete_scene), each handler wrapped only to note what it passes to `ctx.progress`."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core import db, queue
from core.cdn import open_invalidations
from core.settings import LadderRung, Settings
from core.storage import open_configured_storage
from origin.app import create_app
from storyforge import jobs as jobs_cli
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, make_clip
from tests.helpers.exports import wait_export
from tests.helpers.jobs import wait_job
from tests.helpers.scenes import API_TOKEN, AUTH, new_scene, tus_create, upload, wait_done
from tests.helpers.servers import OriginTestServer
from tests.helpers.webhooks import SECRET, Receiver
from tests.helpers.workers import running_workers
from workers.runtime.loop import Handler, JobContext
from workers.runtime.main import handlers

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]


def recording(kind: str, handler: Handler, seen: dict[str, list[float]]) -> Handler:
    """`handler`, noting every value it passes to `ctx.progress` under `kind`."""

    async def run(ctx: JobContext) -> None:
        report: Callable[[float], Awaitable[None]] = ctx.progress

        async def progress(done: float) -> None:
            seen[kind].append(done)
            await report(done)

        ctx.progress = progress  # type: ignore[method-assign]
        await handler(ctx)

    return run


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.2)


async def test_every_job_kind_reports_a_fraction(module_db, tmp_path):
    receiver = Receiver()
    hook = web.AppRunner(receiver.app())
    await hook.setup()
    site = web.TCPSite(hook, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = Settings.from_env(
        {},
        database_url=module_db,
        storage_root=tmp_path / "storage",
        api_tokens=(API_TOKEN,),
        log_format="text",
        ladder=(LadderRung("180p", 320, 180, 300_000, 64_000),),
        refine=True,
        segment_removal_grace=0.0,
        webhook_urls=(f"http://127.0.0.1:{port}/hook",),
        webhook_secret=SECRET,
        webhook_allow_private=True,
    )
    pool = await db.connect_pool(module_db, size=8)
    storage = await open_configured_storage(settings)
    invalidations = await open_invalidations(settings, pool)
    seen: dict[str, list[float]] = defaultdict(list)
    wrapped = {
        kind: recording(kind, handler, seen)
        for kind, handler in handlers(settings, storage, invalidations).items()
    }
    assert sorted(wrapped) == sorted(queue.JOB_KINDS)
    try:
        async with TestClient(OriginTestServer(create_app(settings))) as client:
            client.headers_auth = {"Authorization": AUTH}
            scene, (user,) = await new_scene(client)
            clips = [
                make_clip(tmp_path / f"c{i}.mp4", width=320, height=180, duration=2) for i in (1, 2)
            ]
            async with running_workers(settings, handlers=wrapped, lease_seconds=30):
                segs = [
                    (await upload(client, scene, user, path, sequence=i))["segmentId"]
                    for i, path in enumerate(clips, start=1)
                ]
                for seg in segs:
                    ready = await wait_done(client, seg, timeout=300)
                    assert ready["status"] == "ready" and ready["progress"] == 1, ready

                async def refined() -> bool:
                    rows = await pool.fetch(
                        "SELECT status FROM jobs WHERE kind = 'refine' AND scene_id = $1", scene
                    )
                    return len(rows) == 2 and {r["status"] for r in rows} == {"succeeded"}

                await until(refined, 300, "both clips refined")
                r = await client.post(
                    f"/api/v1/scenes/{scene}/export", json={"quality": "180p"},
                    headers=client.headers_auth,
                )  # fmt: skip
                asked = await r.json()
                assert r.status == 202 and 0 <= asked["progress"] < 1, asked
                done = await wait_export(client, asked["exportId"])
                assert done["status"] == "ready" and done["progress"] == 1, done

                url = await tus_create(client, scene, user, 1000, filename="clip.mp4")
                upload_id = url.rsplit("/", 1)[1]
                await pool.execute("UPDATE uploads SET expires_at = now() WHERE id = $1", upload_id)
                expire = await pool.fetchval(
                    "UPDATE jobs SET run_after = now() WHERE dedupe_key = $1 RETURNING id",
                    f"expire_upload:{upload_id}",
                )
                await wait_job(pool, expire, timeout=60)

                r = await client.delete(f"/api/v1/segments/{segs[1]}", headers=client.headers_auth)
                assert r.status == 202
                await wait_job(pool, (await r.json())["jobId"], timeout=60)

                async def delivered() -> bool:  # (a scene's deletion cancels its jobs)
                    rows = await pool.fetch(
                        "SELECT status FROM jobs WHERE kind = 'webhook' AND scene_id = $1", scene
                    )
                    return bool(rows) and {r["status"] for r in rows} == {"succeeded"}

                await until(delivered, 120, "every webhook delivered")
                r = await client.delete(f"/api/v1/scenes/{scene}", headers=client.headers_auth)
                assert r.status == 202
                await wait_job(pool, (await r.json())["jobId"], timeout=60)
                await until(delivered, 120, "scene.deleted delivered")
    finally:
        await invalidations.aclose()
        await storage.aclose()
        await hook.cleanup()

    rows = await pool.fetch(
        "SELECT id FROM jobs WHERE scene_id = $1 OR kind = 'expire_upload'", scene
    )
    ran = [await queue.get_job(pool, r["id"]) for r in rows]
    await pool.close()
    assert {j.kind for j in ran if j is not None} == set(queue.JOB_KINDS)
    for job in ran:
        assert job is not None and job.status == "succeeded", job
        assert job.progress == 1, (job.kind, job.progress)
    # what each kind's handler passed: fractions, never over 1 (a percentage would be)
    reported = {kind: values for kind, values in seen.items() if values}
    assert {"transcode", "refine", "export", "delete_scene", "remove_segment"} <= set(reported)
    for kind, values in reported.items():
        assert all(0 <= v <= 1 for v in values), (kind, values)
        assert max(values) < 1, (kind, values)  # 1 is the completion's to write
    assert any(0 < v < 1 for v in reported["transcode"])
    shown = jobs_cli.describe(ran[0], {})
    assert "\nprogress    1\n" in shown, shown
