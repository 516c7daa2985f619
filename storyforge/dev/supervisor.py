"""The children of `storyforge dev`: `storyforge` commands started with the dev
environment, and the wait for the origin's /readyz. Restarting and stopping them is
storyforge/supervise.py's."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from storyforge import StartupError

STORYFORGE = [sys.executable, "-m", "storyforge.cli"]


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `storyforge ARGS` in a session of its own, so the terminal's Ctrl-C
    reaches only the supervisor, which stops the children in order."""
    return subprocess.Popen(
        [*STORYFORGE, *args], env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )


def wait_ready(base: str, running: Callable[[], None], stopping: Callable[[], bool]) -> None:
    """Wait for the origin's /readyz (90 s at most); `running()` keeps the children
    going meanwhile (and raises on a crash loop)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not stopping():
        running()
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    if not stopping():
        raise StartupError(f"the origin did not become ready at {base}/readyz within 90 s")
