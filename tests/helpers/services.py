"""Loopback ports for the services tests start, and the processes they leave."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from storyforge.dev.cluster import free_port

__all__ = ["free_port", "processes_mentioning", "wait_port", "worker_process"]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (read from /proc, no procps needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def worker_process(settings, **env: str) -> subprocess.Popen[bytes]:
    """`storyforge worker` as its own process on `settings`' database and LocalStorage,
    with a 3 s lease (a killed worker's job is taken over quickly) and `env` on top."""
    environ = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STORAGE": "local",
        "STORAGE_ROOT": str(settings.storage_root),
        "JOB_LEASE_SECONDS": "3",
        "LOG_FORMAT": "text",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "storyforge.cli", "worker"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
