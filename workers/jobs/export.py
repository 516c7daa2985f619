"""The `export` job: one MP4 of a whole scene, or of a moment of it, compiled from the
scene's published HLS renditions of one quality (never from the uploads).

The media segments are fetched through the Storage protocol in order, a few at a time
(`EXPORT_FETCH_CONCURRENCY`), and streamed through the TS joiner (`workers.media.tsjoin`)
into one ffmpeg that stream-copies them into a progressive, moov-first MP4 (`+faststart`,
`workers.media.exportcmd`): the worker's memory holds a bounded number of segments
whatever the scene's length, ffmpeg's the MP4's sample index, and disk the MP4. What
was written is checked before it is uploaded: ffprobe says its streams and duration, its
top-level box headers say `moov` comes before `mdat`. A moment's edge GOPs are
re-encoded with the rendition's own encoder settings; everything between them is
copied. A clip without a rendition of the export's frame (a source smaller than the
rung, a clip whose refinement has not landed) has its largest real rendition
re-encoded into that frame, segment by segment, its sound copied, so every frame of
the MP4 is the rung's. A part that ends before its clip does also reads the clip's
next segment for the audio of its last moments, which the transcoder's muxer wrote
there (a re-encode takes it with its frames; the joiner takes it for copies).
Progress goes to the job's heartbeat. The MP4, one WebVTT sidecar per language of
the clips it shows (their captions, read with the clips, placed on the export's
timeline: `exportplan.sidecars`) and `export_manifest.json` go to the exports bucket
under the export's own prefix, then one transaction fenced by the
job's lease marks the export ready and completes the job. Temporary files go with the
job's directory, on success and on failure; a failed export leaves nothing in the
exports bucket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core import catalog, exportplan, exports, layout, queue
from core.exportplan import BadRequest, ExportRange, Part, Plan
from core.settings import Settings
from core.storage import ObjectNotFound, Storage
from workers.media import exportcmd, ffmpeg
from workers.media.encoding import Rung, ladder_of
from workers.media.tsjoin import JoinError, TsJoiner, first_video_pts, without_video
from workers.runtime.loop import JobContext, PermanentError, job_workdir

log = logging.getLogger("storyforge.export")

FETCH_PROGRESS = 0.9  # of the job (a fraction) spent fetching and joining; then checks, upload
CUT_TIMEOUT = 300.0
CHECK_TIMEOUT = 120.0  # the ffprobe of the written MP4
DURATION_TOLERANCE = 0.1  # seconds between the plan and the MP4 written


class ExportFailed(Exception):
    """ffmpeg or the written file let the export down (retried)."""


class MissingSegment(PermanentError):
    """A media segment the plan names is not in storage."""


@dataclass(frozen=True)
class Fetch:
    """One media segment to read: where, how big the rows say it is, whose it is,
    and whether it is that part's `tail` (read for its audio only)."""

    key: str
    size: int
    part: Part
    tail: bool = False


class Prefetcher:
    """The media segments of a plan, in order, at most `concurrency` in flight or
    waiting: memory holds that many segments, however long the scene."""

    def __init__(
        self, storage: Storage, bucket: str, scene_id: str, plan: Plan, concurrency: int
    ) -> None:
        self._storage = storage
        self._bucket = bucket
        self._fetches = []
        for part in plan.parts:
            for name, size in zip(part.files, part.sizes, strict=True):
                self._fetches.append(
                    Fetch(layout.segment_key(scene_id, part.segment_id, name), size, part)
                )
            if part.tail is not None:
                key = layout.segment_key(scene_id, part.segment_id, part.tail.file)
                self._fetches.append(Fetch(key, part.tail.size, part, tail=True))
        self._concurrency = max(1, concurrency)

    async def segments(self) -> AsyncIterator[tuple[Fetch, bytearray]]:
        """(fetch, bytes) in plan order; reads run ahead by at most `concurrency`."""
        window: deque[tuple[Fetch, asyncio.Task[bytearray]]] = deque()
        pending = deque(self._fetches)
        try:
            while pending or window:
                while pending and len(window) < self._concurrency:
                    fetch = pending.popleft()
                    window.append((fetch, asyncio.create_task(self._read(fetch))))
                fetch, task = window.popleft()
                yield fetch, await task
        finally:
            for _, task in window:
                task.cancel()
            await asyncio.gather(*(task for _, task in window), return_exceptions=True)

    async def _read(self, fetch: Fetch) -> bytearray:
        part = fetch.part
        name = fetch.key.rsplit("/", 1)[-1]
        try:
            obj = await self._storage.get(self._bucket, fetch.key)
        except ObjectNotFound:
            raise MissingSegment(
                f"clip {part.sequence} ({part.segment_id}) has lost its media segment "
                f"{name} in storage: the scene cannot be exported until the clip is "
                "transcoded again or removed"
            ) from None
        data = bytearray()
        async with obj:
            async for chunk in obj:
                data += chunk
                if len(data) > fetch.size:
                    break
        if len(data) != fetch.size:
            raise PermanentError(
                f"clip {part.sequence} ({part.segment_id}): media segment {name} is "
                f"{len(data)} bytes in storage, its rendition row says {fetch.size}"
            )
        return data


