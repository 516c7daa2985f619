"""History benchmark (issue 29): what `/metrics` and the hot queries cost as the job
and webhook tables fill with history.

In one run, on this machine: a private PostgreSQL cluster (bench/serve.py
`start_cluster`, migrated) and one `storyforge serve` process on it. Then:

1. **Scrape at 0 rows.** ``--scrapes`` GET /metrics on one keep-alive connection
   (after 20 unmeasured ones); median and p99 of the time to the last byte.
2. **Fill.** ``--rows`` finished jobs (succeeded, a few failed, dead and cancelled;
   kinds cycling; finished over the last six days, inside the default retention so
   nothing is pruned) and as many webhook events with one delivered delivery each,
   over 10,000 scenes, all with ``generate_series`` in a few statements; beside them
   what is live: 200 queued and 20 running jobs, 50 waiting deliveries, one scene of
   200 ready clips (bench/serve.py `create_scene`). Then the status deltas are folded
   (as a worker's reaper pass does) and the tables analysed.
3. **Scrape at ``--rows``.** As in 1.
4. **Plans.** ``EXPLAIN (ANALYZE, BUFFERS)`` of the hot named queries (core/sql/*.sql:
   claim, the scrape's, the webhook job's, the scene documents', the prune's; writes
   rolled back), each run once before to warm the cache, and for comparison the two
   counts the scrape ran before migration 0009. Written to ``docs/QUERY-PLANS.md``
   (not with ``--quick``).

Usage: ``.venv/bin/python bench/history.py [--rows N] [--scrapes N] [--quick]
[--no-wait]``. ``--quick``: 100,000 rows, 200 scrapes. Writes
``bench/results/history.json`` (``history-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import benchutil
from serve import create_scene, start_cluster, start_origin, stop

from core import catalog, db

PLANS = benchutil.ROOT / "docs" / "QUERY-PLANS.md"
SCENES = 10_000
#: what the scrape counted before migration 0009, for comparison
BEFORE = {
    "job_counts (before 0009)": "SELECT kind, status, count(*)::int AS n FROM jobs "
    "GROUP BY kind, status",
    "outbox_delivery_counts (before 0009)": "SELECT status, count(*)::int AS n "
    "FROM webhook_deliveries GROUP BY status",
}


def scrape_times(port: int, n: int) -> dict[str, float]:
    """Median and p99 (ms) of `n` GET /metrics on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + 60  # the first scrapes after a fill may time out (2 s)
    while True:
        conn.request("GET", "/metrics")
        if b"storyforge_jobs_scrape_ok 1.0" in conn.getresponse().read():
            break
        assert time.monotonic() < deadline, "the scrape cannot read the job table"
    times: list[float] = []
    for i in range(n + 20):
        started = time.perf_counter()
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 200 and b"storyforge_jobs_scrape_ok 1.0" in body, body[-300:]
        if i >= 20:
            times.append(elapsed * 1000)
    conn.close()
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        "scrapes": n,
    }


