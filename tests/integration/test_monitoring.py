"""Monitoring as an operator runs it: Debian's real Prometheus scrapes an origin and a
worker over loopback and answers queries about them; the alert rules pass promtool's
unit tests; the rules and the Grafana dashboard name only metrics we expose."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core import layout, outbox
from origin.app import create_app
from storyforge import jobs
from tests.helpers.servers import OriginTestServer
from tests.helpers.services import free_port
from workers.runtime.metrics import JobStats, metrics_server

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NO_PROMETHEUS = "Debian's prometheus is not installed (scripts/setup test installs it)"
_NAME = re.compile(r"\b((?:storyforge|process)_[a-z_]+)")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMETHEUS)
def test_alert_rules_pass_promtool():
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            [str(PROMTOOL), *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _names_used() -> set[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = set()
    for expr in exprs:
        for name in _NAME.findall(expr):
            for suffix in _SUFFIXES:
                name = name.removesuffix(suffix)
            names.add(name)
    return names


async def _prometheus_query(base: str, query: str) -> list[dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/query", params={"query": query}) as r:
            body = await r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
async def test_prometheus_scrapes_an_origin_and_a_worker(settings, tmp_path):
    stats = JobStats()
    stats.finished("transcode", "succeeded", 3.0)
    worker_port = free_port()
    async with (
        TestClient(OriginTestServer(create_app(settings))) as origin,
        metrics_server(stats, ["transcode"], "127.0.0.1", worker_port),
    ):
        exposed = set()
        for url in (
            str(origin.make_url("/metrics")),
            f"http://127.0.0.1:{worker_port}/metrics",
        ):
            async with aiohttp.ClientSession() as http, http.get(url) as r:
                exposed |= {f.name for f in text_string_to_metric_families(await r.text())}
        # every metric the alert rules and the dashboard use is one we expose
        assert _names_used() - exposed == set()

        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(MONITORING / "alerts.yml")],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]}
                        for job, p in (
                            ("storyforge-origin", origin.port),
                            ("storyforge-worker", worker_port),
                        )
                    ],
                }
            )
        )
        server = await asyncio.create_subprocess_exec(
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            result: list[dict] = []
            async with asyncio.timeout(60):
                while len(result) < 2:
                    await asyncio.sleep(0.5)
                    try:
                        result = await _prometheus_query(base, "storyforge_process_info")
                    except aiohttp.ClientError:
                        continue
            assert {r["metric"]["job"] for r in result} == {
                "storyforge-origin",
                "storyforge-worker",
            }
            jobs = await _prometheus_query(
                base, 'storyforge_worker_jobs_total{kind="transcode",outcome="succeeded"}'
            )
            assert [float(r["value"][1]) for r in jobs] == [1.0]
            up = await _prometheus_query(base, "up")
            assert sorted(float(r["value"][1]) for r in up) == [1.0, 1.0]
        finally:
            server.terminate()
            await server.wait()


def _sample(text: str, name: str) -> float:
    return next(float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " "))


async def test_webhook_backlog_age_is_exposed(settings, fresh_db, fresh_pool):
    """storyforge_webhook_oldest_pending_seconds (StoryforgeWebhookBacklog): the age of
    the oldest event still waiting for its delivery, 0 once none is."""
    s = dataclasses.replace(settings, database_url=fresh_db)
    hook = ["http://127.0.0.1:9/hook"]
    async with fresh_pool.acquire() as conn, conn.transaction():
        event = await outbox.emit(
            conn, hook, "scene.deleted", scene_id=layout.new_id("scn"), data={}
        )
    await fresh_pool.execute(
        "UPDATE webhook_events SET created_at = now() - interval '1 hour' WHERE id = $1", event
    )
    async with TestClient(OriginTestServer(create_app(s))) as origin:
        text = await (await origin.get("/metrics")).text()
        assert 3600 <= _sample(text, "storyforge_webhook_oldest_pending_seconds") < 3660
        assert _sample(text, 'storyforge_webhook_deliveries{status="queued"}') == 1
        (job_id,) = [r["id"] for r in await fresh_pool.fetch("SELECT id FROM jobs")]
        async with fresh_pool.acquire() as conn:
            await jobs.cancel(conn, job_id, s)  # the delivery is dead: nothing pending
        text = await (await origin.get("/metrics")).text()
        assert _sample(text, "storyforge_webhook_oldest_pending_seconds") == 0
