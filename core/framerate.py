"""Exact frame rates: the one rule that turns a frame rate written as a float (ffprobe's,
a rendition row's 3-decimal `frame_rate`, an HLS FRAME-RATE) back into the exact rate
the frames are on, and the standard rates the transcoder snaps sources to. The
transcoder (`workers.media.h264`), the export plan (`core.exportplan`) and the stills
(`origin.playback.moments`) all read rates through it, so a clip's frame grid is the
same wherever it is computed. Pure.

A rendition row keeps the rate with 3 decimals (RFC 8216 §4.3.4.2 prints FRAME-RATE
so), which loses the exact NTSC rates (29.97 is 30000/1001 to 3 decimals); `exact_rate`
brings them back, and every other rate the transcoder writes (a fraction of denominator
up to 1001 whose 3 decimals identify it, such as 12.5 or 15) is read as itself.
"""

from __future__ import annotations

from fractions import Fraction

#: The rates of cameras, phones and broadcast; the transcoder snaps a source within
#: 1 % of one of them to it (`workers.media.h264.output_fps`).
STANDARD_RATES: tuple[Fraction, ...] = (
    Fraction(24000, 1001),
    Fraction(24),
    Fraction(25),
    Fraction(30000, 1001),
    Fraction(30),
    Fraction(48),
    Fraction(50),
    Fraction(60000, 1001),
    Fraction(60),
)
#: What 3 decimals lose, and how far a written rate may be from the rate it stands
#: for (over that loss, under the 0.024 between 24000/1001 and 24).
ROUNDING = 0.0005
TOLERANCE = 0.0015


def exact_rate(value: float) -> Fraction:
    """The exact frame rate `value` stands for: 29.97 -> 30000/1001, 25.0 -> 25,
    12.5 -> 25/2, 14.985 -> 15000/1001. An NTSC rate (N x 1000/1001) when `value` is
    one to within TOLERANCE and is not an integer rate, else the nearest fraction whose
    denominator is at most 1001 (ffmpeg's rates are such fractions)."""
    ntsc = round(value * 1001 / 1000)
    if (
        ntsc > 0
        and abs(value - ntsc * 1000 / 1001) < TOLERANCE
        and abs(value - round(value)) > ROUNDING
    ):
        return Fraction(ntsc * 1000, 1001)
    return Fraction(value).limit_denominator(1001)
