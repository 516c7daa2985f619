"""Loudness matching, pure parts: ffmpeg's EBU R128 summary read back, the decision
(linear, dynamic, silent, no audio, off; the gain cap) and the filters that carry it
out. (The measurement command and the gain's place in the filter graph are in
test_encoding.py.)"""

from __future__ import annotations

import pytest

from workers.media.loudness import GainPlan, Measurement, parse_ebur128_summary, plan_gain

# What ffmpeg 5.1's ebur128 prints at the info level (the real text of a run).
SUMMARY = """\
size=N/A time=00:00:03.00 bitrate=N/A speed= 117x
video:0kB audio:562kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_ebur128_2 @ 0x55caa0abba80] Summary:

  Integrated loudness:
    I:         -34.2 LUFS
    Threshold: -44.2 LUFS

  Loudness range:
    LRA:         3.1 LU
    Threshold: -54.3 LUFS
    LRA low:   -35.9 LUFS
    LRA high:  -32.8 LUFS

  True peak:
    Peak:      -29.6 dBFS
"""

SILENCE = """\
[Parsed_ebur128_2 @ 0x561a694579c0] Summary:

  Integrated loudness:
    I:         -70.0 LUFS
    Threshold:   0.0 LUFS

  Loudness range:
    LRA:         0.0 LU
    Threshold:   0.0 LUFS
    LRA low:     0.0 LUFS
    LRA high:    0.0 LUFS

  True peak:
    Peak:       -inf dBFS
"""


def test_parse_summary() -> None:
    assert parse_ebur128_summary(SUMMARY) == Measurement(-34.2, -29.6, 3.1, -44.2)
    assert parse_ebur128_summary(SILENCE) == Measurement(-70.0, None, 0.0, 0.0)
    # an earlier summary (say, of a filter re-initialised mid-stream) is not the answer
    first = SUMMARY.replace("-34.2 LUFS", "-50.0 LUFS")
    assert parse_ebur128_summary(first + SUMMARY).integrated == -34.2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Conversion failed!",
        SUMMARY.replace("    I:         -34.2 LUFS\n", ""),
        SUMMARY.replace("-29.6 dBFS", "nan dBFS"),
        SUMMARY.replace("3.1 LU\n", "inf LU\n"),
    ],
)
def test_parse_refuses_a_missing_or_broken_summary(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ebur128_summary(text)


def m(i: float, tp: float | None, lra: float = 3.0, thresh: float | None = None) -> Measurement:
    return Measurement(i, tp, lra, i - 10 if thresh is None else thresh)


@pytest.mark.parametrize(
    "measured,mode,gain,capped",
    [
        (m(-34.2, -29.6), "linear", 18.2, False),  # quiet: up, peak far below the ceiling
        (m(-11.2, -6.9), "linear", -4.8, False),  # loud: down, any amount
        (m(-3.0, 0.4), "linear", -13.0, False),  # clipped source: down is always linear
        (m(-16.0, -10.0), "linear", 0.0, False),  # already there
        (m(-50.0, -40.0), "linear", 20.0, True),  # room tone: the cap holds (-30 LUFS)
        (m(-20.0, -5.5), "linear", 4.0, False),  # peak exactly at the ceiling after gain
        (m(-20.0, -5.49), "dynamic", 4.0, False),  # 0.01 dB over: the peak forbids it
        (m(-25.1, -2.4), "dynamic", 9.1, False),  # transients: dynamic
        (m(-60.0, -3.0), "dynamic", 20.0, True),  # capped and peaky
        (m(-70.0, -60.0), "silent", 0.0, False),  # nothing above the absolute gate
        (m(-40.0, None), "silent", 0.0, False),  # digital silence
    ],
)
def test_plan(measured: Measurement, mode: str, gain: float, capped: bool) -> None:
    p = plan_gain(measured, target=-16.0, max_gain=20.0, has_audio=True)
    assert (p.mode, p.gain, p.capped) == (mode, gain, capped)
    assert p.target == -16.0 and p.measured == measured


def test_plan_without_audio_or_switched_off() -> None:
    assert plan_gain(None, target=-16.0, max_gain=20.0, has_audio=False) == GainPlan(
        "no_audio", target=-16.0
    )
    assert plan_gain(m(-30, -20), target=None, max_gain=20.0, has_audio=True) == GainPlan("off")
    with pytest.raises(ValueError):
        plan_gain(None, target=-16.0, max_gain=20.0, has_audio=True)


def test_filters() -> None:
    linear = plan_gain(m(-34.2, -29.6), target=-16.0, max_gain=20.0, has_audio=True)
    assert linear.filters() == ["volume=volume=18.20dB:precision=float"]
    assert plan_gain(m(-16, -9), target=-16.0, max_gain=20.0, has_audio=True).filters() == []
    dynamic = plan_gain(
        m(-60.0, -3.0, lra=12.5, thresh=-71.2), target=-16, max_gain=20, has_audio=True
    )
    # aimed at the capped level (-40), the clip's own LRA kept, measured values in range
    assert dynamic.filters() == [
        "loudnorm=I=-40.00:TP=-2.00:LRA=12.50:measured_I=-60.00:measured_TP=-3.00"
        ":measured_LRA=12.50:measured_thresh=-71.20:linear=false",
        "aresample=48000",
        "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo",
    ]
    narrow = plan_gain(m(-20.0, -1.0, lra=2.0), target=-14.0, max_gain=20.0, has_audio=True)
    assert narrow.filters()[0].startswith("loudnorm=I=-14.00:TP=-2.00:LRA=7.00:")
    for mode in ("silent", "no_audio", "off"):
        assert GainPlan(mode).filters() == []  # type: ignore[arg-type]


def test_metadata() -> None:
    p = plan_gain(m(-50.0, -40.0, lra=4.0), target=-16.0, max_gain=20.0, has_audio=True)
    assert p.metadata() == {
        "mode": "linear",
        "target": -16.0,
        "truePeakCeiling": -1.5,
        "inputIntegrated": -50.0,
        "inputTruePeak": -40.0,
        "inputLoudnessRange": 4.0,
        "gain": 20.0,
        "gainCapped": True,
    }
    assert GainPlan("off").metadata() == {
        "mode": "off",
        "target": None,
        "truePeakCeiling": None,
        "inputIntegrated": None,
        "inputTruePeak": None,
        "inputLoudnessRange": None,
        "gain": 0.0,
        "gainCapped": False,
    }
