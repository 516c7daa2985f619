#!/usr/bin/env python3
"""Health check of the StoryForge container (Dockerfile HEALTHCHECK, ECS healthCheck).

The image runs `storyforge serve`, `worker` or `migrate`. While a `storyforge serve`
process runs in the container, it is healthy when GET /healthz on $PORT answers 200
within 3 s. The other commands serve no HTTP; they are healthy while they run (a
worker that dies exits, and its orchestrator restarts it).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def serving() -> bool:
    """Is a `storyforge serve` process running here? (PID 1 may be an init process.)"""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(os.path.basename(a) == b"storyforge" for a in argv[:2]) and b"serve" in argv:
            return True
    return False


def main() -> int:
    if not serving():
        return 0
    host = os.environ.get("HOST", "") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "*"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{os.environ.get('PORT', '8080')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