def make_handler(settings: Settings, storage: Storage) -> Callable[[JobContext], Awaitable[None]]:
    async def handle(ctx: JobContext) -> None:
        await export_job(ctx, settings, storage)

    return handle


def _moment(payload: dict[str, object]) -> ExportRange | None:
    start, end = payload.get("start"), payload.get("end")
    if start is None and end is None:
        return None
    if not isinstance(start, int | float) or not isinstance(end, int | float) or end <= start:
        raise PermanentError("malformed export job payload (moment)")
    return ExportRange(float(start), float(end))


async def export_job(ctx: JobContext, settings: Settings, storage: Storage) -> None:
    job = ctx.job
    p = job.payload
    export_id, scene_id = str(p.get("export_id", "")), str(p.get("scene_id", ""))
    quality, version = str(p.get("quality", "")), p.get("version")
    if not (
        layout.is_id(export_id, "exp")
        and layout.is_id(scene_id, "scn")
        and layout.is_profile(quality)
        and isinstance(version, int)
    ):
        raise PermanentError("malformed export job payload")
    moment = _moment(p)
    async with ctx.pool.acquire() as conn:
        found = await exports.status(conn, export_id)
    if found is None or not found.scene_live:
        raise PermanentError("the scene or the export no longer exists")
    if found.export.status != "processing":
        return  # published (or failed) by an earlier attempt
    try:
        await _export(ctx, settings, storage, scene_id, export_id, quality, version, moment)
    except (PermanentError, BadRequest, JoinError) as exc:
        await _give_up(ctx, settings, storage, scene_id, export_id, str(exc))
        raise PermanentError(str(exc)) from None
    except queue.LeaseLost:
        raise
    except Exception as exc:
        if job.attempts >= job.max_attempts:
            reason = f"the export failed after {job.attempts} attempts: {exc}"
            await _give_up(ctx, settings, storage, scene_id, export_id, reason)
        raise


async def _give_up(
    ctx: JobContext, settings: Settings, storage: Storage, scene_id: str, export_id: str, why: str
) -> None:
    """Nothing of a failed export stays in the exports bucket; its row says why."""
    await storage.delete_prefix(settings.exports_bucket, layout.export_prefix(scene_id, export_id))
    async with ctx.pool.acquire() as conn:
        await exports.fail(conn, export_id, why, webhooks=settings.webhook_urls)


def _rung(quality: str, settings: Settings) -> Rung:
    for rung in ladder_of(settings.ladder):
        if rung.name == quality:
            return rung
    raise PermanentError(f"no encoder settings for {quality}: not a rung of this worker's ladder")


