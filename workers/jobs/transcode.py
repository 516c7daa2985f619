"""The `transcode` job: an uploaded clip becomes a published segment of its scene.

Download the upload, validate it with ffprobe, measure its loudness (an audio-only pass,
unless LOUDNESS_TARGET=off), run the one ffmpeg pass (`stage_ladder`: the clip's lowest
real rung alone when a refinement follows, issue 26), upload every output under
`{sceneId}/{segmentId}/` (the source's copy and each finished media segment while
ffmpeg still runs, the rest after it; the keys are deterministic, so a retry
overwrites only its own unpublished objects), then publish in one transaction fenced
by the job's lease: segment ready, renditions written (with the loudness record),
scene version bumped, job complete, and (unless REFINE=off) a low-priority `refine`
job queued to re-encode the clip at the quality settings (workers/jobs/refine.py),
told by the clip's metadata (`rateControl`) what the first stage measured. Nothing is visible to players before
that commit. Then the poster (when this is the scene's first clip) and a CDN
invalidation of the scene's stitched documents, coalesced per scene (core/cdn.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from core import catalog, invalidation, layout, playlists, queue
from core.cdn import Invalidations
from core.settings import Settings
from core.storage import ObjectNotFound, Storage
from workers.media import ffmpeg
from workers.media.encoding import (
    Rung,
    abr,
    at_cap,
    budget,
    clip_ladder,
    first_stage,
    ladder_of,
    over_budget,
    per_title,
    stage_presets,
)
from workers.media.loudness import GainPlan, plan_gain
from workers.media.probe import BadInput, Limits, MediaInfo
from workers.runtime.loop import JobContext, PermanentError, job_workdir

log = logging.getLogger("storyforge.transcode")
UPLOAD_CONCURRENCY = 8
# progress (fractions of the job): upload probed, encoded (to ENCODED), uploaded, published
PROBED, ENCODED, UPLOADED = 0.02, 0.9, 0.95


def clip_renditions(
    out: ffmpeg.TranscodeOutput | Sequence[ffmpeg.RenditionOutput], generation: int = 1
) -> tuple[list[playlists.Rendition], int]:
    """Renditions (of `generation`) with measured bandwidths (RFC 8216 §4.3.4.2), and
    the clip's target duration shared by all of them (§6.2.4)."""
    outputs = out.renditions if isinstance(out, ffmpeg.TranscodeOutput) else out
    target = playlists.target_duration(r.durations for r in outputs)
    result = []
    for r in outputs:
        result.append(
            playlists.Rendition(
                profile=r.name,
                width=r.width,
                height=r.height,
                frame_rate=r.fps,
                codecs=r.codecs,
                durations=r.durations,
                sizes=r.sizes,
                bandwidth_peak=playlists.peak_bandwidth(r.durations, r.sizes, target),
                bandwidth_average=playlists.average_bandwidth(r.durations, r.sizes),
                generation=generation,
                first_pts=r.first_pts,
            )
        )
    return result, target


def storyboard_document(
    segment_id: str,
    duration: float,
    renditions: Sequence[playlists.Rendition],
    cues: Sequence[playlists.StoryboardCue],
) -> bytes:
    """The clip's stored `storyboard.vtt`: the bytes the origin serves for the clip
    (`playlists.clip_storyboard_vtt` of the rows this publish writes; sheet URIs
    relative to the clip's folder)."""
    clip = playlists.Clip(segment_id, duration, {r.profile: r for r in renditions}, tuple(cues))
    return playlists.clip_storyboard_vtt(clip).encode()


def metadata_document(
    *,
    scene_id: str,
    segment_id: str,
    sequence: int,
    duration: float,
    created_at: datetime,
    renditions: list[playlists.Rendition],
    source_size: int,
    other_sizes: int,
    loudness: GainPlan | None = None,
) -> dict[str, Any]:
    """`metadata.json` as seed §3.3. fileSize.{profile} counts that rendition's .ts
    bytes; fileSize.total counts every stored file of the segment but metadata.json.
    `loudness` adds what loudness matching measured and did (workers/media/loudness.py)."""
    rendition_sizes = {r.profile: sum(r.sizes) for r in renditions}
    extra = {"loudness": loudness.metadata()} if loudness is not None else {}
    return {
        "segmentId": segment_id,
        "sceneId": scene_id,
        "sequence": sequence,
        "duration": round(duration, 3),
        "createdAt": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "encoding": {
            "codec": "h264",
            "profiles": [r.profile for r in renditions],
            "audioCodec": "aac",
        },
        "files": {
            "source": "source.mp4",
            "master": "master.m3u8",
            "variants": {r.profile: f"{r.profile}.m3u8" for r in renditions},
            "thumbnail": "thumbnail.jpg",
            "thumbnailLarge": "thumbnail_large.jpg",
            "storyboard": "storyboard.vtt",
        },
        "fileSize": {
            "total": source_size + sum(rendition_sizes.values()) + other_sizes,
            "source": source_size,
            **rendition_sizes,
        },
        **extra,
    }


