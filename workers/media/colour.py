"""Colour: from what a source declares to the one picture every output shows, 8-bit
BT.709 limited range, tagged so. Owns the `Colour` a probe reads (transfer, primaries,
matrix, range, bit depth, the mastering display's peak, content light level, the Dolby
Vision configuration record), the refusal of what cannot be shown right, the ffmpeg
filters of the one chain that the renditions of both stages, the thumbnails, the
storyboard frames and the export's re-encoded cuts all go through (`chain`), the VUI the
encoder writes (`ENCODER_TAGS`; the stills' JPEG conversion is `core.ffargs.JPEG_SCALE`).
Pure.

HDR (PQ, SMPTE ST 2084; HLG, ARIB STD-B67; both ITU-R BT.2100) becomes SDR in two
filters. First the tone curve: ITU-R BT.2390-10 §5.4's EETF, a Hermite knee in the PQ
domain that keeps everything below the knee and compresses the source's range above it
into the target's, applied to the luma signal as a lookup table (`lutyuv`; for HLG
through its inverse OETF and OOTF to display light and back). Then zimg (`zscale`) does
the exact conversion in one pass: PQ EOTF, or HLG inverse OETF + OOTF (BT.2100 Table 5,
1000 cd/m² nominal display), BT.2020 -> BT.709 primaries in linear light, BT.709 OETF,
matrix, limited range, 8 bits. HDR reference white (203 cd/m², ITU-R BT.2408-5 §2.2)
becomes SDR white, and the knee ends there.

Why not ffmpeg's `tonemap` filter (its float RGB path: zscale to linear, tonemap, zscale
back): about 40 ms of CPU a 1080p frame against this chain's 10 (bench/colour.py), which
made the time to playable of a 1080p HLG clip about three times that of the same clip
in SDR. Measured on testsrc2 made HDR at 203 cd/m² white (mean saturation / luma against
the SDR original): this chain 0.96 / 0.99 (HLG) and 0.92 / 1.00 (PQ); `tonemap` mobius
0.89 / 0.96 and 0.85 / 0.98, hable 0.73 / 0.80 and 0.69 / 0.81; no tone mapping (the
8-bit picture as published before) 0.39 / 1.01 and 0.22 / 0.89.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Dynamic = Literal["sdr", "pq", "hlg"]

#: cd/m² of HDR reference (diffuse) white, mapped to SDR white (ITU-R BT.2408-5 §2.2).
REFERENCE_WHITE = 203.0
#: cd/m² of the nominal display an HLG signal is rendered for (BT.2100 Table 5: the
#: OOTF's L_W; zimg's too).
HLG_DISPLAY_PEAK = 1000.0
#: cd/m² assumed for a PQ source that declares neither mastering display nor MaxCLL.
PQ_DEFAULT_PEAK = 1000.0
PQ_MAX = 10000.0
#: The HLG OOTF's system gamma at L_W = 1000 cd/m² (BT.2100 Table 5).
HLG_GAMMA = 1.2

# SMPTE ST 2084 constants
_M1 = 2610 / 16384
_M2 = 2523 / 4096 * 128
_C1 = 3424 / 4096
_C2 = 2413 / 4096 * 32
_C3 = 2392 / 4096 * 32
# ARIB STD-B67 (BT.2100 Table 5) constants
_A = 0.17883277
_B = 1 - 4 * _A
_C = 0.5 - _A * math.log(4 * _A)

#: Dolby Vision base layer signal compatibility id -> what the base layer is (Dolby
#: Vision streams within the ISO base media file format v2.3, Table 2-3): HDR10, SDR,
#: HLG, and profile 7's BT.2100 PQ. Any other id (0: profile 5's IPTPQc2) has no base
#: layer a player can show without the Dolby Vision metadata.
DOVI_BASE_LAYERS: dict[int, Dynamic] = {1: "pq", 2: "sdr", 4: "hlg", 6: "pq"}

#: What every output is, as ffmpeg names it (`setparams`, encoder options).
BT709_TAGS = "color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
#: H.264 VUI colour description (Annex E.2.1: colour_primaries, transfer_characteristics
#: and matrix_coefficients 1, video_full_range_flag 0), as encoder options: written by
#: every rendition and every re-encoded cut, so their SPS stay one.
ENCODER_TAGS: tuple[str, ...] = (
    "-color_primaries",
    "bt709",
    "-color_trc",
    "bt709",
    "-colorspace",
    "bt709",
    "-color_range",
    "tv",
)

_UNKNOWN = frozenset({"", "unknown", "unspecified", "reserved", "reserved0"})
#: ffprobe's names -> zscale's, for what zimg converts from.
_MATRICES = {
    "bt709": "709",
    "smpte170m": "170m",
    "bt470bg": "470bg",
    "bt2020nc": "2020_ncl",
    "bt2020c": "2020_cl",
    "fcc": "fcc",
    "smpte240m": "smpte2400m",  # (sic: ffmpeg 5.1's name for matrix 7)
    "ycgco": "ycgco",
    "gbr": "gbr",
}
_WIDE_PRIMARIES = {"bt2020": "2020", "smpte431": "smpte431", "smpte432": "smpte432"}
_HDR_TRANSFERS: dict[str, Dynamic] = {"smpte2084": "pq", "arib-std-b67": "hlg"}


@dataclass(frozen=True)
class DolbyVision:
    """A Dolby Vision configuration record (ffprobe's ``DOVI configuration record``)."""

    profile: int
    level: int = 0
    compatibility: int = 0  # dv_bl_signal_compatibility_id
    base_layer: bool = True
    rpu: bool = True
    enhancement_layer: bool = False

    @property
    def name(self) -> str:
        return f"{self.profile}.{self.compatibility}"


@dataclass(frozen=True)
class Colour:
    """What a source says about its picture, with ffprobe's names (``None``: unsaid)."""

    transfer: str | None = None
    primaries: str | None = None
    matrix: str | None = None
    full_range: bool = False
    bit_depth: int = 8
    mastering_peak: float | None = None  # cd/m², the mastering display's maximum
    max_cll: int | None = None  # cd/m², CTA-861.3 content light level
    max_fall: int | None = None
    dovi: DolbyVision | None = None

    @property
    def dynamic(self) -> Dynamic:
        """SDR, PQ or HLG: the transfer the picture is in (a Dolby Vision stream's base
        layer; its compatibility id when the stream leaves the transfer unsaid)."""
        kind = _HDR_TRANSFERS.get(self.transfer or "")
        if kind is not None:
            return kind
        if self.dovi is not None and self.transfer is None:
            return DOVI_BASE_LAYERS.get(self.dovi.compatibility, "sdr")
        return "sdr"

    @property
    def peak(self) -> float:
        """cd/m² of the brightest the source holds, which the tone curve maps to SDR
        white: HLG's nominal display; for PQ the mastering display's peak, else MaxCLL,
        else `PQ_DEFAULT_PEAK`; SDR white for SDR."""
        if self.dynamic == "hlg":
            return HLG_DISPLAY_PEAK
        if self.dynamic == "sdr":
            return REFERENCE_WHITE
        for value in (self.mastering_peak, self.max_cll):
            if value is not None and value > 0:
                return min(float(value), PQ_MAX)
        return PQ_DEFAULT_PEAK


#: What every rendition is: the input of the export's re-encoded cuts, which go through
#: the same `chain` (for them: tags and a format that change no pixel).
RENDITION = Colour(transfer="bt709", primaries="bt709", matrix="bt709")


def known(name: object) -> str | None:
    """An ffprobe colour name, or None when it says nothing (unknown, unspecified)."""
    text = str(name or "").strip().lower()
    return None if text in _UNKNOWN else text


def refusal(colour: Colour) -> str | None:
    """Why a source cannot be shown right (None: it can). Dolby Vision needs a base
    layer a player can show on its own: profile 8.1/8.4 (HDR10/HLG), 8.2/9.2 (SDR),
    7.6 (PQ); profile 5's base layer is IPTPQc2, whose colours only the Dolby Vision
    metadata makes right."""
    dovi = colour.dovi
    if dovi is None:
        return None
    if not dovi.base_layer or dovi.compatibility not in DOVI_BASE_LAYERS:
        return (
            f"Dolby Vision profile {dovi.profile} without a base layer that plays on its "
            f"own (compatibility id {dovi.compatibility}): its picture needs Dolby Vision "
            f"rendering; record or export it as HDR10, HLG or SDR"
        )
    return None


def sd(width: int, height: int) -> bool:
    """Standard definition by its coded size: what an untagged picture's matrix is
    guessed from (BT.601 below 1280x720, as players guess)."""
    return width < 1280 and height <= 576


def chain(colour: Colour, width: int, height: int) -> list[str]:
    """The filters that turn the decoded picture (`width` x `height`, as coded) into
    8-bit 4:2:0 BT.709 limited range, its frames tagged so.

    SDR that already is (or, untagged, is taken to be) BT.709 limited 8-bit costs
    nothing: tags and a format that is a no-op. Other SDR goes through zimg with its
    own matrix and range (an SD BT.601 clip keeps its colours), wide-gamut primaries
    converted in linear light; HDR through the tone curve and zimg (module doc)."""
    dynamic = colour.dynamic
    if dynamic != "sdr":
        return _hdr(colour, dynamic, width, height)
    matrix = _matrix(colour, width, height)
    primaries = _WIDE_PRIMARIES.get(colour.primaries or "", "709")
    if matrix == "709" and primaries == "709" and not colour.full_range and colour.bit_depth <= 8:
        return [f"setparams={BT709_TAGS}", "format=yuv420p"]
    return [_zscale("709", primaries, matrix, colour.full_range), "format=yuv420p"]


def _matrix(colour: Colour, width: int, height: int) -> str:
    if colour.matrix in _MATRICES:
        return _MATRICES[colour.matrix]
    if colour.dynamic != "sdr" or colour.primaries == "bt2020":
        return "2020_ncl"
    return "170m" if sd(width, height) else "709"


def _zscale(transfer: str, primaries: str, matrix: str, full_range: bool, npl: str = "") -> str:
    """zimg from the source's transfer, primaries, matrix and range to BT.709 limited."""
    rin = "full" if full_range else "limited"
    return (
        f"zscale=tin={transfer}:pin={primaries}:min={matrix}:rin={rin}"
        f":t=709:p=709:m=709:r=limited{npl}"
    )


def _hdr(colour: Colour, dynamic: Dynamic, width: int, height: int) -> list[str]:
    transfer = "smpte2084" if dynamic == "pq" else "arib-std-b67"
    primaries = _WIDE_PRIMARIES.get(colour.primaries or "", "2020")
    if colour.primaries in ("bt709", "smpte170m", "bt470bg"):
        primaries = "709"
    convert = _zscale(
        transfer,
        primaries,
        _matrix(colour, width, height),
        colour.full_range,
        f":npl={REFERENCE_WHITE:g}",
    )
    curve = eetf_expression(dynamic, colour.peak, full_range=colour.full_range)
    # the curve's table is written for 10-bit samples: the format is a no-op for the
    # phones' HEVC Main 10 (yuv420p10le)
    knee = [f"lutyuv=y='{curve}':u=val:v=val"] if curve else []
    return ["format=yuv420p10le", *knee, convert, "format=yuv420p"]


# ------------------------------------------------------------ the tone curve


def pq_oetf(nits: float) -> float:
    """SMPTE ST 2084 inverse EOTF: cd/m² -> signal (0-1)."""
    y = (max(nits, 0.0) / PQ_MAX) ** _M1
    return float(((_C1 + _C2 * y) / (1 + _C3 * y)) ** _M2)


def pq_eotf(signal: float) -> float:
    """SMPTE ST 2084 EOTF: signal (0-1) -> cd/m²."""
    p = max(signal, 0.0) ** (1 / _M2)
    return float(PQ_MAX * (max(p - _C1, 0.0) / (_C2 - _C3 * p)) ** (1 / _M1))


def hlg_inverse_oetf(signal: float) -> float:
    """ARIB STD-B67 inverse OETF: signal (0-1) -> normalised scene light (0-1)."""
    e = max(signal, 0.0)
    return e * e / 3 if e <= 0.5 else (math.exp((e - _C) / _A) + _B) / 12


def hlg_oetf(light: float) -> float:
    """ARIB STD-B67 OETF: normalised scene light (0-1) -> signal."""
    e = max(light, 0.0)
    return math.sqrt(3 * e) if e <= 1 / 12 else _A * math.log(12 * e - _B) + _C


@dataclass(frozen=True)
class Knee:
    """BT.2390-10 §5.4's EETF from a source of `peak` cd/m² to a target of `target`:
    on PQ signal normalised to the source peak, unchanged below `start`, a Hermite
    spline from there to 1 -> `end` (black level 0 on both sides)."""

    peak: float
    target: float = REFERENCE_WHITE

    @property
    def source_max(self) -> float:
        return pq_oetf(self.peak)

    @property
    def end(self) -> float:  # maxLum
        return pq_oetf(self.target) / self.source_max

    @property
    def start(self) -> float:  # KS
        return 1.5 * self.end - 0.5

    @property
    def needed(self) -> bool:
        return self.start < 1.0

    def __call__(self, e1: float) -> float:
        """The EETF on normalised PQ signal `e1` (0-1)."""
        e1 = min(max(e1, 0.0), 1.0)
        ks, end = self.start, self.end
        if e1 < ks:
            return e1
        t = (e1 - ks) / (1 - ks)
        return (
            (2 * t**3 - 3 * t**2 + 1) * ks
            + (t**3 - 2 * t**2 + t) * (1 - ks)
            + (-2 * t**3 + 3 * t**2) * end
        )

    def nits(self, nits: float) -> float:
        """The EETF on light: cd/m² in -> cd/m² out."""
        return pq_eotf(self(pq_oetf(nits) / self.source_max) * self.source_max)


def tone_map_signal(dynamic: Dynamic, peak: float, signal: float) -> float:
    """The luma signal (0-1) the tone curve makes of `signal`: what `eetf_expression`'s
    table holds, computed in Python (PQ directly; HLG through display light, BT.2100's
    OOTF with the luma standing for the luminance)."""
    knee = Knee(HLG_DISPLAY_PEAK if dynamic == "hlg" else peak)
    if not knee.needed or dynamic == "sdr":
        return signal
    if dynamic == "pq":
        e1 = min(signal, knee.source_max) / knee.source_max
        return knee(e1) * knee.source_max
    light = HLG_DISPLAY_PEAK * hlg_inverse_oetf(signal) ** HLG_GAMMA
    mapped = knee.nits(light)
    return hlg_oetf((mapped / HLG_DISPLAY_PEAK) ** (1 / HLG_GAMMA))


def _f(x: float) -> str:
    return repr(float(x))


def _hermite(x: str, knee: Knee) -> str:
    """`Knee.__call__` in ffmpeg's expression language, `x` already within 0-1."""
    ks, end = _f(knee.start), _f(knee.end)
    t = f"(({x}-{ks})/{_f(1 - knee.start)})"
    return (
        f"if(lt({x},{ks}),{x},"
        f"(2*pow({t},3)-3*pow({t},2)+1)*{ks}"
        f"+(pow({t},3)-2*pow({t},2)+{t})*{_f(1 - knee.start)}"
        f"+(-2*pow({t},3)+3*pow({t},2))*{end})"
    )


def eetf_expression(dynamic: Dynamic, peak: float, *, full_range: bool = False) -> str | None:
    """`tone_map_signal` as a `lutyuv` expression over 10-bit luma codes (`val`), or
    None when no curve is needed (SDR; a PQ source no brighter than `REFERENCE_WHITE`).
    ffmpeg evaluates it once per code (1024 times), not per pixel."""
    knee = Knee(HLG_DISPLAY_PEAK if dynamic == "hlg" else peak)
    if dynamic == "sdr" or not knee.needed:
        return None
    lo, span = (0, 1023) if full_range else (64, 876)
    sw = _f(knee.source_max)
    signal = f"clip((val-{lo})/{span},0,1)"
    if dynamic == "pq":
        body = f"st(0,min({signal},{sw})/{sw})*0+{sw}*{_hermite('ld(0)', knee)}"
    else:
        # HLG signal -> scene light -> display light (OOTF) -> PQ, normalised
        e = "ld(0)"
        scene = f"if(lte({e},0.5),{e}*{e}/3,(exp(({e}-{_f(_C)})/{_f(_A)})+{_f(_B)})/12)"
        y = f"pow({_f(HLG_DISPLAY_PEAK / PQ_MAX)}*pow({scene},{_f(HLG_GAMMA)}),{_f(_M1)})"
        pq = f"pow(({_f(_C1)}+{_f(_C2)}*{y})/(1+{_f(_C3)}*{y}),{_f(_M2)})/{sw}"
        # mapped PQ -> display light -> scene light -> HLG signal
        p = f"pow(ld(2)*{sw},{_f(1 / _M2)})"
        light = f"pow(max({p}-{_f(_C1)},0)/({_f(_C2)}-{_f(_C3)}*{p}),{_f(1 / _M1)})"
        scene2 = f"pow({light}*{_f(PQ_MAX / HLG_DISPLAY_PEAK)},{_f(1 / HLG_GAMMA)})"
        oetf = f"if(lte(ld(3),{_f(1 / 12)}),sqrt(3*ld(3)),{_f(_A)}*log(12*ld(3)-{_f(_B)})+{_f(_C)})"
        body = (
            f"st(0,{signal})*0+st(1,{pq})*0+st(2,{_hermite('ld(1)', knee)})*0"
            f"+st(3,{scene2})*0+{oetf}"
        )
    return f"{lo}+{span}*({body})"
