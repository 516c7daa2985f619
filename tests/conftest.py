"""Session fixtures for real services: a throwaway PostgreSQL cluster and moto's S3 server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """A throwaway PostgreSQL cluster for the whole run (fsync off), migrated once."""
    import asyncio
    import shutil
    import tempfile

    from origin import db, pgcluster

    base = Path(tempfile.mkdtemp(prefix="storyforge-pg-"))
    cluster = pgcluster.open_cluster(base / "data")
    cluster.init()
    cluster.start(fast=True)
    try:
        asyncio.run(db.migrate_dsn(cluster.dsn))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster) -> str:
    """DSN of the migrated test database."""
    return pg_cluster.dsn


@pytest.fixture
def fresh_db(pg_cluster) -> Iterator[str]:
    """An empty, unmigrated database of its own for a test; dropped afterwards."""
    import asyncio
    import uuid

    import asyncpg

    name = "t_" + uuid.uuid4().hex[:12]
    admin = pg_cluster.dsn.rsplit("/", 1)[0] + "/postgres"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name}"))
    try:
        yield pg_cluster.dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