async def _export(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    scene_id: str,
    export_id: str,
    quality: str,
    version: int,
    moment: ExportRange | None,
) -> None:
    started = time.monotonic()
    job = ctx.job
    async with ctx.pool.acquire() as conn:
        view = await catalog.scene_view(conn, scene_id, captions=True)
    if view is None:
        raise PermanentError("the scene no longer exists")
    if view.scene.version != version:
        raise PermanentError(
            f"the scene changed (version {version} -> {view.scene.version}) before the "
            "export ran; request the export again for the current version"
        )
    clips = exports.source_clips(view, quality, settings.ladder)
    plan = exportplan.plan_export(clips, quality, moment)
    sidecars = exportplan.sidecars(plan, view.captions)
    journal = [
        f"export {export_id}: scene {scene_id} v{version}, {quality}, attempt {job.attempts}"
    ]
    journal += [_describe(part) for part in plan.parts]
    prefix = layout.export_prefix(scene_id, export_id)
    if job.attempts > 1:  # an earlier attempt may have left objects: start clean
        await storage.delete_prefix(settings.exports_bucket, prefix)
    async with job_workdir(job) as work:
        mp4 = work / plan.file_name
        try:
            duration = await _compile(ctx, settings, storage, scene_id, plan, mp4, work, journal)
        except MissingSegment:
            async with ctx.pool.acquire() as conn:
                now = await catalog.live_scene_version(conn, scene_id)
            if now != version:  # a clip was removed meanwhile: not a lost object
                raise PermanentError(
                    f"the scene changed (version {version} -> {now}) during the export; "
                    "request the export again for the current version"
                ) from None
            raise
        finally:
            await _put_log(storage, settings, job.id, journal)
        size = mp4.stat().st_size
        document = exportplan.manifest(
            scene_id=scene_id,
            export_id=export_id,
            version=version,
            plan=plan,
            created_at=datetime.now(UTC),
            duration=duration,
            size=size,
            languages=list(sidecars),
        )
        meta, manifest_meta = layout.EXPORT_META, layout.EXPORT_MANIFEST_META
        vtt_meta = layout.EXPORT_CAPTIONS_META
        for lang, text in sidecars.items():
            name = layout.export_captions_name(plan.file_name, lang)
            await storage.put(
                settings.exports_bucket,
                layout.export_key(scene_id, export_id, name),
                text.encode(),
                content_type=vtt_meta.content_type,
                cache_control=vtt_meta.cache_control,
                tags={"type": vtt_meta.tag},
            )
        await storage.put(
            settings.exports_bucket,
            layout.export_key(scene_id, export_id, plan.file_name),
            mp4,
            content_type=meta.content_type,
            cache_control=meta.cache_control,
            tags={"type": meta.tag},
        )
        await storage.put(
            settings.exports_bucket,
            layout.export_manifest_key(scene_id, export_id),
            json.dumps(document, indent=2).encode(),
            content_type=manifest_meta.content_type,
            cache_control=manifest_meta.cache_control,
            tags={"type": manifest_meta.tag},
        )
    await ctx.progress(0.99)
    # the running throughput of its kind is of exports that copy and cut; one that
    # re-encoded clips into its frame would lower it for every export after
    speed = None if plan.refit_duration else plan.duration / max(time.monotonic() - started, 1e-3)

    async def publish() -> bool:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await ctx.fence(conn)
            published = await exports.publish(
                conn,
                export_id,
                size=size,
                duration=duration,
                kind=plan.kind,
                speed=speed,
                captions=list(sidecars),
                webhooks=settings.webhook_urls,
            )
            if published:
                await queue.complete(conn, job.id, ctx.lease_token)
        return published

    published = await ctx.retrying(publish, "publish")  # until it commits or the lease ends
    log.info(
        "export published" if published else "export was already published",
        extra={"sf_export": export_id, "sf_scene": scene_id, "sf_duration": duration},
    )


def _describe(part: Part) -> str:
    files = part.files[0] if len(part.files) == 1 else f"{part.files[0]}..{part.files[-1]}"
    if part.copied:
        return f"copy     clip {part.sequence} {part.segment_id} {files} ({part.duration:.3f} s)"
    frames = f" frames {part.cut.first}-{part.cut.end}" if part.cut else ""
    scaled = f" from {part.fit.width}x{part.fit.height}" if part.fit else ""
    return (
        f"reencode clip {part.sequence} {part.segment_id} {files}{frames}{scaled} "
        f"({part.duration:.3f} s)"
    )


async def _compile(
    ctx: JobContext,
    settings: Settings,
    storage: Storage,
    scene_id: str,
    plan: Plan,
    mp4: Path,
    work: Path,
    journal: list[str],
) -> float:
    """Fetch, join and remux into the progressive MP4, then check it; returns its
    duration."""
    joiner = TsJoiner(dts_grid=exportcmd.dts_grid(plan.max_fps))
    rung = _rung(plan.quality, settings)
    level = exportcmd.export_level(plan, rung)
    cmd = exportcmd.remux_command(mp4, level=level, max_fps=plan.max_fps)
    journal.append("$ " + " ".join(cmd))
    fetcher = Prefetcher(
        storage, settings.videos_bucket, scene_id, plan, settings.export_fetch_concurrency
    )
    total = max(plan.size, 1)

    async def feed(stdin: asyncio.StreamWriter) -> None:
        done = 0
        current: Part | None = None
        held: bytearray | None = None  # a re-encoded segment, waiting for its tail
        async for fetch, data in fetcher.segments():
            part = fetch.part
            if part is not current:
                if current is not None:
                    stdin.write(joiner.end())
                stdin.write(joiner.begin(part.fps))
                current = part
            if not part.copied and not fetch.tail and part.tail is not None:
                held = data  # re-encoded once the next segment's audio is here
            elif not part.copied:
                segment, tail = (held, data) if fetch.tail else (data, None)
                assert segment is not None
                held = None
                made = await _reencode(part, rung, segment, tail, work, journal)
                stdin.write(joiner.feed(bytearray(made)))  # on the loop: ~2 ms per 720p segment
            elif fetch.tail:
                stdin.write(joiner.feed_audio(data))
            else:
                stdin.write(joiner.feed(data))
            await stdin.drain()
            done += fetch.size
            await ctx.progress(FETCH_PROGRESS * done / total)
        stdin.write(joiner.end())
        stdin.write(joiner.finish())
        await stdin.drain()

    timeout = 600.0 + plan.duration
    result = await ffmpeg.run_fed(cmd, feed, timeout=timeout)
    journal.append(f"# joined: {joiner.stats}")
    journal.append(f"# ffmpeg exit {result.returncode}\n{result.stderr.strip()}")
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ExportFailed(f"ffmpeg exited with {result.returncode}: {tail[0][:300]}")
    probe = exportcmd.check_command(mp4)
    journal.append("$ " + " ".join(probe))
    try:
        done = await ffmpeg.run_capture(probe, timeout=CHECK_TIMEOUT)
    except TimeoutError:
        raise ExportFailed("ffprobe of the written MP4 did not finish") from None
    if done.returncode != 0:
        raise ExportFailed(f"ffprobe cannot read the written MP4: {done.stderr.strip()[-300:]}")
    boxes = await asyncio.to_thread(top_level_boxes, mp4)
    return _check(exportcmd.written(json.loads(done.stdout), boxes), plan, journal)


