"""Loopback ports for the services tests start, and settings that use them."""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Any

from storyforge.dev.cluster import free_port

__all__ = ["free_port", "on_moto", "wait_port"]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


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