async def download(storage: Storage, bucket: str, key: str, dest: Path) -> int:
    try:
        obj = await storage.get(bucket, key)
    except ObjectNotFound:
        raise PermanentError("the uploaded file is missing from storage") from None
    size = 0
    with dest.open("wb") as f:
        async with obj:
            async for chunk in obj:
                size += len(chunk)
                await asyncio.to_thread(f.write, chunk)
    return size


class Upload(NamedTuple):
    """One object a job stores: its body under `key`, with `meta`'s Content-Type,
    Cache-Control and `type` tag."""

    bucket: str
    key: str
    body: Path | bytes
    meta: layout.FileMeta


def clip_upload(
    bucket: str, scene_id: str, segment_id: str, name: str, body: Path | bytes
) -> Upload:
    """The clip's file `name`, stored under its segment's prefix as `layout.file_meta`
    says (the transcode's outputs, a refinement's segments and documents)."""
    key = layout.segment_key(scene_id, segment_id, name)
    return Upload(bucket, key, body, layout.file_meta(name))


async def put_one(storage: Storage, upload: Upload) -> None:
    meta = upload.meta
    await storage.put(
        upload.bucket,
        upload.key,
        upload.body,
        content_type=meta.content_type,
        cache_control=meta.cache_control,
        tags={"type": meta.tag},
    )


async def put_all(storage: Storage, uploads: Sequence[Upload]) -> None:
    """`put_one` each of `uploads`, with bounded concurrency."""
    sem = asyncio.Semaphore(UPLOAD_CONCURRENCY)

    async def one(upload: Upload) -> None:
        async with sem:
            await put_one(storage, upload)

    await asyncio.gather(*(one(upload) for upload in uploads))


def upload_limits(settings: Settings) -> Limits:
    """What an upload may be (MAX_CLIP_SECONDS, MAX_UPLOAD_BYTES, MAX_PIXEL_RATE)."""
    return Limits(
        max_duration=settings.max_clip_seconds,
        max_bytes=settings.max_upload_bytes,
        max_pixel_rate=settings.max_pixel_rate,
    )


def make_handler(
    settings: Settings, storage: Storage, invalidations: Invalidations
) -> Callable[[JobContext], Awaitable[None]]:
    limits = upload_limits(settings)

    async def handle(ctx: JobContext) -> None:
        await transcode_job(ctx, settings, storage, limits, invalidations)

    return handle


async def _fail_segment(
    ctx: JobContext, settings: Settings, storage: Storage, seg: catalog.Segment, reason: str
) -> None:
    """The clip fails for good: what its transcode stored goes first (no attempt of it
    runs again until this handler returns, so nothing else writes there meanwhile)."""
    await _forget_stored(settings, storage, seg)
    async with ctx.pool.acquire() as conn:
        await catalog.fail_segment(conn, seg.id, reason, webhooks=settings.webhook_urls)


async def _forget_stored(settings: Settings, storage: Storage, seg: catalog.Segment) -> None:
    """Remove what a transcode that never publishes stored under its clip's folder."""
    await storage.delete_prefix(settings.videos_bucket, layout.segment_prefix(seg.scene_id, seg.id))


async def _cancelled_for_good(ctx: JobContext) -> bool:
    job = await queue.get_job(ctx.pool, ctx.job.id)
    return job is not None and job.status == "cancelled"


