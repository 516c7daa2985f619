"""Progress in one unit (issue 24): the clamp every reader and writer of a job's
progress goes through, and what the APIs show for it (core/queue.py)."""

from __future__ import annotations

import pytest

from core import queue


@pytest.mark.parametrize(
    "value,fraction", [(None, 0.0), (-0.5, 0.0), (0.0, 0.0), (0.44, 0.44), (1, 1.0), (44, 1.0)]
)
def test_progress_fraction_clamps(value, fraction):
    assert queue.progress_fraction(value) == fraction


@pytest.mark.parametrize(
    "status,value,shown",
    [
        ("ready", 0.2, 1.0),
        ("processing", 1.0, 0.99),
        ("processing", 0.5, 0.5),
        ("processing", 55.0, 0.99),  # a percentage from a worker of the last release
        ("failed", 0.3, 0.3),
        ("failed", -1, 0.0),
        ("processing", 0.8372093023255814, 0.837),
    ],
)
def test_progress_shown(status, value, shown):
    assert queue.progress_shown(status, value) == shown
