"""The `storyforge` command as a user runs it: clear one-line start-up errors, and the
embedded dev stack coming up, answering /readyz, and reusing its data on restart."""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.helpers.services import child_pids, free_port

ROOT = Path(__file__).resolve().parents[2]

STORYFORGE = [sys.executable, "-m", "storyforge.cli"]


def run(args, env=None, timeout=60, cwd=None):
    return subprocess.run(
        STORYFORGE + args,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", ["dev", "serve", "worker", "migrate"])
def test_help_explains_every_option(command):
    out = run([command, "--help"])
    assert out.returncode == 0
    assert "usage: storyforge " + command in out.stdout


def test_worker_help_names_the_job_kinds_it_runs():
    from core.settings import Settings
    from workers.runtime.main import handlers

    out = run(["--help"])
    found = re.search(r"run a job worker \(([a-z_,\s]+) jobs\)", out.stdout)
    assert found, out.stdout
    named = " ".join(found.group(1).split())  # argparse wraps long help lines
    assert named.split(", ") == sorted(handlers(Settings.from_env({}), storage=None))


def test_unknown_storage_backend_is_one_clear_line():
    out = run(["serve"], env={"STORAGE": "floppy"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == ["storyforge: configuration error: STORAGE: 'floppy' is not one of local, s3"]


@pytest.mark.parametrize("command", ["migrate", "serve", "worker"])
def test_unreachable_database_is_one_clear_line(command, tmp_path):
    port = free_port()
    out = run(
        [command],
        env={
            "DATABASE_URL": f"postgresql://u:hunter2@127.0.0.1:{port}/x",
            "STORAGE_ROOT": str(tmp_path),
            "PORT": str(free_port()),
        },
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("storyforge: cannot connect to the database")
    assert "hunter2" not in out.stderr
    assert "Traceback" not in out.stderr


def test_migrate_refuses_a_database_with_migrations_it_does_not_know(fresh_db):
    assert run(["migrate"], env={"DATABASE_URL": fresh_db}).returncode == 0

    async def insert_newer() -> None:
        conn = await asyncpg.connect(fresh_db)
        try:
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) "
                "VALUES ('9999', '9999_newer.sql', 'x')"
            )
        finally:
            await conn.close()

    asyncio.run(insert_newer())
    out = run(["migrate"], env={"DATABASE_URL": fresh_db})
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "storyforge: the database holds migrations this version does not know: "
        "9999_newer.sql (applied by a newer version?)"
    ]


def test_migrate_without_migration_files_fails_loudly(fresh_db, tmp_path):
    """An installation that lost its migrations (the bug of issue 11: a plain install
    without its package data said "database is up to date") stops with one line and
    creates nothing: the packages, and `migrations` without its SQL files."""
    for package in ("core", "origin", "workers", "storyforge"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (tmp_path / "migrations").mkdir()
    shutil.copy(ROOT / "migrations" / "__init__.py", tmp_path / "migrations")
    out = run(
        ["migrate"], env={"DATABASE_URL": fresh_db, "PYTHONPATH": str(tmp_path)}, cwd=tmp_path
    )
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("storyforge: no migration files found in ")
    assert str(tmp_path / "migrations") in lines[0]


class DevStack:
    """`storyforge dev` (2 workers, the demo scene) on a home of the module's own, on
    the small test ladder in one stage: started once for the tests that can share it,
    stopped and started again by the one that checks a restart."""

    ENV = {"LADDER": "180p:320x180:300k", "REFINE": "off"}

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.ready = self.demo = ""

    def start(self, workers: int = 2) -> None:
        """Start it and wait for its `ready:` and `demo scene` lines."""
        self.proc = subprocess.Popen(
            [*STORYFORGE, "dev", "--home", str(self.home), "--port", str(self.port),
             "--workers", str(workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **self.ENV},
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready: "):
                self.ready = line.strip()
                self.demo = self.proc.stdout.readline().strip()
                return
        self.proc.kill()
        raise AssertionError("storyforge dev did not print ready:")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0

    def pg_port(self) -> str:
        return (self.home / "pg" / "postmaster.pid").read_text().splitlines()[3].strip()

    def psql(self, sql: str) -> str:
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "storyforge", "-d", "storyforge", "-tAc", sql],
            env={**os.environ, "PGPORT": self.pg_port()},
            capture_output=True,
            text=True,
            check=True,
        ).stdout


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[DevStack]:
    stack = DevStack(tmp_path_factory.mktemp("dev") / "home")
    stack.start()
    try:
        yield stack
    finally:
        if stack.proc is not None and stack.proc.poll() is None:
            stack.stop()


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return json.load(r)


@pytest.mark.slow
def test_dev_comes_up_with_the_demo_scene(dev):
    assert dev.ready == f"ready: {dev.base}"
    assert _get_json(dev.base + "/readyz")["status"] == "ready"
    scene = dev.demo.split()[2].rstrip(":")
    assert dev.demo == f"demo scene {scene}: {dev.base}/player/{scene}"
    deadline = time.monotonic() + 180
    body: dict = {}
    while time.monotonic() < deadline:
        body = _get_json(f"{dev.base}/api/v1/scenes/{scene}/playlist")
        if body["segmentCount"] == 3:
            break
        time.sleep(0.5)
    assert body["segmentCount"] == 3, body
    assert len({s["contributor"]["id"] for s in body["segments"]}) == 3
    with urllib.request.urlopen(f"{dev.base}/player/{scene}", timeout=5) as r:
        assert r.status == 200


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _worker_pids(dev: int) -> set[int]:
    return {pid for pid, cmd in child_pids(dev).items() if "storyforge.cli worker" in cmd}


@pytest.mark.slow
def test_dev_restarts_a_killed_worker_and_its_postgres(dev):
    assert dev.proc is not None
    workers = _wait_for(lambda: _worker_pids(dev.proc.pid), 10, "the workers")
    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    _wait_for(
        lambda: (
            (now := _worker_pids(dev.proc.pid)) and killed not in now and len(now) == len(workers)
        ),
        30,
        "a new worker",
    )

    postmaster = int((dev.home / "pg" / "postmaster.pid").read_text().splitlines()[0])
    os.kill(postmaster, signal.SIGKILL)
    _wait_for(lambda: not _ready(dev.base), 10, "the origin to notice")

    def new_postmaster() -> bool:
        try:
            pid = int((dev.home / "pg" / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return False
        return pid != postmaster and _ready(dev.base)

    _wait_for(new_postmaster, 90, "Postgres restarted and the origin ready again")
    assert dev.proc.poll() is None  # the stack kept running throughout


@pytest.mark.slow
def test_dev_stops_cleanly_and_reuses_its_data_and_demo_scene(dev):
    marker = dev.psql(
        "INSERT INTO users (id, username) VALUES ('usr_0000000000marker', 'marker') RETURNING id"
    )
    assert marker.splitlines()[0] == "usr_0000000000marker"
    assert dev.proc is not None
    first = dev.proc.pid
    dev.stop()
    # every child and the cluster are gone
    assert not (dev.home / "pg" / "postmaster.pid").exists()
    assert child_pids(first) == {}

    demo = dev.demo
    dev.start(workers=1)
    assert dev.ready == f"ready: {dev.base}"
    assert dev.psql("SELECT username FROM users WHERE id = 'usr_0000000000marker'").strip() == (
        "marker"
    )
    # the demo scene is reused, not made again
    assert dev.demo == demo