async def transcode_job(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    limits: Limits,
    invalidations: Invalidations,
) -> None:
    job = ctx.job
    segment_id = str(job.payload.get("segment_id", ""))
    upload_key = str(job.payload.get("upload_key", ""))
    if not layout.is_id(segment_id, "seg") or upload_key != layout.upload_key(job.id):
        raise PermanentError("malformed transcode job payload")
    async with ctx.pool.acquire() as conn:
        seg = await catalog.segment_for_job(conn, segment_id)
    if seg is None or not seg.scene_live:
        raise PermanentError("the segment or its scene no longer exists")
    if seg.status != "processing":
        return  # already published (or failed) by an earlier attempt
    try:
        await _transcode_and_publish(ctx, settings, storage, limits, seg, invalidations)
    except BadInput as exc:
        await _fail_segment(ctx, settings, storage, seg, exc.reason)
        raise PermanentError(exc.reason) from None
    except PermanentError as exc:
        await _fail_segment(ctx, settings, storage, seg, str(exc))
        raise
    except (queue.LeaseLost, asyncio.CancelledError):
        # cancelled for good (`storyforge jobs cancel`: no attempt follows, a cancelled
        # clip is uploaded again as a new one; the worker learns it from a fenced write
        # or by being cancelled) rather than stopped or taken over: the segments stored
        # as ffmpeg finished them go (the handler's last seconds)
        if await asyncio.shield(_cancelled_for_good(ctx)):
            await asyncio.shield(_forget_stored(settings, storage, seg))
        raise
    except Exception as exc:
        if job.attempts >= job.max_attempts:
            await _fail_segment(
                ctx,
                settings,
                storage,
                seg,
                f"transcoding failed after {job.attempts} attempts: {exc}",
            )
        raise


