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
    said "database is up to date") stops with one line and creates nothing."""
    for package in ("core", "origin", "workers", "storyforge", "migrations"):
        lost = ("*.sql",) if package == "migrations" else ()
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", *lost),
        )
    out = run(
        ["migrate"], env={"DATABASE_URL": fresh_db, "PYTHONPATH": str(tmp_path)}, cwd=tmp_path
    )
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("storyforge: no migration files found in ")
    assert str(tmp_path / "migrations") in lines[0]


def _start_dev(home: Path, port: int, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        STORYFORGE
        + [
            "dev",
            "--home",
            str(home),
            "--port",
            str(port),
            "--workers",
            "1",
            *(extra or ["--no-demo"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("ready: "):
            return proc, line.strip()
    proc.kill()
    raise AssertionError("storyforge dev did not print ready:")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


@pytest.mark.slow
def test_dev_comes_up_and_reuses_its_data(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    proc, line = _start_dev(home, port)
    try:
        assert line == f"ready: http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert r.status == 200
            assert json.load(r)["status"] == "ready"
        marker = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "storyforge",
                "-d",
                "storyforge",
                "-tAc",
                "INSERT INTO users (id, username) VALUES ('usr_0000000000marker', 'marker') "
                "RETURNING id",
            ],
            env={**os.environ, "PGPORT": _pg_port(home)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert marker.stdout.splitlines()[0] == "usr_0000000000marker"
    finally:
        _stop(proc)
    # every child and the cluster are gone
    assert not (home / "pg" / "postmaster.pid").exists()

    proc, line = _start_dev(home, port)
    try:
        out = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "storyforge",
                "-d",
                "storyforge",
                "-tAc",
                "SELECT username FROM users WHERE id = 'usr_0000000000marker'",
            ],
            env={**os.environ, "PGPORT": _pg_port(home)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "marker"
    finally:
        _stop(proc)


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


def _worker_pid(dev: int) -> int | None:
    workers = [pid for pid, cmd in child_pids(dev).items() if "storyforge.cli worker" in cmd]
    return workers[0] if len(workers) == 1 else None


@pytest.mark.slow
def test_dev_restarts_a_killed_worker_and_its_postgres(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc, _ = _start_dev(home, port)
    try:
        worker = _wait_for(lambda: _worker_pid(proc.pid), 10, "the worker")
        os.kill(worker, signal.SIGKILL)
        _wait_for(lambda: (_worker_pid(proc.pid) or worker) != worker, 30, "a new worker")

        postmaster = int((home / "pg" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(postmaster, signal.SIGKILL)
        _wait_for(lambda: not _ready(base), 10, "the origin to notice")

        def new_postmaster() -> bool:
            try:
                pid = int((home / "pg" / "postmaster.pid").read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                return False
            return pid != postmaster and _ready(base)

        _wait_for(new_postmaster, 90, "Postgres restarted and the origin ready again")
        assert proc.poll() is None  # the stack kept running throughout
    finally:
        _stop(proc)
    assert not (home / "pg" / "postmaster.pid").exists()
    assert child_pids(proc.pid) == {}


def _pg_port(home: Path) -> str:
    pid = (home / "pg" / "postmaster.pid").read_text().splitlines()
    return pid[3].strip()


@pytest.mark.slow
def test_dev_creates_the_demo_scene_once(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    proc, _ = _start_dev(home, port, "--workers", "2")
    try:
        line = proc.stdout.readline().strip()
        scene = line.split()[2].rstrip(":")
        assert line == f"demo scene {scene}: http://127.0.0.1:{port}/player/{scene}"
        deadline = time.monotonic() + 180
        body = {}
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/v1/scenes/{scene}/playlist", timeout=5
            ) as r:
                body = json.load(r)
            if body["segmentCount"] == 3:
                break
            time.sleep(1)
        assert body["segmentCount"] == 3, body
        assert len({s["contributor"]["id"] for s in body["segments"]}) == 3
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/player/{scene}", timeout=5) as r:
            assert r.status == 200
    finally:
        _stop(proc)
    # a second start reuses the demo scene instead of making another
    proc, _ = _start_dev(home, port, "--workers", "1")
    try:
        assert proc.stdout.readline().strip() == line
    finally:
        _stop(proc)
