"""Contributor chapters (origin/playback/chapters.py): one WebVTT cue per clip at the stitched
playlist's clip boundaries, titles escaped so no username can break the file."""

from __future__ import annotations

import m3u8
import pytest

from core.playlists import scene_target_duration, stitched_media, timeline_ms
from origin.playback.chapters import chapter_title, chapters_vtt, cue_text
from tests.helpers.timeline import timeline_clip

CLIPS = [
    timeline_clip("seg_a", [4.004, 4.004, 1.335]),
    timeline_clip("seg_b", [4.0, 0.8]),
    timeline_clip("seg_c", [4.0, 4.0, 4.0, 2.9996]),  # prints as 3.000 (EXTINF precision)
]


def test_chapters_vtt() -> None:
    titles = [chapter_title(1, "ada"), chapter_title(2, "bob"), chapter_title(5, "cy")]
    assert chapters_vtt(CLIPS, titles) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:09.343\n"
        "1. ada\n"
        "\n"
        "00:00:09.343 --> 00:00:14.143\n"
        "2. bob\n"
        "\n"
        "00:00:14.143 --> 00:00:29.143\n"
        "5. cy\n"
    )
    with pytest.raises(ValueError):
        chapters_vtt(CLIPS, titles[:2])


def test_cue_starts_are_where_the_stitched_playlist_puts_each_clip() -> None:
    """The oracle: the m3u8 library's reading of the stitched media playlist, summing
    EXTINF up to each discontinuity."""
    text = stitched_media(
        CLIPS, "720p", target=scene_target_duration(CLIPS), uri_for=lambda rel: rel
    )
    starts, t = [0], 0
    for seg in m3u8.loads(text).segments:
        if seg.discontinuity:
            starts.append(t)
        t += round(seg.duration * 1000)
    assert timeline_ms(CLIPS) == [*starts, t]
    vtt = chapters_vtt(CLIPS, ["a", "b", "c"])
    cue_starts = [line.split(" --> ")[0] for line in vtt.splitlines() if " --> " in line]
    assert cue_starts == ["00:00:00.000", "00:00:09.343", "00:00:14.143"]
    assert [int(ms) for ms in starts] == [0, 9343, 14143]


@pytest.mark.parametrize(
    "raw,text",
    [
        ("ada", "ada"),
        ("<b>x</b> & co", "&lt;b&gt;x&lt;/b&gt; &amp; co"),
        ("a --> b", "a --&gt; b"),
        ("two\nlines\r\n\nWEBVTT", "two lines WEBVTT"),
        ("  tab\tand nul\x00 ", "tab and nul"),
        ("line\u2028sep", "line sep"),
        ("Zoë 🎬", "Zoë 🎬"),
    ],
)
def test_cue_text_cannot_break_the_file(raw: str, text: str) -> None:
    assert cue_text(raw) == text
    vtt = chapters_vtt(CLIPS[:1], [chapter_title(1, raw)])
    blocks = vtt.split("\n\n")
    assert len(blocks) == 2 and blocks[1] == f"00:00:00.000 --> 00:00:09.343\n1. {text}\n"
