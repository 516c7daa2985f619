"""Supervising child processes: each child is started, restarted with backoff when it
exits, and stopped on request (SIGTERM, then SIGKILL after a grace period). A child
that exits too often (a crash loop) stops the whole group with a message naming it.
Used by `storyforge serve --processes N` (one origin process per core) and by
`storyforge dev` (Postgres, the origin and the workers)."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.backoff import backoff_seconds
from storyforge import StartupError

log = logging.getLogger("storyforge.supervise")

CRASH_LOOP_EXITS = 5  # exits of one child within CRASH_LOOP_WINDOW stop the group
CRASH_LOOP_WINDOW = 60.0
RESTART_BASE = 0.5  # first restart delay ceiling (seconds), doubled per recent exit
RESTART_CAP = 15.0


@dataclass
class Child:
    """One supervised process: `start()` makes a new one each time it is needed."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    stop_signal: int = signal.SIGTERM  # what asks it to stop gracefully
    proc: subprocess.Popen[bytes] | None = None
    exits: deque[float] = field(default_factory=deque)
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class CrashLoop(StartupError):
    """A child exited CRASH_LOOP_EXITS times within CRASH_LOOP_WINDOW seconds."""


def step(children: list[Child], now: float) -> None:
    """One pass: start children that are due, notice children that exited (schedule
    their restart with backoff, or raise CrashLoop)."""
    for child in children:
        if child.proc is None:
            if child.restart_at is None or now >= child.restart_at:
                child.proc = child.start()
                child.restart_at = None
                if child.exits:
                    log.warning("restarted %s (pid %d)", child.name, child.proc.pid)
            continue
        status = child.proc.poll()
        if status is None:
            continue
        child.proc = None
        while child.exits and child.exits[0] < now - CRASH_LOOP_WINDOW:
            child.exits.popleft()
        child.exits.append(now)
        if len(child.exits) >= CRASH_LOOP_EXITS:
            raise CrashLoop(
                f"{child.name} exited {len(child.exits)} times within "
                f"{CRASH_LOOP_WINDOW:g} s (last status {status}): giving up"
            )
        delay = backoff_seconds(len(child.exits), base=RESTART_BASE, cap=RESTART_CAP)
        child.restart_at = now + delay
        log.warning("%s exited with status %s; restarting in %.1f s", child.name, status, delay)


def stop_requested() -> Callable[[], bool]:
    """Install SIGINT and SIGTERM handlers that only note the request, and return what
    says whether one came (the `stopping` of `run`), for a supervisor to stop its
    children itself."""
    requested = False

    def _note(signum: int, frame: object) -> None:
        nonlocal requested
        requested = True

    signal.signal(signal.SIGINT, _note)
    signal.signal(signal.SIGTERM, _note)
    return lambda: requested


def run(children: list[Child], stopping: Callable[[], bool], interval: float = 0.2) -> None:
    """Keep `children` running until `stopping()` is true (or a crash loop raises)."""
    while not stopping():
        step(children, time.monotonic())
        time.sleep(interval)


def stop(children: list[Child], grace: float) -> None:
    """Ask every running child to stop (its `stop_signal`), wait up to `grace` seconds
    in all, then SIGKILL what is left (and say so)."""
    running = [c for c in children if c.proc is not None and c.proc.poll() is None]
    for child in running:
        assert child.proc is not None
        child.proc.send_signal(child.stop_signal)
    deadline = time.monotonic() + grace
    for child in running:
        assert child.proc is not None
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %g s: killed", child.name, grace)
            child.proc.kill()
            child.proc.wait()
