"""Issue 17's pure parts: the ladder and presets as settings, a generation's object
names in keys, playlists and stills, the refinement's command and its drop-in check."""

from __future__ import annotations

import dataclasses

import pytest

from core import layout, playlists
from core.settings import (
    DEFAULT_LADDER,
    ConfigError,
    LadderRung,
    RungCrf,
    Settings,
    StagePresets,
)
from origin.playback import moments
from tests.unit.test_encoding import info as upload_info
from workers.jobs import refine
from workers.media.encoding import ladder_of, stage_presets, transcode_command


def test_defaults_are_the_seeds_ladder_fast_then_medium():
    s = Settings.from_env({})
    assert s.ladder == DEFAULT_LADDER
    assert [(r.name, r.width, r.height, r.video_bitrate) for r in s.ladder] == [
        ("720p", 1280, 720, 1_500_000),
        ("1080p", 1920, 1080, 4_000_000),
    ]
    assert (s.refine, s.fast_preset.of("1080p"), s.refine_preset.of("720p")) == (
        True,
        "ultrafast",  # replaced within minutes: playable first
        "medium",
    )
    one_stage = Settings.from_env({"REFINE": "off"})  # the only ladder: today's preset
    assert (one_stage.refine, one_stage.fast_preset) == (False, StagePresets("veryfast"))
    assert Settings.from_env({}, refine=False).fast_preset == StagePresets("veryfast")
    assert Settings.from_env({"FAST_PRESET": "superfast"}).fast_preset == StagePresets("superfast")


def test_a_deployment_adds_a_low_rung_and_per_rung_presets():
    s = Settings.from_env(
        {
            "LADDER": "1080p:1920x1080:4m, 360p:640x360:600k/96k,720p:1280x720:1500k",
            "FAST_PRESET": "faster,360p=veryfast",
            "REFINE_PRESET": "slow,1080p=medium",
            "REFINE": "off",
        }
    )
    assert s.ladder[0] == LadderRung("360p", 640, 360, 600_000, 96_000)
    assert [r.name for r in s.ladder] == ["360p", "720p", "1080p"]  # lowest first
    assert stage_presets(ladder_of(s.ladder), s.refine_preset) == {
        "360p": "slow",
        "720p": "slow",
        "1080p": "medium",
    }
    assert s.fast_preset == StagePresets("faster", (("360p", "veryfast"),))
    assert s.refine is False


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LADDER": "720p:1281x720:1500k"}, "LADDER"),
        ({"LADDER": "hd:1280x720:1500k"}, "LADDER"),
        ({"LADDER": "720p:1280x720:1500k,720p:1280x720:2m"}, "LADDER"),
        ({"LADDER": "720p:1280x720:10k"}, "LADDER"),
        ({"REFINE_PRESET": "placebo-ish"}, "REFINE_PRESET"),
        ({"FAST_PRESET": "veryfast,4k=fast"}, "FAST_PRESET"),
        ({"REFINE_PRESET": "medium,480p=slow"}, "REFINE_PRESET"),
        ({"REFINE": "sometimes"}, "REFINE"),
        ({"RATE_CONTROL": "crf"}, "RATE_CONTROL"),
        ({"PER_TITLE_CRF": "52"}, "PER_TITLE_CRF"),
        ({"PER_TITLE_CRF": "23,1080p=x"}, "PER_TITLE_CRF"),
        ({"PER_TITLE_CRF": "23,480p=20"}, "PER_TITLE_CRF"),
    ],
)
def test_bad_encoder_settings_name_their_variable(env, names):
    with pytest.raises(ConfigError, match=f"^{names}: "):
        Settings.from_env(env)


def test_generation_one_keeps_the_seeds_names_later_ones_get_new_keys():
    assert layout.media_segment_name("720p", 1) == "720p_0001.ts"
    assert layout.media_segment_name("720p", 1, 2) == "720p_g2_0001.ts"
    assert layout.media_segment_name("1080p", 12, 3) == "1080p_g3_0012.ts"
    assert layout.is_segment_file("720p_g2_0001.ts")
    assert not layout.is_segment_file("720p_g_0001.ts")
    with pytest.raises(ValueError):
        layout.generation_stem("720p", 0)


def _rendition(profile="720p", generation=1, durations=(4.0, 2.5), width=1280, height=720):
    return playlists.Rendition(
        profile=profile,
        width=width,
        height=height,
        frame_rate=30.0,
        codecs="avc1.4d401f,mp4a.40.2",
        durations=durations,
        sizes=(1000, 500),
        bandwidth_peak=2000,
        bandwidth_average=1800,
        generation=generation,
    )


def test_playlists_name_the_generations_segments():
    r = _rendition(generation=2)
    clip = playlists.Clip("seg_a", 6.5, {"720p": r})
    text = playlists.stitched_media([clip], "720p", target=4, uri_for=str)
    assert "seg_a/720p_g2_0001.ts\n" in text and "seg_a/720p_g2_0002.ts\n" in text
    own = playlists.clip_media_playlist(_rendition())
    assert "\n720p_0001.ts\n" in own


