"""The `refine` job (issue 17): a published clip re-encoded at the quality settings and
published as the next generation of its renditions.

The transcode publishes the fast stage (FAST_PRESET; the clip's lowest rung alone) so
a clip plays within seconds, then queues this job, which every other kind outranks
(`core.queue.PRIORITIES`). It downloads the clip's stored `source.mp4`, probes it,
measures its loudness again (the same measurement, so the same gain) and runs the
transcode's own command without the stills (`workers.media.ffmpeg.encode_renditions`,
at the lowest CPU priority): the same filter graph, segmentation, keyframes, audio and
loudness treatment at REFINE_PRESET, for every rung the clip fills, at RATE_CONTROL
(`encode_final`: per title, capped CRF; a rung that went over its ABR budget is made
again at ABR, and a clip whose first stage ran at its cap is refined at ABR at once). Each
refined rendition is a drop-in replacement, which is checked (every published profile
kept, the same segment durations) before anything is written. Its media segments go under new keys
(`core.layout.media_segment_name` with the generation), then one transaction fenced
by the job's lease replaces the renditions rows, marks the clip `final` and bumps the
scene's version (`catalog.publish_generation`); stitched playlists, storyboards and
exports move on with the version, and the CDN's copies of the scene's and the clip's
documents are invalidated.

The previous generation's media segments stay for SEGMENT_REMOVAL_GRACE (a player that
loaded the old playlist plays it to the end): the job defers itself that long (like a
removed clip's `remove_segment`), then deletes them and the clip's cached stills, and
invalidates them. A clip removed or a scene deleted before that cancels the job (its
fenced writes fail), and the publish itself wants the clip still ready in a live scene:
a cancelled refinement never publishes, and what it uploaded goes with the clip.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core import catalog, invalidation, layout, playlists
from core.cdn import Invalidations
from core.settings import Settings
from core.storage import Storage
from workers.jobs.transcode import (
    clip_renditions,
    clip_upload,
    download,
    final_rate_control,
    loudness_record,
    preflight,
    put_all,
    put_one,
    scene_variants,
    upload_limits,
)
from workers.media import ffmpeg
from workers.media.encoding import Rung, abr, clip_ladder, ladder_of, over_budget, stage_presets
from workers.media.loudness import GainPlan
from workers.media.probe import BadInput, Limits, MediaInfo
from workers.runtime.loop import Deferred, Handler, JobContext, PermanentError, job_workdir

log = logging.getLogger("storyforge.refine")

# progress (fractions of the job): source fetched and probed, encoded (to ENCODED),
# uploaded, published
FETCHED, ENCODED, UPLOADED = 0.03, 0.9, 0.97
ALIGN_TOLERANCE = 0.0015  # s: EXTINFs of two encodings of one clip agree to the ms
# The refinement's ffmpeg runs at the lowest CPU priority: a transcode (a new upload
# becoming playable) on the same host takes the cores first.
NICENESS = 19


def make_handler(settings: Settings, storage: Storage, invalidations: Invalidations) -> Handler:
    limits = upload_limits(settings)

    async def refine(ctx: JobContext) -> None:
        await refine_job(ctx, settings, storage, limits, invalidations)

    return refine


def mismatch(
    published: Sequence[playlists.Rendition], refined: Sequence[playlists.Rendition]
) -> str | None:
    """Why `refined` cannot replace `published` (a published profile missing, another
    frame, other segment boundaries: a player switching between them, or reloading
    a stitched variant that played the clip's lowest rung, would skip or repeat), or
    None. The refinement may add profiles: the first stage makes the lowest rung alone
    (workers/media/encoding.py `first_stage`)."""
    old = {r.profile: r for r in published}
    new = {r.profile: r for r in refined}
    if not set(old) <= set(new):
        return f"profiles {sorted(new)} lack some of the published {sorted(old)}"
    reference = next(iter(old.values()), None)
    for profile, r in new.items():
        o = old.get(profile, reference)
        if o is None:
            continue
        if profile in old and (r.width, r.height) != (o.width, o.height):
            return (
                f"{profile}: {r.width}x{r.height} differs from the published {o.width}x{o.height}"
            )
        if len(r.durations) != len(o.durations) or any(
            abs(a - b) > ALIGN_TOLERANCE for a, b in zip(r.durations, o.durations, strict=True)
        ):
            return f"{profile}: its segments do not line up with the published ones"
    return None


def old_generation_keys(
    scene_id: str, segment_id: str, previous: Mapping[str, int], generation: int
) -> list[str]:
    """Keys of the media segments of the generation before `generation`: `previous`
    holds its profiles and their segment counts."""
    return [
        layout.segment_key(scene_id, segment_id, layout.media_segment_name(p, n, generation - 1))
        for p, count in previous.items()
        for n in range(1, count + 1)
    ]


def hard_picture(metadata: Mapping[str, Any]) -> bool:
    """The first stage's capped-CRF encode ran at its VBV cap
    (`workers.jobs.transcode.rate_record`, `workers.media.encoding.at_cap`): the
    picture is too hard for per-title rate control to save anything on any rung, so
    the refinement goes straight to ABR rather than encode twice. (Over its budget
    alone says little: `ultrafast` spends up to 2.4x what `medium` does at one rate
    factor on a noisy picture.)"""
    record = metadata.get("rateControl")
    first = record.get("firstStage") if isinstance(record, Mapping) else None
    if not isinstance(first, Mapping):
        return False
    return any(isinstance(r, Mapping) and r.get("atCap") is True for r in first.values())


def final_ladder(settings: Settings, info: MediaInfo, metadata: Mapping[str, Any]) -> list[Rung]:
    """The refinement's rungs: every real rung of the clip (`clip_ladder`) at RATE_CONTROL;
    per-title turns to ABR for a picture the first stage found hard (`hard_picture`)."""
    ladder = clip_ladder(info, ladder_of(settings.ladder))
    if settings.rate_control == "per-title" and hard_picture(metadata):
        return list(abr(ladder))
    return list(final_rate_control(settings, ladder))


def _generation(ctx: JobContext) -> tuple[str, int]:
    payload = ctx.job.payload
    segment_id = str(payload.get("segment_id", ""))
    generation = payload.get("generation")
    if not layout.is_id(segment_id, "seg") or not isinstance(generation, int) or generation < 2:
        raise PermanentError("malformed refine job payload")
    return segment_id, generation


async def refine_job(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    limits: Limits,
    invalidations: Invalidations,
) -> None:
    segment_id, generation = _generation(ctx)
    async with ctx.pool.acquire() as conn:
        target = await catalog.refine_target(conn, segment_id)
    if target is None or not target.refinable:
        raise PermanentError("the clip was removed or its scene deleted: nothing to refine")
    if target.generation < generation - 1:
        raise PermanentError(f"generation {generation - 1} of the clip is not published")
    if target.generation == generation - 1:
        previous = await _encode_and_publish(
            ctx, settings, storage, limits, invalidations, target, generation
        )
        # players holding the previous generation's playlists finish them first
        raise Deferred(
            settings.segment_removal_grace,
            {"purge_after": time.time() + settings.segment_removal_grace, "previous": previous},
            "the previous generation outlives it a while",
        )
    if target.generation > generation:
        return  # a later refinement took over: its job removes this one's predecessor
    purge_after = ctx.job.payload.get("purge_after")
    if not isinstance(purge_after, int | float):  # published, but the deferral was lost
        purge_after = time.time() + settings.segment_removal_grace
    left = float(purge_after) - time.time()
    if left > 0:
        raise Deferred(
            left, {"purge_after": purge_after}, "the previous generation outlives it a while"
        )
    await _purge_previous(ctx, settings, storage, invalidations, target, generation)


async def _encode_and_publish(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    limits: Limits,
    invalidations: Invalidations,
    target: catalog.RefineTarget,
    generation: int,
) -> dict[str, int]:
    """Encode, check and publish the next generation; the published one's profiles and
    segment counts (what `_purge_previous` deletes)."""
    scene_id, segment_id = target.scene_id, target.id
    videos = settings.videos_bucket
    async with ctx.pool.acquire() as conn:
        published = await catalog.segment_clip(conn, scene_id, segment_id)
    if published is None:
        raise PermanentError("the clip was removed or its scene deleted: nothing to refine")
    previous = {p: len(r.durations) for p, r in published.renditions.items()}
    async with job_workdir(ctx.job) as work:
        source = work / "source"
        await download(
            storage, videos, layout.segment_key(scene_id, segment_id, "source.mp4"), source
        )
        try:
            info, loudness = await preflight(settings, source, limits)
        except BadInput as exc:  # it was published from this very file
            raise PermanentError(f"the stored source cannot be refined: {exc.reason}") from None
        await ctx.progress(FETCHED)

        async def on_progress(pct: float) -> None:  # ffmpeg's, in percent
            await ctx.progress(FETCHED + pct / 100 * (ENCODED - FETCHED))

        ladder, outputs = await encode_final(
            settings, source, work, info, loudness, target.metadata, on_progress=on_progress
        )
        renditions, _ = clip_renditions(outputs, generation)
        why = mismatch(list(published.renditions.values()), renditions)
        if why is not None:
            raise PermanentError(f"the refined renditions are no drop-in replacement: {why}")
        items = []
        for r_out, r in zip(outputs, renditions, strict=True):
            for n, path in enumerate(r_out.segments, start=1):
                name = layout.media_segment_name(r.profile, n, generation)
                items.append(clip_upload(videos, scene_id, segment_id, name, path))
        await put_all(storage, items)
        await ctx.progress(UPLOADED)
        metadata = refined_metadata(target.metadata, generation, ladder, renditions)

        async def publish() -> int | None:
            async with ctx.pool.acquire() as conn, conn.transaction():
                await ctx.fence(conn)
                return await catalog.publish_generation(
                    conn,
                    segment_id,
                    generation,
                    renditions=renditions,
                    metadata=metadata,
                    loudness=loudness_record(loudness),
                )

        version = await ctx.retrying(publish, "publish")  # until it commits or the lease ends
    if version is None:  # removed meanwhile: its objects go with the clip
        raise PermanentError("the clip was removed or its scene deleted before it was refined")
    await _write_metadata(storage, settings, scene_id, segment_id, target, metadata)
    profiles = [r.profile for r in renditions]
    # the clip's own and the scene's playlists now name the new generation's segments
    invalidations.request(
        scene_id,
        invalidation.scene_documents(
            scene_id,
            scene_variants(settings, renditions),
            query_variants=settings.invalidate_query_variants,
        )
        | invalidation.segment_documents(scene_id, segment_id, profiles),
    )
    log.info(
        "segment refined",
        extra={"sf_segment": segment_id, "sf_scene": scene_id, "sf_generation": generation},
    )
    return previous


def refined_metadata(
    metadata: Mapping[str, Any],
    generation: int,
    ladder: Sequence[Rung],
    renditions: Sequence[playlists.Rendition],
) -> dict[str, Any]:
    """What the refinement changes in the clip's `metadata.json` (seed §3.3): quality
    and generation, its profiles and variants (it may add rungs to the first stage's),
    the renditions' sizes and each rung's rate control (`crf`: its rate factor, or
    null for ABR)."""
    profiles = [r.profile for r in renditions]
    files = metadata.get("files")
    encoding = metadata.get("encoding")
    record = metadata.get("rateControl")
    changes: dict[str, Any] = {
        "quality": "final",
        "generation": generation,
        "fileSize": {
            **metadata.get("fileSize", {}),
            **{r.profile: sum(r.sizes) for r in renditions},
        },
        "rateControl": {
            **(record if isinstance(record, Mapping) else {}),
            "final": {r.name: {"crf": r.crf} for r in ladder},
        },
    }
    if isinstance(encoding, Mapping):
        changes["encoding"] = {**encoding, "profiles": profiles}
    if isinstance(files, Mapping):
        changes["files"] = {**files, "variants": {p: f"{p}.m3u8" for p in profiles}}
    return changes


async def encode_final(
    settings: Settings,
    source: Path,
    work: Path,
    info: MediaInfo,
    loudness: GainPlan,
    metadata: Mapping[str, Any],
    *,
    on_progress: ffmpeg.ProgressCallback | None = None,
    niceness: int = NICENESS,
) -> tuple[list[Rung], list[ffmpeg.RenditionOutput]]:
    """The final renditions of a clip (`final_ladder` at REFINE_PRESET) and the rungs
    they were made as. Per title, a rung whose capped CRF spent more than ABR would
    (`over_budget`) is hard content, made again as the ABR ladder makes it: never more
    bytes than RATE_CONTROL=abr, hard content unchanged."""
    ladder = final_ladder(settings, info, metadata)
    outputs = list(
        await ffmpeg.encode_renditions(
            source,
            work / "out",
            info,
            ladder,
            presets=stage_presets(ladder, settings.refine_preset),
            loudness=loudness,
            niceness=niceness,
            on_progress=on_progress,
            stall_seconds=settings.ffmpeg_stall_seconds,
        )
    )
    over = [
        i for i, r in enumerate(ladder) if over_budget(r, outputs[i].durations, outputs[i].sizes)
    ]
    if over:
        again = abr([ladder[i] for i in over])
        redone = await ffmpeg.encode_renditions(
            source,
            work / "abr",
            info,
            again,
            presets=stage_presets(again, settings.refine_preset),
            loudness=loudness,
            niceness=niceness,
            stall_seconds=settings.ffmpeg_stall_seconds,
        )
        for i, rung, out in zip(over, again, redone, strict=True):
            ladder[i], outputs[i] = rung, out
    return ladder, outputs


async def _write_metadata(
    storage: Storage,
    settings: Settings,
    scene_id: str,
    segment_id: str,
    target: catalog.RefineTarget,
    changes: dict[str, object],
) -> None:
    """`metadata.json` (seed §3.3) again, with the refined sizes and quality."""
    document = {k: v for k, v in target.metadata.items() if k != "storyboard"} | changes
    body = json.dumps(document, indent=2).encode()
    await put_one(
        storage, clip_upload(settings.videos_bucket, scene_id, segment_id, "metadata.json", body)
    )


async def _write_playlists(
    storage: Storage,
    settings: Settings,
    scene_id: str,
    segment_id: str,
    renditions: Sequence[playlists.Rendition],
) -> None:
    """`{profile}.m3u8` and `master.m3u8` of the clip, as the transcode stores them."""
    target = playlists.target_duration(r.durations for r in renditions)
    documents = {
        f"{r.profile}.m3u8": playlists.clip_media_playlist(r, target=target) for r in renditions
    }
    documents["master.m3u8"] = playlists.clip_master_playlist(renditions)
    for name, text in documents.items():
        await put_one(
            storage, clip_upload(settings.videos_bucket, scene_id, segment_id, name, text.encode())
        )


async def _purge_previous(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    invalidations: Invalidations,
    target: catalog.RefineTarget,
    generation: int,
) -> None:
    """After the grace period: the previous generation's media segments and the clip's
    stills (grabbed from either generation; grabbed again on demand) deleted, then
    invalidated; the job completes."""
    scene_id, segment_id = target.scene_id, target.id
    async with ctx.pool.acquire() as conn:
        clip = await catalog.segment_clip(conn, scene_id, segment_id)
    if clip is None:
        return  # removed meanwhile: its remove_segment job deletes every object
    videos = settings.videos_bucket
    renditions = list(clip.renditions.values())
    if all(r.generation == generation for r in renditions):
        # the stored copies of the clip's playlists (the seed's layout; the origin builds
        # them from Postgres) name the new generation before the old one's segments go
        await _write_playlists(storage, settings, scene_id, segment_id, renditions)
    previous = ctx.job.payload.get("previous")
    if not isinstance(previous, dict):  # (a job deferred before it was recorded)
        previous = {r.profile: len(r.durations) for r in renditions}
    keys = old_generation_keys(scene_id, segment_id, previous, generation)
    for key in keys:
        await storage.delete(videos, key)
    await storage.delete_prefix(videos, layout.segment_prefix(scene_id, segment_id) + "stills/")
    await invalidations.invalidate(
        scene_id,
        invalidation.generation_gone(scene_id, segment_id, previous, generation - 1),
    )
