"""Waiting for something another process or task will make true: `until` polls an
async check until it answers something true (and returns that answer), or fails the
test naming what did not happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    check: Callable[[], Awaitable[T]],
    timeout: float = 60.0,
    what: str = "the condition",
    step: float = 0.05,
) -> T:
    """`check()`'s first true answer, polled every `step` seconds; AssertionError
    naming `what` when none came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        await asyncio.sleep(step)
    return result