FILL = [
    # finished jobs, kinds cycling, finished over the last six days
    """INSERT INTO jobs (id, kind, status, payload, scene_id, attempts, created_at,
                         updated_at, finished_at, progress)
       SELECT 'job_h' || lpad(i::text, 12, '0'),
              (ARRAY['transcode', 'refine', 'webhook', 'export', 'expire_upload'])[1 + i % 5],
              CASE WHEN i % 100 = 0 THEN 'failed' WHEN i % 101 = 0 THEN 'dead'
                   WHEN i % 103 = 0 THEN 'cancelled' ELSE 'succeeded' END,
              '{}', 'scn_h' || lpad((i % $2)::text, 12, '0'), 1,
              now() - make_interval(secs => 518400.0 * (1 - i::float8 / $1)) - interval '1 min',
              now() - make_interval(secs => 518400.0 * (1 - i::float8 / $1)),
              now() - make_interval(secs => 518400.0 * (1 - i::float8 / $1)), 1
         FROM generate_series(1, $1) AS i""",
    """INSERT INTO webhook_events (id, type, scene_id, seq, payload, created_at)
       SELECT 'evt_h' || lpad(i::text, 12, '0'), 'segment.ready',
              'scn_h' || lpad((i % $2)::text, 12, '0'), i, '{"type": "segment.ready"}',
              now() - make_interval(secs => 518400.0 * (1 - i::float8 / $1))
         FROM generate_series(1, $1) AS i""",
    """INSERT INTO webhook_deliveries (event_id, endpoint, scene_id, seq, status, job_id,
                                       finished_at)
       SELECT 'evt_h' || lpad(i::text, 12, '0'), 'https://hooks.example/a',
              'scn_h' || lpad((i % $2)::text, 12, '0'), i, 'delivered',
              'job_h' || lpad(i::text, 12, '0'),
              now() - make_interval(secs => 518400.0 * (1 - i::float8 / $1))
         FROM generate_series(1, $1) AS i""",
    # what is live beside the history
    """INSERT INTO jobs (id, kind, status, payload, scene_id, run_after)
       SELECT 'job_q' || lpad(i::text, 12, '0'),
              (ARRAY['transcode', 'refine', 'export'])[1 + i % 3], 'queued', '{}',
              'scn_h' || lpad((i % $2)::text, 12, '0'),
              now() + make_interval(secs => (i % 2) * 3600)
         FROM generate_series(1, 200 + 0 * $1) AS i""",
    """INSERT INTO jobs (id, kind, status, payload, scene_id, lease_token, lease_expires_at,
                         attempts)
       SELECT 'job_r' || lpad(i::text, 12, '0'), 'transcode', 'running', '{}',
              'scn_h' || lpad((i % $2)::text, 12, '0'), gen_random_uuid(),
              now() + interval '1 min', 1
         FROM generate_series(1, 20 + 0 * $1) AS i""",
    """INSERT INTO webhook_events (id, type, scene_id, seq, payload)
       SELECT 'evt_w' || lpad(i::text, 12, '0'), 'segment.ready',
              'scn_h' || lpad((i % $2)::text, 12, '0'), $1 + i, '{}'
         FROM generate_series(1, 50) AS i""",
    """INSERT INTO webhook_deliveries (event_id, endpoint, scene_id, seq, status, job_id)
       SELECT 'evt_w' || lpad(i::text, 12, '0'), 'https://hooks.example/a',
              'scn_h' || lpad((i % $2)::text, 12, '0'), $1 + i,
              CASE WHEN i = 1 THEN 'queued' ELSE 'waiting' END,
              CASE WHEN i = 1 THEN 'job_q000000000001' END
         FROM generate_series(1, 50) AS i""",
]


