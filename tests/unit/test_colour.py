"""The colour chain (issue 25): which filters each kind of source gets, the refusals,
the BT.2390 tone curve, and the output frame rate and orientation filters around it."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from workers.media import colour
from workers.media.colour import (
    BT709_TAGS,
    Colour,
    DolbyVision,
    Knee,
    chain,
    eetf_expression,
    hlg_inverse_oetf,
    hlg_oetf,
    pq_eotf,
    pq_oetf,
    refusal,
    tone_map_signal,
)
from workers.media.encoding import (
    fit_scale_filter,
    orientation_filters,
    output_rate,
    picture_chain,
)
from workers.media.probe import MediaInfo

TAGS_ONLY = [f"setparams={BT709_TAGS}", "format=yuv420p"]
TO_709 = ":t=709:p=709:m=709:r=limited"


def zscale(tin: str, pin: str, min_: str, rin: str = "limited", npl: str = "") -> str:
    return f"zscale=tin={tin}:pin={pin}:min={min_}:rin={rin}{TO_709}{npl}"


# ------------------------------------------------------------------ SDR


@pytest.mark.parametrize(
    ("source", "size", "expected"),
    [
        # BT.709 limited 8-bit, said or (HD) taken to be: tags only, no pixel changed
        (Colour("bt709", "bt709", "bt709"), (1920, 1080), TAGS_ONLY),
        (Colour(), (1280, 720), TAGS_ONLY),
        (Colour(matrix="bt709"), (640, 480), TAGS_ONLY),
        # SD: BT.601, converted with its own matrix so its colours do not shift
        (Colour(), (720, 576), [zscale("709", "709", "170m"), "format=yuv420p"]),
        (
            Colour("smpte170m", "smpte170m", "smpte170m"),
            (720, 480),
            [zscale("709", "709", "170m"), "format=yuv420p"],
        ),
        (
            Colour("bt709", "bt470bg", "bt470bg"),
            (1920, 1080),
            [zscale("709", "709", "470bg"), "format=yuv420p"],
        ),
        # full range (a JPEG-style yuvj420p phone clip) -> limited
        (
            Colour("bt709", "bt709", "bt709", full_range=True),
            (1920, 1080),
            [zscale("709", "709", "709", "full"), "format=yuv420p"],
        ),
        # 10-bit SDR: zimg makes the 8 bits once, before the split
        (
            Colour("bt709", "bt709", "bt709", bit_depth=10),
            (1920, 1080),
            [zscale("709", "709", "709"), "format=yuv420p"],
        ),
        # wide-gamut SDR (BT.2020, P3): primaries converted in linear light
        (
            Colour("bt2020-10", "bt2020", "bt2020nc", bit_depth=10),
            (3840, 2160),
            [zscale("709", "2020", "2020_ncl"), "format=yuv420p"],
        ),
        (
            Colour("bt709", "smpte432", "bt709"),
            (1920, 1080),
            [zscale("709", "smpte432", "709"), "format=yuv420p"],
        ),
    ],
)
def test_sdr_chain(source: Colour, size: tuple[int, int], expected: list[str]) -> None:
    assert source.dynamic == "sdr"
    assert chain(source, *size) == expected


# ------------------------------------------------------------------ HDR


HLG = Colour("arib-std-b67", "bt2020", "bt2020nc", bit_depth=10)
PQ = Colour("smpte2084", "bt2020", "bt2020nc", bit_depth=10, mastering_peak=1000.0, max_cll=1000)


def test_hlg_chain() -> None:
    filters = chain(HLG, 1920, 1080)
    assert filters[0] == "format=yuv420p10le"
    assert filters[1] == f"lutyuv=y='{eetf_expression('hlg', 1000.0)}':u=val:v=val"
    assert filters[2:] == [
        zscale("arib-std-b67", "2020", "2020_ncl", npl=":npl=203"),
        "format=yuv420p",
    ]


@pytest.mark.parametrize(
    ("source", "peak"),
    [
        (PQ, 1000.0),  # the mastering display's peak
        (Colour("smpte2084", "bt2020", "bt2020nc", mastering_peak=4000.0, max_cll=1500), 4000.0),
        (Colour("smpte2084", "bt2020", "bt2020nc", max_cll=600), 600.0),  # else MaxCLL
        (Colour("smpte2084", "bt2020", "bt2020nc"), 1000.0),  # else 1000 cd/m²
        (Colour("smpte2084", mastering_peak=20000.0), 10000.0),  # PQ's own limit
    ],
)
def test_pq_chain_maps_from_the_mastering_peak(source: Colour, peak: float) -> None:
    assert source.peak == peak
    filters = chain(source, 3840, 2160)
    assert filters[1] == f"lutyuv=y='{eetf_expression('pq', peak)}':u=val:v=val"
    assert filters[2] == zscale("smpte2084", "2020", "2020_ncl", npl=":npl=203")


def test_a_pq_source_no_brighter_than_reference_white_needs_no_curve() -> None:
    dim = Colour("smpte2084", "bt2020", "bt2020nc", bit_depth=10, mastering_peak=200.0)
    assert eetf_expression("pq", 200.0) is None
    assert not any(f.startswith("lutyuv") for f in chain(dim, 1920, 1080))


def test_untagged_hdr_parts_are_bt2020_and_full_range_is_kept_in_the_table() -> None:
    bare = Colour("smpte2084", bit_depth=10, full_range=True)
    filters = chain(bare, 1920, 1080)
    assert filters[2] == zscale("smpte2084", "2020", "2020_ncl", "full", ":npl=203")
    assert filters[1].startswith("lutyuv=y='0+1023*(")  # full-range codes
    assert "'64+876*(" in chain(PQ, 1920, 1080)[1]


@pytest.mark.parametrize(
    ("dovi", "dynamic"),
    [
        (DolbyVision(8, compatibility=1), "pq"),  # 8.1: HDR10 base layer
        (DolbyVision(8, compatibility=4), "hlg"),  # 8.4: HLG (iPhone)
        (DolbyVision(8, compatibility=2), "sdr"),  # 8.2: SDR
        (DolbyVision(7, compatibility=6), "pq"),
    ],
)
def test_dolby_vision_plays_its_base_layer(dovi: DolbyVision, dynamic: str) -> None:
    # the base layer's VUI says it; when it says nothing, the compatibility id does
    assert Colour(dovi=dovi).dynamic == dynamic
    assert refusal(Colour(dovi=dovi)) is None
    assert Colour("arib-std-b67", dovi=dovi).dynamic == "hlg"


@pytest.mark.parametrize(
    "dovi",
    [DolbyVision(5, compatibility=0), DolbyVision(8, compatibility=4, base_layer=False)],
)
def test_dolby_vision_without_a_base_layer_of_its_own_is_refused(dovi: DolbyVision) -> None:
    why = refusal(Colour("smpte2084", dovi=dovi))
    assert why is not None
    assert why.startswith(f"Dolby Vision profile {dovi.profile} without a base layer")
    assert "HDR10, HLG or SDR" in why
    assert refusal(Colour("smpte2084")) is None


# ------------------------------------------------------------- the tone curve


def test_transfer_functions_round_trip() -> None:
    for nits in (0.1, 1.0, 100.0, 203.0, 1000.0, 10000.0):
        assert pq_eotf(pq_oetf(nits)) == pytest.approx(nits, rel=1e-9)
    for light in (0.0, 0.01, 1 / 12, 0.2647, 1.0):
        assert hlg_inverse_oetf(hlg_oetf(light)) == pytest.approx(light, abs=1e-12)
    assert pq_oetf(203.0) == pytest.approx(0.5807, abs=1e-4)  # BT.2408 reference white
    assert hlg_oetf(0.2647) == pytest.approx(0.75, abs=1e-3)  # ... at 75% HLG


def test_the_knee_is_bt2390() -> None:
    knee = Knee(1000.0)
    assert knee.end == pytest.approx(pq_oetf(203.0) / pq_oetf(1000.0))
    assert knee.start == pytest.approx(1.5 * knee.end - 0.5)
    assert 0.6 < knee.start < 0.7
    # below the knee: unchanged; the source peak: the target; monotonic in between
    assert knee(knee.start * 0.9) == knee.start * 0.9
    assert knee(1.0) == pytest.approx(knee.end)
    values = [knee(i / 1000) for i in range(1001)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert knee.nits(1000.0) == pytest.approx(203.0, rel=1e-6)
    assert knee.nits(50.0) == pytest.approx(50.0, rel=1e-9)
    assert not Knee(150.0).needed


@pytest.mark.parametrize("dynamic", ["pq", "hlg"])
def test_tone_mapped_signal_keeps_the_shadows_and_ends_at_reference_white(dynamic: str) -> None:
    mapped = [tone_map_signal(dynamic, 1000.0, i / 100) for i in range(101)]
    assert all(b >= a - 1e-12 for a, b in zip(mapped, mapped[1:], strict=False))
    assert mapped[20] == pytest.approx(0.20, abs=1e-9)  # deep in the shadows: untouched
    white = pq_oetf(203.0) if dynamic == "pq" else hlg_oetf(0.2647)
    assert max(mapped) == pytest.approx(white, abs=2e-3)  # nothing above SDR white


def test_the_expression_is_a_table_of_10_bit_codes() -> None:
    expr = eetf_expression("pq", 1000.0)
    assert expr is not None and expr.startswith("64+876*(")
    assert "'" not in expr and ":" not in expr  # safe inside lutyuv=y='...'
    assert eetf_expression("sdr", 1000.0) is None


# ---------------------------------------- around it: rate and orientation


def info(**over: Any) -> MediaInfo:
    base: dict[str, Any] = dict(
        duration=9.0,
        width=1920,
        height=1080,
        fps=30.0,
        has_audio=True,
        audio_sample_rate=48000,
        audio_channels=2,
        video_codec="hevc",
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        coded_width=1920,
        coded_height=1080,
    )
    base.update(over)
    return MediaInfo(**base)


@pytest.mark.parametrize(
    ("fps", "vfr", "rate"),
    [
        (30.0, False, Fraction(30)),
        (27.7, False, Fraction(277, 10)),  # constant: its own exact rate
        (29.9, True, Fraction(30000, 1001)),  # a phone's jittered 30
        (30.28, True, Fraction(30)),  # within 1 % above: no extra frame a second
        (27.7, True, Fraction(25)),  # dropped frames: the standard rate it has frames for
        (59.5, True, Fraction(60000, 1001)),
        (118.0, True, Fraction(60)),
        (14.7, True, Fraction(14)),  # below every standard rate: whole frames at or under
    ],
)
def test_output_rate(fps: float, vfr: bool, rate: Fraction) -> None:
    assert output_rate(info(fps=fps, vfr=vfr)) == rate


@pytest.mark.parametrize(
    ("rotation", "mirrored", "filters"),
    [
        (0, False, []),
        (0, True, ["hflip"]),
        (90, False, ["transpose=clock"]),
        (90, True, ["transpose=clock_flip"]),
        (180, False, ["hflip", "vflip"]),
        (180, True, ["vflip"]),
        (270, False, ["transpose=cclock"]),
        (270, True, ["transpose=cclock_flip"]),
    ],
)
def test_orientation_filters(rotation: int, mirrored: bool, filters: list[str]) -> None:
    assert orientation_filters(rotation, mirrored) == filters


def test_orientation_rejects_other_angles() -> None:
    with pytest.raises(ValueError):
        orientation_filters(45)


def test_picture_chain_is_colour_then_orientation() -> None:
    src = info(rotation=90, colour=HLG, width=1080, height=1920)
    assert picture_chain(src) == [*chain(HLG, 1920, 1080), "transpose=clock"]
    # the matrix guess looks at the coded picture, not the rotated one
    sd = info(rotation=270, coded_width=640, coded_height=480, width=480, height=640)
    assert picture_chain(sd)[0].startswith("zscale=tin=709:pin=709:min=170m")
    assert colour.sd(720, 576) and not colour.sd(1280, 720) and not colour.sd(960, 720)


def test_an_hdr_picture_is_fitted_to_the_largest_output_before_the_chain() -> None:
    fit = fit_scale_filter(1280, 720, "bilinear", zimg=True)
    src = info(colour=HLG, coded_width=1920, coded_height=1080)
    assert picture_chain(src, (1280, 720), "bilinear") == [fit, *chain(HLG, 1920, 1080)]
    # a quarter turn: fitted in the coded orientation, the box turned with it; the
    # matrix guess still looks at the coded size
    upright = info(
        colour=PQ, rotation=90, width=1080, height=1920, coded_width=1920, coded_height=1080
    )
    assert picture_chain(upright, (1280, 720)) == [
        fit_scale_filter(720, 1280, zimg=True),
        *chain(PQ, 1920, 1080),
        "transpose=clock",
    ]
    # not for a picture that already fits the box, nor without one, nor for SDR (its
    # chain costs nothing per pixel, or is an SD picture's, smaller than the rungs)
    assert (
        picture_chain(info(colour=HLG, width=1280, height=720), (1280, 720))[0]
        == chain(HLG, 1280, 720)[0]
    )
    assert picture_chain(src) == chain(HLG, 1920, 1080)
    assert picture_chain(info(), (1280, 720)) == TAGS_ONLY
