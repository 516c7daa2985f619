"""The supervisor of `storyforge dev`: starts the origin and the workers as child
`storyforge` processes, waits for /readyz, watches them and stops them in order."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from storyforge import StartupError

STORYFORGE = [sys.executable, "-m", "storyforge.cli"]


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `storyforge ARGS`; the child ignores the terminal's Ctrl-C, because
    `stop` stops the children in order."""
    return subprocess.Popen(
        [*STORYFORGE, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )


def role(child: subprocess.Popen[bytes]) -> str:
    """What a child runs, e.g. "serve" or "worker --concurrency 1"."""
    args = child.args
    return " ".join(map(str, args[3:])) if isinstance(args, list) else str(args)


def wait_ready(
    base: str, children: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not stopping():
        for child in children:
            if child.poll() is not None:
                raise StartupError(f"'{role(child)}' exited during start-up")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    if not stopping():
        raise StartupError(f"the origin did not become ready at {base}/readyz within 90 s")


def watch(children: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]) -> None:
    """Return when `stopping()` is true; raise when a child exits before that."""
    while not stopping():
        for child in children:
            if child.poll() is not None:
                raise StartupError(
                    f"child process {role(child)} exited with status {child.returncode}"
                )
        time.sleep(0.2)


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child, then wait up to 40 s in all before killing what is left."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 40
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