async def _reencode(
    part: Part,
    rung: Rung,
    data: bytearray,
    tail: bytearray | None,
    work: Path,
    journal: list[str],
) -> bytes:
    """Re-encode one media segment's part: its cut frames with the audio under them,
    or (a whole segment of a `fit` part) its picture into the rung's frame with its
    sound copied; some of the sound is in `tail`, the next segment, whose video is
    left out. The re-encoded MPEG-TS."""
    source, output = work / "cut_in.ts", work / "cut_out.ts"
    audio = without_video(tail) if tail is not None else b""
    await asyncio.to_thread(source.write_bytes, bytes(data) + audio)
    if part.cut is not None:
        cmd = exportcmd.cut_command(
            source,
            output,
            rung=rung,
            fps=part.fps,
            cut=part.cut,
            first_pts=first_video_pts(data),
            fit=part.fit is not None,
        )
    else:
        assert part.fit is not None
        cmd = exportcmd.fit_command(source, output, rung=rung, fps=part.fps, gop=part.fit.gop)
    journal.append("$ " + " ".join(cmd))
    try:
        done = await ffmpeg.run_capture(cmd, timeout=CUT_TIMEOUT)
    except TimeoutError:
        raise ExportFailed(
            f"re-encoding {part.files[0]} did not finish within {CUT_TIMEOUT:g} s"
        ) from None
    if done.returncode != 0:
        raise ExportFailed(f"re-encoding {part.files[0]} failed: {done.stderr.strip()[-300:]}")
    made = await asyncio.to_thread(output.read_bytes)
    source.unlink()
    output.unlink()
    return made


def top_level_boxes(path: Path, limit: int = 32) -> list[str]:
    """The types of an MP4's top-level boxes in file order, from their headers alone
    (ISO/IEC 14496-12 §4.2: a 32-bit size and the type; size 1: a 64-bit size follows
    the type; size 0: the box runs to the end of the file). At most `limit` boxes."""
    boxes: list[str] = []
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        at = 0
        while at < end and len(boxes) < limit:
            f.seek(at)
            head = f.read(16)
            if len(head) < 8:
                raise ExportFailed(f"the written MP4 ends inside a box header at byte {at}")
            size, kind = struct.unpack_from(">I4s", head)
            if size == 1 and len(head) == 16:
                (size,) = struct.unpack_from(">Q", head, 8)
            elif size == 0:
                size = end - at
            if size < 8:
                raise ExportFailed(f"the written MP4 has a box of {size} bytes at byte {at}")
            boxes.append(kind.decode("latin-1"))
            at += size
    return boxes


def _check(written: exportcmd.Written, plan: Plan, journal: list[str]) -> float:
    """The written MP4 is progressive (`moov` before `mdat`), holds one H.264 and one
    AAC stream and lasts what the plan says."""
    codecs = sorted(written.codecs)
    journal.append(
        f"# written: {' '.join(written.boxes)}; {codecs}, {written.duration:.3f} s "
        f"(plan {plan.duration:.3f} s)"
    )
    if not written.progressive:
        raise ExportFailed(f"the written MP4 is not progressive: {list(written.boxes)}")
    if codecs != ["aac", "h264"]:
        raise ExportFailed(f"the written MP4 holds {codecs}, not one H.264 and one AAC stream")
    if not abs(written.duration - plan.duration) <= DURATION_TOLERANCE:  # NaN fails too
        raise ExportFailed(
            f"the written MP4 lasts {written.duration:.3f} s, the scene {plan.duration:.3f} s"
        )
    return written.duration


async def _put_log(storage: Storage, settings: Settings, job_id: str, journal: list[str]) -> None:
    try:
        await storage.put(
            settings.internal_bucket,
            layout.job_export_log_key(job_id),
            ("\n".join(journal) + "\n").encode(),
            content_type="text/plain; charset=utf-8",
            cache_control="private, no-store",
            tags={"type": layout.INTERNAL_TAG},
        )
    except Exception as exc:  # the log helps; it must not fail the export
        log.warning("export log not stored: %s", exc)
