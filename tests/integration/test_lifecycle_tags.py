"""Every object a published clip leaves behind carries the `type` tag the storage
lifecycle rules key on (DESIGN.md "Storage": source, hls, thumbnail, export,
internal), on both backends: LocalStorage and S3 (moto over HTTP)."""

from __future__ import annotations

import dataclasses

import pytest

from core import db
from core.storage import open_configured_storage
from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON, SMALL_PAIR, make_clip
from tests.helpers.jobs import keys_under, wait_job
from tests.helpers.scenes import new_scene, upload, wait_done

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)]


@pytest.fixture
def ladder():
    """Two small rungs: a clip of every kind of object, cheaply."""
    return SMALL_PAIR


# what each file is, independently of core.layout's table (infra/storage.tf's rules
# move `source` to Glacier, keep `hls` and `thumbnail`, expire `internal`)
EXPECTED = {
    ".ts": "hls",
    ".m3u8": "hls",
    ".json": "hls",
    ".jpg": "thumbnail",
    ".vtt": "thumbnail",
}


@pytest.fixture(params=["local", "s3"])
def settings(request, settings):  # noqa: F811 - the conftest fixture on either backend
    if request.param == "local":
        return settings
    return dataclasses.replace(
        settings,
        storage="s3",
        s3_endpoint_url=request.getfixturevalue("moto_endpoint"),
        s3_access_key="test",
        s3_secret_key="test",
    )


async def test_every_object_of_a_published_clip_has_its_type_tag(
    origin_client, settings, run_workers, tmp_path
):
    client = origin_client
    scene, (user,) = await new_scene(client)
    # 640x360: both rungs (a source smaller than a rung gets none of it, issue 26)
    clip = make_clip(tmp_path / "c.mp4", width=640, height=360, duration=3)
    sent = await upload(client, scene, user, clip)
    run_workers()
    assert (await wait_done(client, sent["segmentId"], timeout=240))["status"] == "ready"
    pool = await db.connect_pool(settings.database_url, size=1)
    try:  # the poster is written once the clip is published
        await wait_job(pool, sent["jobId"])
    finally:
        await pool.close()

    storage = await open_configured_storage(settings)
    tags: dict[str, str] = {}
    try:
        for bucket, prefix in [
            (settings.videos_bucket, f"{scene}/"),
            (settings.assets_bucket, f"scenes/{scene}/"),
            (settings.exports_bucket, f"{scene}/"),
            (settings.internal_bucket, f"jobs/{sent['jobId']}/"),
        ]:
            for key in await keys_under(storage, bucket, prefix):
                tags[f"{bucket}/{key}"] = (await storage.tags(bucket, key)).get("type", "")
    finally:
        await storage.aclose()
    videos = {k: t for k, t in tags.items() if k.startswith(settings.videos_bucket + "/")}
    internal = {k: t for k, t in tags.items() if k.startswith(settings.internal_bucket + "/")}
    assets = {k: t for k, t in tags.items() if k.startswith(settings.assets_bucket + "/")}
    assert len(videos) >= 10 and internal and assets, tags
    for key, tag in videos.items():
        name = key.rsplit("/", 1)[1]
        expected = "source" if name == "source.mp4" else EXPECTED["." + name.rsplit(".", 1)[1]]
        assert tag == expected, key
    assert set(internal.values()) == {"internal"}, internal  # upload, log, frames
    assert assets == {f"{settings.assets_bucket}/scenes/{scene}/poster.jpg": "thumbnail"}
