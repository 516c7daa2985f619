"""storyforge.supervise on real short-lived processes: restart with backoff, a crash
loop named, and stop() killing what ignores SIGTERM after the grace period."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from storyforge import supervise

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def _python(code: str):
    return lambda: subprocess.Popen([sys.executable, "-c", code])


def _exited(child: supervise.Child) -> None:
    assert child.proc is not None
    child.proc.wait(10)


def test_a_child_that_exits_is_restarted_then_a_crash_loop_stops_the_group():
    child = supervise.Child("flaky", _python("raise SystemExit(3)"))
    now = 1000.0
    supervise.step([child], now)  # started
    first = child.pid
    for n in range(1, supervise.CRASH_LOOP_EXITS):
        _exited(child)
        supervise.step([child], now)  # noticed: a restart is scheduled, not yet due
        assert child.proc is None and child.restart_at is not None
        assert child.restart_at - now <= supervise.RESTART_CAP
        assert len(child.exits) == n
        now = child.restart_at
        supervise.step([child], now)  # restarted
        assert child.pid is not None and child.pid != first
    _exited(child)
    with pytest.raises(supervise.CrashLoop, match="flaky exited 5 times within 60 s"):
        supervise.step([child], now)


def test_old_exits_are_forgotten():
    child = supervise.Child("rare", _python("raise SystemExit(1)"))
    now = 0.0
    for _ in range(supervise.CRASH_LOOP_EXITS * 2):
        supervise.step([child], now)  # (re)start
        _exited(child)
        supervise.step([child], now)  # noticed
        now += supervise.CRASH_LOOP_WINDOW + 1  # each exit over a minute after the last
    assert len(child.exits) == 1


def test_stop_terminates_and_kills_after_the_grace_period():
    polite = supervise.Child("polite", _python("import time; time.sleep(60)"))
    stubborn = supervise.Child(
        "stubborn",
        lambda: subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE),
    )
    supervise.step([polite, stubborn], 0.0)
    assert stubborn.proc is not None and stubborn.proc.stdout is not None
    assert stubborn.proc.stdout.readline() == b"ready\n"  # its handler is in place
    started = time.monotonic()
    supervise.stop([polite, stubborn], grace=1.0)
    assert time.monotonic() - started < 10
    assert polite.proc is not None and polite.proc.returncode == -15
    assert stubborn.proc.returncode == -9
