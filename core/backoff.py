"""The one retry delay of the product: exponential backoff with full jitter, used by
job retries, storage batch retries and every other loop that tries again."""

from __future__ import annotations

import random


def backoff_seconds(
    attempt: int,
    base: float = 2.0,
    cap: float = 300.0,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (1-based): exponential, full jitter.

    Uniform in [0, min(cap, base * 2 ** (attempt - 1))], so retries of many callers
    failing together spread out instead of stampeding.
    """
    if base < 0 or cap < 0:
        raise ValueError("backoff base and cap must be >= 0")
    exponent = min(max(attempt, 1) - 1, 62)
    ceiling = min(cap, base * (2.0**exponent))
    return (rng or random).uniform(0.0, ceiling)
