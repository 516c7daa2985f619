"""A clip of any stage can be joined with the export's re-encoded cuts: `ultrafast`
(the fast stage's default with REFINE=on) writes the same H.264 parameter sets as the
cuts' preset, on a Main and a High profile rung (real x264 through ffmpeg)."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from tests.helpers.clips import HAVE_FFMPEG, NO_FFMPEG_REASON
from workers.media.encoding import DEFAULT_RUNGS, video_encoder_args
from workers.media.exportcmd import CUT_PRESET

pytestmark = pytest.mark.skipif(not HAVE_FFMPEG, reason=NO_FFMPEG_REASON)


def parameter_sets(rung, preset: str) -> tuple[list[bytes], list[bytes]]:
    """The SPS and PPS NAL units of 1 s of lavfi video encoded as `rung` at `preset`."""
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi",
        "-i", f"testsrc2=size={rung.width}x{rung.height}:rate=30", "-t", "1",
        *video_encoder_args(rung, 30.0, gop=30, preset=preset),
        "-f", "h264", "-",
    ]  # fmt: skip
    stream = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    units = [u for u in (u.rstrip(b"\x00") for u in stream.split(b"\x00\x00\x01")) if u]
    return [u for u in units if u[0] & 0x1F == 7], [u for u in units if u[0] & 0x1F == 8]


@pytest.mark.parametrize("crf", [None, 23.0], ids=["abr", "per-title"])
@pytest.mark.parametrize("rung", DEFAULT_RUNGS, ids=lambda r: f"{r.name}-{r.profile}")
def test_ultrafast_writes_the_cuts_parameter_sets(rung, crf):
    """Either rate control (issue 26: capped CRF would write its QP into the PPS
    without x264's `stitchable`)."""
    sps, pps = parameter_sets(dataclasses.replace(rung, crf=crf), "ultrafast")
    assert (sps, pps) == parameter_sets(rung, CUT_PRESET)
    assert sps[0][1] == {"main": 77, "high": 100}[rung.profile]  # profile_idc kept


def test_bare_ultrafast_would_not():
    rung = DEFAULT_RUNGS[-1]
    args = video_encoder_args(rung, 30.0, gop=30, preset="ultrafast")
    assert "-x264-params" in args and "8x8dct=1" in args[args.index("-x264-params") + 1]
    assert "-x264-params" not in video_encoder_args(rung, 30.0, gop=30, preset="superfast")
