"""`storyforge jobs list|show|retry|cancel`: the job table for operators. `list` and
`show` read it through the named queries of `core/sql/operator.sql`; `retry` and
`cancel` are core/lifecycle.py's `retry_job` and `cancel_job`, the rules the API's
clip retry shares: one transaction, the job row locked first (as a publish takes
it), then what the job works for. A retried transcode's clip is `processing` again
(refused when its upload is no longer kept), a retried export's row likewise; a
cancelled transcode fails its clip, a cancelled export its export (each with its
event), and a cancelled webhook job's delivery is dead so the scene's next one goes
out. A running job is cancelled with its lease kept, so its worker's fenced publish
fails (core/queue.py).

Exit status: 0 done, 1 refused or no such job (the reason on stderr), 2 start-up
error (configuration, database unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg

from core import db, layout, lifecycle, queue
from core.settings import Settings
from core.storage import ObjectNotFound, open_configured_storage

EXIT_REFUSED = 1
CANCEL_REASON = "cancelled by an operator (storyforge jobs cancel)"
LIST_COLUMNS = ("id", "kind", "status", "attempts", "scene", "updated", "last error")
ERROR_COLUMN_CHARS = 60


class Refused(Exception):
    """The operator's request cannot be carried out (why: the message)."""


# --------------------------------------------------------------------------- arguments


def _job_id(value: str) -> str:
    if not layout.is_id(value, "job"):
        raise argparse.ArgumentTypeError(f"not a job id: {value!r} (job_ followed by 12-32 a-z0-9)")
    return value


def _scene_id(value: str) -> str:
    if not layout.is_id(value, "scn"):
        raise argparse.ArgumentTypeError(f"not a scene id: {value!r} (scn_...)")
    return value


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 10_000:
        raise argparse.ArgumentTypeError(f"--limit must be 1 to 10000, not {value!r}")
    return int(value)