def test_a_moment_of_a_refined_rendition_is_another_still():
    fast = playlists.Clip("seg_a", 6.5, {"720p": _rendition()})
    final = playlists.Clip("seg_a", 6.5, {"720p": _rendition(generation=2)})
    a = moments.locate_in_clip(fast, 4_100_000, 640)
    b = moments.locate_in_clip(final, 4_100_000, 640)
    assert (a.media_name, b.media_name) == ("720p_0002.ts", "720p_g2_0002.ts")
    assert a.still_name != b.still_name and a.etag != b.etag
    layout.still_key("scn_aaaaaaaaaaaa", "seg_aaaaaaaaaaaa", b.still_name)  # a valid key


def test_refined_renditions_must_line_up_with_the_published_ones():
    published = [_rendition(), _rendition("1080p", width=1920, height=1080)]
    same = [_rendition(generation=2), _rendition("1080p", 2, width=1920, height=1080)]
    assert refine.mismatch(published, same) is None
    shifted = [_rendition(generation=2, durations=(4.2, 2.3)), same[1]]
    assert "do not line up" in (refine.mismatch(published, shifted) or "")
    assert "profiles" in (refine.mismatch(published, same[:1]) or "")
    # the first stage published the lowest rung alone: the refinement adds the others,
    # each lined up with it (issue 26)
    assert refine.mismatch(published[:1], same) is None
    added = [same[0], _rendition("1080p", 2, durations=(4.0, 2.4), width=1920, height=1080)]
    assert "1080p: its segments do not line up" in (refine.mismatch(published[:1], added) or "")
    assert refine.old_generation_keys("scn_a", "seg_a", {"720p": 2, "1080p": 1}, 2) == [
        "scn_a/seg_a/720p_0001.ts",
        "scn_a/seg_a/720p_0002.ts",
        "scn_a/seg_a/1080p_0001.ts",
    ]


def test_the_refinement_runs_the_transcode_command_without_the_stills():
    info = upload_info(duration=6.0)
    ladder = ladder_of(DEFAULT_LADDER)
    presets = {"720p": "medium", "1080p": "slow"}
    full = transcode_command("in.mp4", "/w", info, ladder)
    only = transcode_command("in.mp4", "/w", info, ladder, presets=presets, stills=False)
    graph = only[only.index("-filter_complex") + 1]
    assert "split=2[s0][s1]" in graph and "thumb" not in graph and "[tl]" not in graph

    def values(cmd: list[str], *names: str) -> list[str]:
        return [cmd[i + 1] for i, a in enumerate(cmd) if a.split(":")[0] in names]

    assert values(only, "-preset") == ["medium", "slow"]
    assert values(full, "-preset") == ["veryfast"] * 2
    assert "mjpeg" in full and "mjpeg" not in only
    # everything that shapes a rendition is the same in both stages: the commands
    # differ in the graph (no stills) and the presets, and the refinement's ends where
    # the renditions' output (the tee muxer's HLS outputs) ends
    renditions = full[: full.index("tee") + 2]
    assert len(only) == len(renditions)
    assert [(a, b) for a, b in zip(renditions, only, strict=True) if a != b] == [
        (full[full.index("-filter_complex") + 1], graph),
        ("veryfast", "medium"),
        ("veryfast", "slow"),
    ]


def test_rate_control_is_per_title_unless_set_to_abr():
    s = Settings.from_env({})
    assert (s.rate_control, s.per_title_crf.of("720p"), s.per_title_crf.of("1080p")) == (
        "per-title",
        23.0,
        23.0,
    )
    s = Settings.from_env({"RATE_CONTROL": "ABR", "PER_TITLE_CRF": "22.5,1080p=24"})
    assert s.rate_control == "abr"
    assert s.per_title_crf == RungCrf(22.5, (("1080p", 24.0),))


def test_a_picture_the_first_stage_found_at_its_cap_is_refined_at_abr():
    s = Settings.from_env({})
    info = upload_info(duration=6.0)
    at_cap = {"rateControl": {"firstStage": {"720p": {"overBudget": True, "atCap": True}}}}
    over = {"rateControl": {"firstStage": {"720p": {"overBudget": True, "atCap": False}}}}
    assert [r.crf for r in refine.final_ladder(s, info, at_cap)] == [None, None]
    assert [r.crf for r in refine.final_ladder(s, info, over)] == [23.0, 23.0]
    assert [r.crf for r in refine.final_ladder(s, info, {})] == [23.0, 23.0]
    abr = dataclasses.replace(s, rate_control="abr")
    assert [r.crf for r in refine.final_ladder(abr, info, {})] == [None, None]
