"""`storyforge serve --processes N`: N origin processes on one port, each answering;
a killed one comes back while the port keeps answering; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers.services import child_pids, free_port

pytestmark = pytest.mark.slow


def _pid(base: str) -> int | None:
    """The pid of the origin process that answered a new connection's /metrics."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith("storyforge_process_info{"):
            return int(line.split('pid="')[1].split('"')[0])
    raise AssertionError("no storyforge_process_info in /metrics")


def _children(parent: int) -> set[int]:
    return set(child_pids(parent))


def _two_children(parent: int, gone: int | None = None) -> set[int] | None:
    found = _children(parent)
    return found if len(found) == 2 and gone not in found else None


def _pids_answering(base: str, tries: int = 200) -> set[int]:
    return {p for p in (_pid(base) for _ in range(tries)) if p is not None}


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_processes_share_the_port_restart_and_stop(settings, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "STORAGE": "local",
        "STORAGE_ROOT": str(tmp_path / "storage"),
        "LOG_FORMAT": "text",
        "PORT": str(port),
    }
    parent = subprocess.Popen(
        [sys.executable, "-m", "storyforge.cli", "serve", "--processes", "2", "--grace", "5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        children = _wait(lambda: _two_children(parent.pid), 30, "two children")
        # both processes answer (the kernel spreads new connections over them)
        _wait(lambda: _pids_answering(base, 20) == children, 60, f"answers from {children}")

        victim = min(children)
        os.kill(victim, signal.SIGKILL)
        # the port keeps answering while the victim is down (a connection the kernel
        # queued on the victim's socket as it died may be reset: retry), and it is replaced
        _wait(lambda: _pid(base) in children - {victim}, 5, "an answer from the survivor")
        replaced = _wait(lambda: _two_children(parent.pid, victim), 30, "a replacement process")
        _wait(lambda: _pids_answering(base, 20) == replaced, 60, f"answers from {replaced}")
    finally:
        parent.send_signal(signal.SIGTERM)
        try:
            status = parent.wait(30)
        except subprocess.TimeoutExpired:
            parent.kill()
            raise
        stderr = parent.stderr.read() if parent.stderr else ""
    assert status == 0, stderr
    assert "exited with status -9; restarting" in stderr, stderr
    assert _children(parent.pid) == set()
    assert "Traceback" not in stderr, stderr