class Uploads:
    """Objects stored in the background while the job goes on (at most
    UPLOAD_CONCURRENCY at a time): the upload's copy beside the probe and the encode,
    media segments as ffmpeg finishes them. `wait` raises the first failure; `aclose`
    drops what has not started and lets what is being written finish (a local write
    runs in a thread that a cancel would not stop), so nothing lands after it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.sem = asyncio.Semaphore(UPLOAD_CONCURRENCY)
        self.tasks: list[asyncio.Task[None]] = []
        self.writing: set[asyncio.Future[None]] = set()
        self.closed = False
        self.sizes: dict[str, int] = {}  # key -> the file's size when it was stored

    def start(self, upload: Upload) -> None:
        if isinstance(upload.body, Path):
            self.sizes[upload.key] = upload.body.stat().st_size
        self.tasks.append(asyncio.ensure_future(self._put(upload)))

    async def _put(self, upload: Upload) -> None:
        async with self.sem:
            if self.closed:
                return
            write = asyncio.ensure_future(put_one(self.storage, upload))
            self.writing.add(write)
            write.add_done_callback(self.writing.discard)
            await asyncio.shield(write)

    def stored(self, upload: Upload) -> bool:
        """`upload` was started with the same bytes (a file: of the same size; ffmpeg
        never rewrites a finished segment)."""
        return isinstance(upload.body, Path) and (
            self.sizes.get(upload.key) == upload.body.stat().st_size
        )

    async def wait(self) -> None:
        await asyncio.gather(*self.tasks)

    async def aclose(self) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.writing, return_exceptions=True)


def stage_ladder(settings: Settings, info: MediaInfo) -> tuple[Rung, ...]:
    """What the transcode encodes: the clip's real rungs (`clip_ladder`: none a source
    is smaller than), the lowest alone when a refinement follows (`first_stage`), at
    the first stage's rate control (RATE_CONTROL: per-title is capped CRF, whose
    measured rate tells the refinement how hard the picture is)."""
    ladder = clip_ladder(info, ladder_of(settings.ladder))
    if settings.refine:
        ladder = first_stage(ladder)
    return final_rate_control(settings, ladder)


def final_rate_control(settings: Settings, ladder: Sequence[Rung]) -> tuple[Rung, ...]:
    """`ladder` at RATE_CONTROL: capped CRF at PER_TITLE_CRF, or ABR."""
    if settings.rate_control == "per-title":
        return per_title(ladder, settings.per_title_crf.of)
    return abr(ladder)


def rate_record(ladder: Sequence[Rung], out: Sequence[ffmpeg.RenditionOutput]) -> dict[str, Any]:
    """What the first stage's encode says of the picture, kept in the clip's metadata
    (`rateControl`) for its refinement: per rung, the rate control, the measured rate
    against the ABR `budget`, whether capped CRF went over it, and whether it ran at
    its VBV cap (`at_cap`: hard content, refined at ABR at once)."""
    rungs = {}
    for rung, r in zip(ladder, out, strict=True):
        rungs[rung.name] = {
            "crf": rung.crf,
            "bitrate": round(8 * sum(r.sizes) / max(sum(r.durations), 1e-3)),
            "budget": budget(rung),
            "overBudget": over_budget(rung, r.durations, r.sizes),
            "atCap": at_cap(rung, r.durations, r.sizes),
        }
    return {"firstStage": rungs}


async def _transcode_and_publish(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    limits: Limits,
    seg: catalog.Segment,
    invalidations: Invalidations,
) -> None:
    job = ctx.job
    segment_id, scene_id = seg.id, seg.scene_id
    videos, internal = settings.videos_bucket, settings.internal_bucket
    async with job_workdir(job) as work:
        source = work / "upload"
        source_size = await download(storage, internal, layout.upload_key(job.id), source)
        if source_size == 0:
            raise BadInput("the upload is empty")
        if job.attempts > 1:
            # an earlier attempt may have left objects: start from a clean prefix
            await storage.delete_prefix(videos, layout.segment_prefix(scene_id, segment_id))
        uploads = Uploads(storage)
        try:
            await _encode_and_publish(
                ctx, settings, storage, limits, seg, invalidations, work, source, uploads
            )
        finally:
            await uploads.aclose()


async def _encode_and_publish(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    limits: Limits,
    seg: catalog.Segment,
    invalidations: Invalidations,
    work: Path,
    source: Path,
    uploads: Uploads,
) -> None:
    job = ctx.job
    segment_id, scene_id = seg.id, seg.scene_id
    videos, internal = settings.videos_bucket, settings.internal_bucket
    source_size = source.stat().st_size

    def seg_item(name: str, body: Path | bytes) -> Upload:
        return clip_upload(videos, scene_id, segment_id, name, body)

    info, loudness = await preflight(settings, source, limits)
    await ctx.progress(PROBED)
    # what does not wait for the encode is stored beside it: the source's copy now
    # (an upload the probe refuses stores nothing), each media segment as ffmpeg
    # finishes it
    uploads.start(seg_item("source.mp4", source))

    async def on_progress(pct: float) -> None:  # ffmpeg's, in percent
        await ctx.progress(PROBED + pct / 100 * (ENCODED - PROBED))

    async def on_segment(_rung: Rung, path: Path) -> None:
        uploads.start(seg_item(path.name, path))

    ladder = stage_ladder(settings, info)
    out = await ffmpeg.transcode(
        source,
        work / "out",
        info,
        ladder,
        presets=stage_presets(ladder, settings.fast_preset),
        on_progress=on_progress,
        frame_interval=settings.timeline_interval,
        stall_seconds=settings.ffmpeg_stall_seconds,
        loudness=loudness,
        on_segment=on_segment,
    )
    renditions, target = clip_renditions(out)
    items = []
    other_sizes = 0
    for r_out, r in zip(out.renditions, renditions, strict=True):
        for path in r_out.segments:
            item = seg_item(path.name, path)
            if not uploads.stored(item):
                items.append(item)
        text = playlists.clip_media_playlist(r, target=target).encode()
        items.append(seg_item(f"{r.profile}.m3u8", text))
        other_sizes += len(text)
    master = playlists.clip_master_playlist(renditions).encode()
    duration = round(sum(renditions[0].durations), 3)
    vtt = storyboard_document(segment_id, duration, renditions, out.storyboard_cues)
    extra_files = [out.thumbnail, out.thumbnail_large, *out.storyboard_sheets]
    items.append(seg_item("master.m3u8", master))
    items.append(seg_item("storyboard.vtt", vtt))
    items.extend(seg_item(p.name, p) for p in extra_files)
    other_sizes += len(master) + len(vtt) + sum(p.stat().st_size for p in extra_files)
    document = metadata_document(
        scene_id=scene_id,
        segment_id=segment_id,
        sequence=seg.sequence,
        duration=duration,
        created_at=datetime.now(UTC),
        renditions=renditions,
        source_size=source_size,
        other_sizes=other_sizes,
        loudness=loudness,
    )
    document["rateControl"] = rate_record(ladder, out.renditions)
    items.append(seg_item("metadata.json", json.dumps(document, indent=2).encode()))
    # internal artefacts: the ffmpeg log and the timeline frames
    private = "private, no-store"
    log_meta = layout.FileMeta("text/plain; charset=utf-8", private, layout.INTERNAL_TAG)
    items.append(Upload(internal, layout.job_log_key(job.id), out.log, log_meta))
    frame_meta = layout.FileMeta("image/jpeg", private, layout.INTERNAL_TAG)
    items.extend(
        Upload(internal, layout.job_frame_key(job.id, f.name), f, frame_meta) for f in out.frames
    )
    for item in items:
        uploads.start(item)
    await uploads.wait()
    await ctx.progress(UPLOADED)
    published = await ctx.retrying(  # until it commits or the lease ends
        lambda: _publish(
            ctx,
            settings,
            segment_id,
            duration,
            document,
            out,
            renditions,
            loudness_record(loudness),
        ),
        "publish",
    )
    if published:
        poster = await _write_poster(
            ctx, settings, storage, scene_id, segment_id, out.thumbnail_large
        )
        # the stitched documents (and the poster) changed: coalesced per scene; every
        # variant of the scene, not only the clip's rungs, plays the clip
        stale = invalidation.scene_documents(
            scene_id,
            scene_variants(settings, renditions),
            query_variants=settings.invalidate_query_variants,
        )
        invalidations.request(scene_id, stale | invalidation.poster(scene_id) if poster else stale)
    log.info(
        "segment published" if published else "segment was already published",
        extra={"sf_segment": segment_id, "sf_scene": scene_id, "sf_duration": duration},
    )


def scene_variants(settings: Settings, renditions: Sequence[playlists.Rendition]) -> list[str]:
    """The stitched variants a clip's publish can change: every rung of the ladder
    (a variant a clip lacks plays its largest real rendition) and the clip's own."""
    return list(
        dict.fromkeys([*(r.name for r in settings.ladder), *(r.profile for r in renditions)])
    )