def add_parser(sub: Any) -> None:
    """Register `jobs` and its four sub-commands on the `storyforge` sub-parsers."""
    jobs = sub.add_parser(
        "jobs",
        help="list, show, retry or cancel jobs (operators)",
        description="Read and change the job table (DATABASE_URL). Exit status: 0 done, "
        "1 refused or no such job (reason on stderr), 2 configuration or database error.",
    )
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser(
        "list",
        help="jobs newest first, as a table or JSON",
        description="Jobs newest first (created), filtered by kind, status and scene.",
    )
    ls.add_argument("--kind", choices=queue.JOB_KINDS, help="only jobs of this kind")
    ls.add_argument("--status", choices=queue.STATUSES, help="only jobs in this status")
    ls.add_argument("--scene", type=_scene_id, help="only jobs of this scene (scn_...)")
    ls.add_argument(
        "--limit", type=_limit, default=50, help="at most this many jobs (1-10000, default: 50)"
    )
    ls.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    show = actions.add_parser(
        "show",
        help="everything about one job",
        description="Kind, status, attempts, lease, timestamps, every recorded error, "
        "payload, and the status of the clip, export or webhook delivery it works for.",
    )
    show.add_argument("job_id", type=_job_id, metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object instead of text")
    retry = actions.add_parser(
        "retry",
        help="queue a failed or dead job again with its attempts reset",
        description="A failed or dead job is queued now with a fresh attempt budget (its "
        "errors kept); its clip or export is processing again. Refused for queued, "
        "running, succeeded and cancelled jobs, for webhook deliveries (later events of "
        "the scene went out after it), for a transcode whose upload is no longer kept "
        "(storage as configured: STORAGE, ...) and while another job in flight holds its "
        "dedupe key.",
    )
    retry.add_argument("job_id", type=_job_id, metavar="ID")
    cancel = actions.add_parser(
        "cancel",
        help="cancel a queued, running or failed job",
        description="A queued, running or failed job becomes cancelled; its clip or export "
        "fails with the reason and a webhook delivery is dead (the scene's next one goes "
        "out). A running job's worker can no longer publish (its lease is fenced out) and "
        "stops at its next heartbeat. Refused for succeeded, dead, cancelled and "
        "delete_scene jobs (a deleted scene's objects must still go).",
    )
    cancel.add_argument("job_id", type=_job_id, metavar="ID")


# --------------------------------------------------------------------------- pure


def _when(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def job_json(job: queue.Job, subject: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A job as JSON (timestamps ISO 8601), with what it works for when given."""
    out = {k: _when(v) if isinstance(v, datetime) else v for k, v in asdict(job).items()}
    if subject is not None:
        out["subject"] = {k: v for k, v in subject.items() if v is not None}
    return out


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (an error may quote bytes of an
    upload, escape sequences included) shown as `?`, line ends kept."""
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


def _one_line(text: str | None, width: int) -> str:
    flat = printable(" ".join((text or "").split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def table(jobs: Sequence[queue.Job]) -> str:
    """The jobs as aligned columns under a header (`jobs list`)."""
    rows = [
        (
            j.id,
            j.kind,
            j.status,
            f"{j.attempts}/{j.max_attempts}",
            j.scene_id or "-",
            _when(j.updated_at) or "-",
            _one_line(j.last_error, ERROR_COLUMN_CHARS) or "-",
        )
        for j in jobs
    ]
    widths = [max(len(r[i]) for r in [LIST_COLUMNS, *rows]) for i in range(len(LIST_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    header = "  ".join(c.ljust(w) for c, w in zip(LIST_COLUMNS, widths, strict=True)).rstrip()
    return "\n".join([header, *lines]) if rows else "no jobs"


def describe(job: queue.Job, subject: Mapping[str, Any]) -> str:
    """Everything about one job, one field a line (`jobs show`)."""
    lease = (
        f"{job.lease_token} held by {job.worker or '?'} until {_when(job.lease_expires_at)}"
        if job.lease_token
        else "none"
    )
    fields = [
        ("job", job.id),
        ("kind", job.kind),
        ("status", job.status),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("progress", f"{job.progress:.3g}"),  # a fraction of the job, as the APIs answer it
        ("lease", lease),
        ("worker", job.worker or "-"),
        ("scene", job.scene_id or "-"),
        ("segment", job.segment_id or "-"),
        ("dedupe key", job.dedupe_key or "-"),
        ("created", _when(job.created_at)),
        ("due", _when(job.run_after)),
        ("updated", _when(job.updated_at)),
        ("finished", _when(job.finished_at) or "-"),
        ("last error", printable(job.last_error or "-")),
    ]
    if subject.get("segment_status"):
        seg = subject["segment_status"]
        error = subject.get("segment_error")
        fields.append(("clip", f"{seg}: {printable(error)}" if error else seg))
    if subject.get("export_id"):
        fields.append(("export", f"{subject['export_id']} {subject['export_status']}"))
    if subject.get("delivery_endpoint"):
        fields.append(
            ("delivery", f"{subject['delivery_status']} to {subject['delivery_endpoint']}")
        )
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {value}" for name, value in fields]
    lines.append("payload".ljust(width) + "  " + json.dumps(job.payload, sort_keys=True))  # ASCII
    lines.append(f"errors ({len(job.errors)}):")
    for e in job.errors:
        lines.append(printable(f"  attempt {e.get('attempt')} at {e.get('at')}: {e.get('error')}"))
    return "\n".join(lines)


# --------------------------------------------------------------------------- I/O


async def list_jobs(
    conn: queue.Conn, *, kind: str | None, status: str | None, scene: str | None, limit: int
) -> list[queue.Job]:
    rows = await conn.fetch(db.q("ops_jobs_list"), kind, status, scene, limit)
    return [queue.Job.from_row(r) for r in rows]


async def subject(conn: queue.Conn, job_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(db.q("ops_job_subject"), job_id)
    return dict(row) if row is not None else {}


async def retry(
    conn: asyncpg.Connection, job_id: str, upload_exists: Callable[[str], Awaitable[bool]]
) -> queue.Job:
    """`jobs retry`: core.lifecycle.retry_job; Refused: why not."""
    try:
        job = await lifecycle.retry_job(conn, job_id, upload_exists)
    except lifecycle.Declined as exc:
        raise Refused(str(exc)) from None
    if job is None:
        raise Refused(f"no job {job_id}")
    return job


async def cancel(conn: asyncpg.Connection, job_id: str, settings: Settings) -> queue.Job:
    """`jobs cancel`: core.lifecycle.cancel_job with the operator's reason; Refused:
    why not."""
    try:
        job = await lifecycle.cancel_job(
            conn, job_id, reason=CANCEL_REASON, webhooks=settings.webhook_urls
        )
    except lifecycle.Declined as exc:
        raise Refused(str(exc)) from None
    if job is None:
        raise Refused(f"no job {job_id}")
    return job


async def _stored(settings: Settings, key: str) -> bool:
    """Is `key` in the internal bucket (a transcode's kept upload)?"""
    storage = await open_configured_storage(settings)
    try:
        await storage.head(settings.internal_bucket, key)
    except ObjectNotFound:
        return False
    finally:
        await storage.aclose()
    return True


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    pool = await db.connect_pool(settings.database_url, size=1)
    try:
        async with pool.acquire() as conn:
            if args.action == "list":
                jobs = await list_jobs(
                    conn, kind=args.kind, status=args.status, scene=args.scene, limit=args.limit
                )
                print(
                    json.dumps([job_json(j) for j in jobs], indent=2) if args.json else table(jobs)
                )
                return 0
            if args.action == "show":
                job = await queue.get_job(conn, args.job_id)
                if job is None:
                    raise Refused(f"no job {args.job_id}")
                about = await subject(conn, job.id)
                print(
                    json.dumps(job_json(job, about), indent=2)
                    if args.json
                    else describe(job, about)
                )
                return 0
            if args.action == "retry":
                job = await retry(conn, args.job_id, partial(_stored, settings))
                print(f"{job.id} ({job.kind}) queued again: {job.max_attempts} attempts")
                return 0
            job = await cancel(conn, args.job_id, settings)
            print(f"{job.id} ({job.kind}) cancelled")
            return 0
    finally:
        await pool.close()


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out `storyforge jobs ACTION`; database errors go up as DatabaseError."""
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_run(settings, args))
    except Refused as exc:
        print(f"storyforge jobs: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise db.DatabaseError(f"jobs {args.action}: {exc}") from exc
