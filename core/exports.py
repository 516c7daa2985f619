"""Scene exports in PostgreSQL: the queries of `sql/exports.sql` as typed async
functions. The API finds a ready export or creates one together with its `export` job
(never two jobs for one scene version, quality and range: the job's dedupe key); the
export job reads its row and publishes or fails it in its lease-fenced transaction,
recording the throughput that later estimates come from. The decisions themselves
(rounding, plans, estimates) are pure, in `core/exportplan.py`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core import db, layout, outbox, playlists, queue
from core.catalog import SceneView
from core.exportplan import DEFAULT_SPEED, SPEED_WEIGHT, BadRequest, ExportRange, Kind, SourceClip
from core.settings import LadderRung


@dataclass(frozen=True)
class Export:
    id: str
    scene_id: str
    quality: str
    scene_version: int
    status: str  # processing | ready | failed
    job_id: str | None
    size: int | None
    duration: float | None
    error: str | None
    created_at: datetime
    ready_at: datetime | None
    moment: ExportRange | None
    captions: tuple[str, ...] = ()  # languages of its WebVTT sidecars, once ready

    @property
    def file_name(self) -> str:
        return layout.export_file_name(self.quality, moment=self.moment is not None)

    def captions_files(self) -> list[tuple[str, str]]:
        """(language, file name) of each captions sidecar."""
        return [(lang, layout.export_captions_name(self.file_name, lang)) for lang in self.captions]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Export:
        start, end = row["start_s"], row["end_s"]
        return cls(
            id=row["id"],
            scene_id=row["scene_id"],
            quality=row["quality"],
            scene_version=row["scene_version"],
            status=row["status"],
            job_id=row["job_id"],
            size=row["size"],
            duration=row["duration"],
            error=row["error"],
            created_at=row["created_at"],
            ready_at=row["ready_at"],
            moment=ExportRange(start, end) if start is not None else None,
            captions=tuple(row["captions"]),
        )


@dataclass(frozen=True)
class ExportStatus:
    """An export as `GET /api/v1/exports/{id}` shows it."""

    export: Export
    title: str
    scene_live: bool
    current_version: int
    job_status: str | None
    job_progress: float
    job_error: str | None

    @property
    def status(self) -> str:
        """`failed` also when the job ended failed or dead without a worker saying so."""
        if self.export.status == "processing" and self.job_status in ("failed", "dead", None):
            return "failed"
        return self.export.status

    @property
    def error(self) -> str | None:
        if self.status != "failed":
            return None
        return self.export.error or self.job_error or "the export job ended without a result"

    @property
    def current(self) -> bool:
        """Whether it shows the scene as it is now (a newer clip makes it stale)."""
        return self.scene_live and self.export.scene_version == self.current_version


@dataclass(frozen=True)
class Served:
    """A ready export as `/e/` serves it."""

    id: str
    quality: str
    title: str
    moment: ExportRange | None
    captions: tuple[str, ...]


def source_clips(view: SceneView, quality: str, ladder: Sequence[LadderRung]) -> list[SourceClip]:
    """The scene's ready clips with the rendition an export at `quality` reads: a
    variant of the scene's stitched master (a profile some clip has) that is a rung of
    `ladder` (its frame is the export's), else BadRequest. A clip without a rendition
    of that frame (a source smaller than the rung, a clip whose refinement has not
    landed) reads the one its stitched variant plays (`playlists.variant_rendition`),
    to be re-encoded into the rung's frame (`SourceClip.fit`)."""
    order = playlists.scene_profiles([sc.clip for sc in view.clips])
    frames = {r.name: (r.width, r.height) for r in ladder}
    if quality not in order or quality not in frames:
        available = [p for p in order if p in frames]
        raise BadRequest(
            f"unknown quality {quality!r}: this scene can be exported at "
            + (", ".join(available) or "no quality of this installation's ladder")
        )
    clips = []
    for sc in view.clips:
        rendition = playlists.variant_rendition(sc.clip, quality, order)
        fit = (rendition.width, rendition.height) != frames[quality]
        clips.append(SourceClip(sc.clip.segment_id, sc.sequence, sc.contributor.id, rendition, fit))
    return clips


#: Job statuses that settle an export as failed: its job failed for good (bad input,
#: a deterministic error) or gave up after its attempts. A cancelled job does not: an
#: operator stopped that job, the export may be asked for again.
SETTLED_FAILED = ("failed", "dead")


async def find_settled(
    conn: asyncpg.Connection,
    scene_id: str,
    quality: str,
    version: int,
    moment: ExportRange | None,
    *,
    max_age: float,
) -> Export | None:
    """What a request for exactly this scene version, quality and range is answered
    with when it starts no job: the newest such export, when it is ready (made less
    than `max_age` seconds ago) or failed for good (`SETTLED_FAILED`; its `error`
    says why). It stays failed until the scene changes (a new version) or a retry is
    asked for (`core.lifecycle.retry_job`). None: start one, or join the one in
    flight."""
    row = await conn.fetchrow(
        db.q("export_find_latest"),
        scene_id,
        quality,
        version,
        moment.start if moment else None,
        moment.end if moment else None,
        float(max_age),
    )
    if row is None:
        return None
    export = Export.from_row(row)
    if export.status == "ready":
        return export if row["fresh"] else None
    if row["job_status"] not in SETTLED_FAILED and row["job_id"] is not None:
        return None  # in flight, or cancelled by an operator
    error = export.error or row["job_error"] or "the export job ended without a result"
    return dataclasses.replace(export, status="failed", error=error)


async def start_export(
    conn: asyncpg.Connection,
    scene_id: str,
    quality: str,
    version: int,
    moment: ExportRange | None,
    *,
    dedupe_key: str,
    max_attempts: int,
) -> tuple[Export, queue.Job]:
    """In one transaction: the `export` job and its export row, or the export whose
    job already holds `dedupe_key` (queued or running) when one does."""
    export_id, job_id = layout.new_id("exp"), layout.new_id("job")
    payload: dict[str, Any] = {
        "export_id": export_id,
        "scene_id": scene_id,
        "quality": quality,
        "version": version,
        "start": moment.start if moment else None,
        "end": moment.end if moment else None,
    }
    async with conn.transaction():
        job = await queue.enqueue(
            conn,
            "export",
            payload,
            dedupe_key=dedupe_key,
            scene_id=scene_id,
            max_attempts=max_attempts,
            job_id=job_id,
        )
        if job.id == job_id:
            row = await conn.fetchrow(
                db.q("export_insert"),
                export_id,
                scene_id,
                quality,
                version,
                job_id,
                payload["start"],
                payload["end"],
            )
        else:
            row = await conn.fetchrow(db.q("export_by_job"), job.id)
            if row is None:
                raise db.DatabaseError(f"export job {job.id} has no export row")
    return Export.from_row(row), job


async def status(conn: asyncpg.Connection, export_id: str) -> ExportStatus | None:
    row = await conn.fetchrow(db.q("export_status"), export_id)
    if row is None:
        return None
    return ExportStatus(
        export=Export.from_row(row),
        title=row["title"],
        scene_live=row["scene_live"],
        current_version=row["scene_current_version"],
        job_status=row["job_status"],
        job_progress=float(row["job_progress"] or 0.0),
        job_error=row["job_error"],
    )


async def served(conn: asyncpg.Connection, scene_id: str, export_id: str) -> Served | None:
    row = await conn.fetchrow(db.q("export_served"), export_id, scene_id)
    if row is None:
        return None
    start, end = row["start_s"], row["end_s"]
    return Served(
        row["id"],
        row["quality"],
        row["title"],
        ExportRange(start, end) if start is not None else None,
        tuple(row["captions"]),
    )


async def speeds(conn: asyncpg.Connection) -> dict[Kind, float]:
    """The measured throughput of each kind of export (the default until measured)."""
    measured = {r["kind"]: float(r["speed"]) for r in await conn.fetch(db.q("export_speeds"))}
    return {kind: measured.get(kind, default) for kind, default in DEFAULT_SPEED.items()}


async def publish(
    conn: asyncpg.Connection,
    export_id: str,
    *,
    size: int,
    duration: float,
    kind: Kind,
    speed: float | None,
    captions: Sequence[str] = (),
    webhooks: Sequence[str],
) -> bool:
    """Mark a processing export ready with the languages of its captions sidecars,
    fold its job's speed into the running figure (None: not a figure of its kind, an
    export that re-encoded clips into its frame) and write its `export.ready` event
    (to `webhooks`). Runs in the transaction holding the job's lease fence. False
    (nothing written) when the export is no longer processing."""
    if not conn.is_in_transaction():
        raise RuntimeError("publish must run inside the transaction holding the fence")
    row = await conn.fetchrow(
        db.q("export_mark_ready"), export_id, size, round(duration, 3), list(captions)
    )
    if row is None:
        return False
    if speed is not None:
        await conn.fetchval(db.q("export_record_speed"), kind, float(speed), SPEED_WEIGHT)
    data = {"exportId": export_id, "sceneId": row["scene_id"], "quality": row["quality"]}
    data |= {"size": size, "duration": round(duration, 3)}
    await outbox.emit(conn, webhooks, "export.ready", scene_id=row["scene_id"], data=data)
    return True


async def fail(
    conn: asyncpg.Connection, export_id: str, reason: str, *, webhooks: Sequence[str]
) -> None:
    """A processing export becomes failed with a readable reason and its
    `export.failed` event is written (to `webhooks`), in one transaction; no-op when it
    is not processing."""
    async with conn.transaction():
        row = await conn.fetchrow(db.q("export_mark_failed"), export_id, queue.error_text(reason))
        if row is None:
            return
        data = {"exportId": export_id, "sceneId": row["scene_id"], "error": reason}
        await outbox.emit(conn, webhooks, "export.failed", scene_id=row["scene_id"], data=data)