async def preflight(settings: Settings, source: Path, limits: Limits) -> tuple[MediaInfo, GainPlan]:
    """The upload probed and validated, and loudness matching's decision for it: measured
    first (an audio-only pass, beside the probe's picture check) unless it is off or the
    clip has no audio."""
    info, measured = await ffmpeg.probe_and_measure(
        source, limits, loudness=settings.loudness_target is not None
    )
    return info, plan_gain(
        measured,
        target=settings.loudness_target,
        max_gain=settings.loudness_max_gain,
        has_audio=info.has_audio,
    )


def loudness_record(plan: GainPlan) -> catalog.Loudness:
    m = plan.measured
    return catalog.Loudness(
        mode=plan.mode,
        input_loudness=m.integrated if m else None,
        input_true_peak=m.true_peak if m else None,
        gain=plan.gain if plan.mode in ("linear", "dynamic") else None,
    )


async def _publish(
    ctx: JobContext,
    settings: Settings,
    segment_id: str,
    duration: float,
    document: dict[str, Any],
    out: ffmpeg.TranscodeOutput,
    renditions: list[playlists.Rendition],
    loudness: catalog.Loudness,
) -> bool:
    """One transaction fenced by the job's lease: the segment published (ready,
    renditions, scene version) and the job completed, or nothing."""
    stored = {
        **document,
        "storyboard": [
            {
                "start": c.start,
                "end": c.end,
                "sheet": c.sheet,
                "x": c.x,
                "y": c.y,
                "w": c.w,
                "h": c.h,
            }
            for c in out.storyboard_cues
        ],
    }
    async with ctx.pool.acquire() as conn, conn.transaction():
        await ctx.fence(conn)
        version = await catalog.publish_segment(
            conn,
            segment_id,
            duration=duration,
            metadata=stored,
            renditions=renditions,
            webhooks=settings.webhook_urls,
            loudness=loudness,
        )
        if version is None:
            return False
        if settings.refine:
            await enqueue_refine(conn, settings, str(document["sceneId"]), segment_id)
        await queue.complete(conn, ctx.job.id, ctx.lease_token)
    return True


async def enqueue_refine(
    conn: queue.Conn, settings: Settings, scene_id: str, segment_id: str
) -> None:
    """Queue the clip's refinement (issue 17), in the publishing transaction: it runs
    below every other kind (`queue.PRIORITIES`), and a clip removal or scene deletion
    cancels it like any job of the clip."""
    await queue.enqueue(
        conn,
        "refine",
        {"segment_id": segment_id, "generation": 2},
        dedupe_key=f"refine:{segment_id}",
        scene_id=scene_id,
        segment_id=segment_id,
        max_attempts=settings.job_max_attempts,
    )


async def _write_poster(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    scene_id: str,
    segment_id: str,
    thumbnail_large: Path,
) -> bool:
    """The scene poster is the large thumbnail of the scene's first ready clip; True
    when it was written. A scene deleted meanwhile loses it again (its deleting job
    may have run before it was written)."""
    async with ctx.pool.acquire() as conn:
        first = await catalog.first_ready_segment(conn, scene_id)
    if first != segment_id:
        return False
    poster = layout.poster_key(scene_id)
    await put_one(
        storage, Upload(settings.assets_bucket, poster, thumbnail_large, layout.asset_meta(poster))
    )
    async with ctx.pool.acquire() as conn:
        live = await catalog.get_live_scene(conn, scene_id)
    if live is None:
        await storage.delete(settings.assets_bucket, layout.poster_key(scene_id))
        return False
    return True
