"""Loopback ports for the services tests start, settings that use them, and the
processes they leave."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storyforge.dev.cluster import Cluster, free_port, open_cluster

__all__ = [
    "child_pids",
    "free_port",
    "migrated_cluster",
    "on_moto",
    "processes_mentioning",
    "stop_mid_job",
    "wait_port",
    "worker_process",
]


@contextmanager
def migrated_cluster(prefix: str = "storyforge-pg-") -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster (fsync off) in a temporary directory, migrated;
    stopped and removed afterwards."""
    import asyncio

    from core import db

    base = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = open_cluster(base / "data")
    cluster.init()
    cluster.start(fast=True)
    try:
        asyncio.run(db.migrate_dsn(cluster.dsn))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def child_pids(parent: int) -> dict[int, str]:
    """The live children of `parent` with their command lines (read from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def on_moto(settings: Any, endpoint: str, **changes: Any) -> Any:
    """`settings` with storage on moto's S3 server at `endpoint` (its test keys)."""
    return dataclasses.replace(
        settings,
        storage="s3",
        s3_endpoint_url=endpoint,
        s3_access_key="test",
        s3_secret_key="test",
        **changes,
    )


def processes_mentioning(text: str, *also: str) -> list[int]:
    """PIDs whose command line contains `text` (and each of `also`; read from /proc,
    no procps needed)."""
    found = []
    wanted = [t.encode() for t in (text, *also) if t]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if all(w in cmdline for w in wanted):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def bytes_read(pid: int) -> int:
    """What process `pid` has read so far (`rchar` of /proc/PID/io); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


async def stop_mid_job(
    worker: subprocess.Popen[bytes],
    job_id: str,
    fed: int,
    *,
    tool: str = "",
    timeout: float = 120.0,
) -> None:
    """Run `worker` in 20 ms slices (SIGCONT, then SIGSTOP) until a child process of job
    `job_id` (ffmpeg, named after the job's working directory; with `tool`, one whose
    command line also holds it) has read `fed` bytes, and leave the worker stopped
    there: a point in the middle of the job however fast this machine runs it. The
    worker's lease runs on meanwhile; SIGKILL or SIGCONT it soon."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            children = processes_mentioning(f"storyforge-{job_id}", tool)
            if any(bytes_read(pid) >= fed for pid in children):
                return
            if worker.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id}'s children never read {fed} bytes (worker exit {worker.poll()})"
                )
            worker.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.02)
            worker.send_signal(signal.SIGSTOP)
    except BaseException:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
        raise


def worker_process(settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`storyforge worker [args]` as its own process on `settings`' database,
    LocalStorage and ladder, with a 3 s lease (a killed worker's job is taken over
    quickly) and `env` on top."""
    environ = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STORAGE": "local",
        "STORAGE_ROOT": str(settings.storage_root),
        "JOB_LEASE_SECONDS": "3",
        "LOG_FORMAT": "text",
        "WORKER_METRICS_PORT": str(free_port()),  # workers side by side: a port each
        "REFINE": "off",  # one stage, as the `settings` fixture (tests turn it on)
        "LADDER": ",".join(
            f"{r.name}:{r.width}x{r.height}:{r.video_bitrate}/{r.audio_bitrate}"
            for r in settings.ladder
        ),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "storyforge.cli", "worker", *args],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
