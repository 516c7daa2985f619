"""Loopback ports for the services tests start."""

from __future__ import annotations

import socket
import time

from storyforge.dev.cluster import free_port

__all__ = ["free_port", "wait_port"]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")