async def fill(dsn: str, rows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        for sql in FILL:
            await conn.execute(sql, rows, SCENES)
        user = await catalog.create_user(conn, "history")
        scene = await create_scene(conn, 200, [user.id], random.Random(29))
        await conn.execute(db.q("status_counts_compact"))
        await conn.execute("VACUUM ANALYZE")
        segment = await conn.fetchval(
            "SELECT id FROM segments WHERE scene_id = $1 ORDER BY sequence LIMIT 1", scene
        )
        return {
            "fill_s": round(time.monotonic() - started, 1),
            "scene": scene,
            "segment": segment,
            "jobs": await conn.fetchval("SELECT count(*) FROM jobs"),
            "deliveries": await conn.fetchval("SELECT count(*) FROM webhook_deliveries"),
            "status_counts_rows": await conn.fetchval("SELECT count(*) FROM status_counts"),
        }
    finally:
        await conn.close()


class _RolledBack(Exception):
    pass


def hot_queries(filled: dict[str, Any]) -> list[tuple[str, str, tuple[Any, ...], str]]:
    """(title, SQL, arguments, why it is hot) of the queries whose plans are kept."""
    scene, segment = filled["scene"], filled["segment"]
    week = 7 * 86400.0
    return [
        (
            "job_claim",
            db.q("job_claim"),
            ("00000000-0000-0000-0000-000000000001", 60.0, "bench", None),
            "every worker, for every job and every poll",
        ),
        ("job_counts", db.q("job_counts"), (), "every /metrics scrape"),
        ("oldest_due_jobs", db.q("oldest_due_jobs"), (), "every /metrics scrape"),
        ("outbox_delivery_counts", db.q("outbox_delivery_counts"), (), "every /metrics scrape"),
        ("outbox_oldest_pending", db.q("outbox_oldest_pending"), (), "every /metrics scrape"),
        ("cdn_counts", db.q("cdn_counts"), (), "every /metrics scrape"),
        *((title, sql, (), "what the scrape ran before 0009") for title, sql in BEFORE.items()),
        (
            "outbox_delivery_for_job",
            db.q("outbox_delivery_for_job"),
            ("job_h000000500000",),
            "every webhook job",
        ),
        (
            "outbox_unfinished_before",
            db.q("outbox_unfinished_before"),
            ("scn_h000000000007", "https://hooks.example/a", 10**9),
            "every event written (outbox.emit)",
        ),
        (
            "get_live_scene",
            db.q("get_live_scene"),
            (scene,),
            "a scene document built (a cold read)",
        ),
        (
            "scene_clips",
            db.q("scene_clips"),
            (scene, True),
            "a scene document built (a cold read; 200 clips)",
        ),
        ("get_segment_status", db.q("get_segment_status"), (segment,), "GET a clip's status"),
        ("prune_jobs", db.q("prune_jobs"), (week, 1000), "every reaper pass (nothing due)"),
        ("prune_events", db.q("prune_events"), (week, 1000), "every reaper pass (nothing due)"),
    ]


async def plans(dsn: str, filled: dict[str, Any]) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    found = []
    try:
        for title, sql, args, why in hot_queries(filled):
            text: list[str] = []
            for _ in range(2):  # the first warms the cache
                try:
                    async with conn.transaction():
                        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
                        text = [r[0] for r in rows]
                        raise _RolledBack
                except _RolledBack:
                    pass
            took = next((line for line in text if line.startswith("Execution Time")), "")
            found.append(
                {
                    "query": title,
                    "why": why,
                    "execution_ms": float(took.split()[2]) if took else None,
                    "plan": text,
                }
            )
    finally:
        await conn.close()
    return found


def write_plans(data: dict[str, Any]) -> None:
    s = data["scrape"]
    lines = [
        "# Query plans at 1M rows of history",
        "",
        "Written by `bench/history.py` (issue 29); rerun it to refresh. The database: "
        f"{data['filled']['jobs']:,} jobs (all but 220 finished), "
        f"{data['filled']['deliveries']:,} webhook deliveries (all but 50 delivered), "
        f"{SCENES:,} scenes of history and one live scene of 200 clips; "
        f"`status_counts` folded to {data['filled']['status_counts_rows']} rows; "
        "`VACUUM ANALYZE` run. Each plan is the second of two runs (the first warms "
        "the cache); writes (claim, prune) are rolled back.",
        "",
        f"`GET /metrics` on one `storyforge serve` process: median "
        f"{s['0']['median_ms']} ms (p99 {s['0']['p99_ms']}) at 0 rows, "
        f"{s['full']['median_ms']} ms (p99 {s['full']['p99_ms']}) at "
        f"{data['rows']:,} rows.",
        "",
        "| query | run by | execution ms |",
        "|---|---|---|",
    ]
    for p in data["plans"]:
        lines.append(f"| `{p['query']}` | {p['why']} | {p['execution_ms']} |")
    lines.append("")
    for p in data["plans"]:
        lines += [f"## `{p['query']}`", "", f"Run by: {p['why']}.", "", "```", *p["plan"], "```"]
        lines.append("")
    PLANS.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished jobs and events")
    parser.add_argument("--scrapes", type=int, default=1000, help="timed scrapes per point")
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 200 scrapes")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    a = parser.parse_args(argv)
    if a.quick:
        a.rows, a.scrapes = 100_000, 200
    quiet = benchutil.wait_quiet(timeout=0 if a.no_wait else 600)
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-history-", dir=benchutil.OUT))
    cluster = start_cluster(tmp)
    origin = None
    try:
        origin = start_origin(tmp, cluster.dsn, tmp / "storage", None, "errors")
        port = origin.port  # type: ignore[attr-defined]
        scrape = {"0": scrape_times(port, a.scrapes)}
        print(f"scrape at 0 rows: {scrape['0']}", flush=True)
        print(f"filling {a.rows:,} finished jobs and delivered events ...", flush=True)
        filled = asyncio.run(fill(cluster.dsn, a.rows))
        print(f"filled: {filled}", flush=True)
        with benchutil.Monitor() as monitor:
            scrape["full"] = scrape_times(port, a.scrapes)
        print(f"scrape at {a.rows:,} rows: {scrape['full']}", flush=True)
        found = asyncio.run(plans(cluster.dsn, filled))
    finally:
        stop(origin)
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    data = {
        "machine": benchutil.machine(),
        "quiet": quiet,
        "disturbed": monitor.disturbed,
        "rows": a.rows,
        "filled": {k: v for k, v in filled.items() if k not in ("scene", "segment")},
        "scrape": scrape,
        "target_scrape_ms": 5.0,
        "plans": found,
    }
    path = benchutil.write_result("history-quick" if a.quick else "history", data)
    if not a.quick:
        write_plans(data)
        print(f"wrote {PLANS.relative_to(benchutil.ROOT)}")
    print(
        benchutil.table(["query", "execution ms"], [[p["query"], p["execution_ms"]] for p in found])
    )
    print(f"wrote {path.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
