"""Loudness matching of a clip (EBU R128, ITU-R BS.1770-4): what the measurement pass
prints, the decision it leads to, the audio filters that carry the decision out in the
transcode's one pass, and the record kept in `metadata.json` and the renditions rows.
Pure: `workers.media.ffmpeg.measure_loudness` runs the measurement (ffmpeg's `ebur128`
filter over the upload's audio, exactly as the transcode normalises it), and
`workers.media.encoding` puts `GainPlan.filters()` into its filter graph.

Every clip is brought to one integrated loudness (the scene's target, LUFS) with its
true peak at most `TRUE_PEAK_CEILING`. The gain is linear (one `volume` factor, the
sound of the clip unchanged) whenever the measured true peak allows it; only when the
peak forbids it does ffmpeg's `loudnorm` work in dynamic mode (gain riding and a
true-peak limiter) with the measured values. A positive gain is capped, so the room
tone of a near-silent clip is not raised to speech level; a clip with nothing above
the BS.1770 absolute gate, or without audio, is left silent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

#: Largest true peak of a normalised clip, dBTP. EBU R128 s1 (streaming) recommends
#: -1 dBTP; the extra 0.5 dB leaves room for the AAC encoder's overshoot.
TRUE_PEAK_CEILING = -1.5
#: dB below the ceiling that dynamic mode aims its limiter at: loudnorm limits at 192 kHz
#: before the AAC encoder, and limited transients come back up in AAC (measured on
#: clicks: a -1.5 dBTP limit read -0.9 dBTP in the stored segments, a -2.0 limit -1.6).
DYNAMIC_HEADROOM = 0.5
#: ITU-R BS.1770-4 §2.8: blocks below -70 LUFS never count; an integrated loudness at or
#: below it means there is nothing to measure (digital silence, or next to it).
ABSOLUTE_GATE = -70.0
#: loudnorm's accepted range for its integrated-loudness target (ffmpeg af_loudnorm).
_LOUDNORM_I = (-70.0, -5.0)
#: Loudness-range target of the dynamic mode: the clip's own LRA, at least loudnorm's
#: default of 7 LU and at most its maximum of 50 LU (so the clip's dynamics are kept
#: and only what the true-peak limit forbids is changed).
_LRA_RANGE = (7.0, 50.0)

Mode = Literal["linear", "dynamic", "silent", "no_audio", "off"]
MODES: tuple[Mode, ...] = ("linear", "dynamic", "silent", "no_audio", "off")


@dataclass(frozen=True)
class Measurement:
    """What the measurement pass found (EBU R128 summary of ffmpeg's `ebur128`).

    ``integrated``: gated integrated loudness, LUFS (BS.1770-4 §2.8).
    ``true_peak``: maximum true peak over the channels, dBTP (BS.1770-4 Annex 2), None
    for digital silence (-inf). ``lra``: loudness range, LU (EBU Tech 3342).
    ``threshold``: the relative gate of the integrated measurement, LUFS.
    """

    integrated: float
    true_peak: float | None
    lra: float
    threshold: float


_SUMMARY = "Summary:"
_NUMBER = r"(-?(?:\d+(?:\.\d+)?|inf)|nan)"
_FIELDS = {
    "integrated": re.compile(r"Integrated loudness:\s*I:\s*" + _NUMBER + r"\s*LUFS"),
    "threshold": re.compile(
        r"Integrated loudness:\s*I:\s*\S+\s*LUFS\s*Threshold:\s*" + _NUMBER + r"\s*LUFS"
    ),
    "lra": re.compile(r"Loudness range:\s*LRA:\s*" + _NUMBER + r"\s*LU\b"),
    "true_peak": re.compile(r"True peak:\s*Peak:\s*" + _NUMBER + r"\s*dBFS"),
}


def parse_ebur128_summary(stderr: str) -> Measurement:
    """The last summary `ebur128=peak=true` printed (at ffmpeg's info log level).

    Raises ValueError when there is none, or when a figure is missing or not a number
    (other than the true peak of digital silence, -inf)."""
    at = stderr.rfind(_SUMMARY)
    if at < 0:
        raise ValueError("no EBU R128 summary in ffmpeg's output")
    text = stderr[at:]
    values: dict[str, float] = {}
    for name, pattern in _FIELDS.items():
        m = pattern.search(text)
        if m is None:
            raise ValueError(f"EBU R128 summary without {name}")
        values[name] = float(m[1])
    peak = values["true_peak"]
    if peak == -math.inf:
        true_peak: float | None = None
    elif math.isfinite(peak):
        true_peak = peak
    else:
        raise ValueError(f"EBU R128 summary: true peak {peak}")
    for name in ("integrated", "lra", "threshold"):
        if not math.isfinite(values[name]):
            if name == "integrated" and values[name] == -math.inf:
                values[name] = ABSOLUTE_GATE  # nothing above the gate
                continue
            raise ValueError(f"EBU R128 summary: {name} {values[name]}")
    return Measurement(values["integrated"], true_peak, values["lra"], values["threshold"])


@dataclass(frozen=True)
class GainPlan:
    """What the transcode does to a clip's audio level, and why.

    ``gain``: dB applied (linear) or aimed at (dynamic: loudnorm's target is the input
    loudness plus this gain); 0 in the other modes. ``capped``: the gain needed to reach
    ``target`` was above the cap (the clip stays below the target)."""

    mode: Mode
    target: float | None = None
    gain: float = 0.0
    capped: bool = False
    measured: Measurement | None = None
    ceiling: float = TRUE_PEAK_CEILING

    def filters(self) -> list[str]:
        """Audio filters for the transcode's graph, after the clip is normalised to
        48 kHz stereo float (`workers.media.encoding.audio_chain`) and before padding."""
        if self.mode == "linear":
            if self.gain == 0:
                return []
            return [f"volume=volume={_db(self.gain)}dB:precision=float"]
        if self.mode != "dynamic":
            return []
        m = self.measured
        assert m is not None and m.true_peak is not None
        lo, hi = _LOUDNORM_I
        aim = min(hi, max(lo, m.integrated + self.gain))
        lra = min(_LRA_RANGE[1], max(_LRA_RANGE[0], m.lra))
        # measured values clamped to the ranges loudnorm accepts
        options = [
            f"I={_db(aim)}",
            f"TP={_db(self.ceiling - DYNAMIC_HEADROOM)}",
            f"LRA={_db(lra)}",
            f"measured_I={_db(min(0.0, max(-99.0, m.integrated)))}",
            f"measured_TP={_db(min(99.0, max(-99.0, m.true_peak)))}",
            f"measured_LRA={_db(min(99.0, max(0.0, m.lra)))}",
            f"measured_thresh={_db(min(0.0, max(-99.0, m.threshold)))}",
            "linear=false",
        ]
        # loudnorm works at 192 kHz and gives no channel layout: back to 48 kHz stereo
        return [
            "loudnorm=" + ":".join(options),
            "aresample=48000",
            "aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo",
        ]

    def metadata(self) -> dict[str, Any]:
        """The `loudness` object of metadata.json (seed §3.3 style keys)."""
        m = self.measured
        return {
            "mode": self.mode,
            "target": self.target,
            "truePeakCeiling": self.ceiling if self.target is not None else None,
            "inputIntegrated": m.integrated if m else None,
            "inputTruePeak": m.true_peak if m else None,
            "inputLoudnessRange": m.lra if m else None,
            "gain": round(self.gain, 2),
            "gainCapped": self.capped,
        }


def _db(value: float) -> str:
    """Decibels for a filter argument: 2 decimals, no "-0.00"."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def plan_gain(
    measured: Measurement | None,
    *,
    target: float | None,
    max_gain: float,
    has_audio: bool,
    ceiling: float = TRUE_PEAK_CEILING,
) -> GainPlan:
    """Decide how to bring a clip to ``target`` LUFS (None: loudness matching is off).

    Linear gain ``target - integrated``, at most ``max_gain`` dB up (any amount down),
    when the true peak stays at or below ``ceiling`` after it; otherwise dynamic mode
    aimed at the same (capped) level. A clip without audio, or whose audio has nothing
    above the absolute gate, is left as it is."""
    if target is None:
        return GainPlan("off")
    if not has_audio:
        return GainPlan("no_audio", target=target, ceiling=ceiling)
    if measured is None:
        raise ValueError("a clip with audio needs its measurement")
    if measured.integrated <= ABSOLUTE_GATE or measured.true_peak is None:
        return GainPlan("silent", target=target, measured=measured, ceiling=ceiling)
    wanted = target - measured.integrated
    gain = min(wanted, max_gain)
    capped = wanted > max_gain
    gain = round(gain, 2)
    mode: Mode = "linear" if measured.true_peak + gain <= ceiling else "dynamic"
    return GainPlan(
        mode, target=target, gain=gain, capped=capped, measured=measured, ceiling=ceiling
    )
