"""Exact frame rates (core/framerate.py): what a float written by ffprobe, a rendition
row (3 decimals) or a FRAME-RATE attribute stands for, and that every rate the
transcoder encodes at reads back as itself from its row."""

from __future__ import annotations

from fractions import Fraction

import pytest

from core.framerate import STANDARD_RATES, exact_rate
from workers.media.h264 import output_fps


@pytest.mark.parametrize(
    ("written", "exact"),
    [
        (24.0, Fraction(24)),
        (25.0, Fraction(25)),
        (30.0, Fraction(30)),
        (50.0, Fraction(50)),
        (60.0, Fraction(60)),
        (29.97, Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (30000 / 1001, Fraction(30000, 1001)),  # ffprobe's float, full precision
        (14.985, Fraction(15000, 1001)),  # an NTSC rate outside the standard ones
        (0.999, Fraction(1000, 1001)),
        (1.0, Fraction(1)),
        (15.0, Fraction(15)),
        (12.5, Fraction(25, 2)),
        (23.5, Fraction(47, 2)),
        (17.3, Fraction(173, 10)),
    ],
)
def test_exact_rate(written: float, exact: Fraction) -> None:
    assert exact_rate(written) == exact


def test_the_standard_rates_are_their_own_exact_rates() -> None:
    for rate in STANDARD_RATES:
        assert exact_rate(float(rate)) == rate
        assert exact_rate(round(float(rate), 3)) == rate


@pytest.mark.parametrize(
    "source",
    [8, 10, 12, 12.5, 15, 15000 / 1001, 16, 17.3, 18, 20, 23.5, 29.93, 30.2, 44, 47.952, 55],
)
def test_a_rendition_rows_rate_reads_back_as_the_rate_encoded(source: float) -> None:
    """The transcoder encodes at `output_fps` and stores it with 3 decimals; the
    export plan and the stills read the row through `exact_rate`: the same grid."""
    encoded = output_fps(source)
    assert exact_rate(round(float(encoded), 3)) == encoded
