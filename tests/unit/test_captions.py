"""core/captions.py: WebVTT and SRT in, normalised WebVTT out; hostile inputs refused
with the right status and line; language tags."""

from __future__ import annotations

import pytest

from core.captions import (
    EMPTY_VTT,
    CaptionError,
    Cue,
    Limits,
    clamp,
    joined,
    language_tag,
    parse,
    parse_srt,
    parse_vtt,
    place,
    to_vtt,
)

LIMITS = Limits(max_bytes=64 * 1024, max_cues=100)


def refused(data: bytes, content_type: str = "text/vtt", limits: Limits = LIMITS) -> CaptionError:
    with pytest.raises(CaptionError) as caught:
        parse(data, content_type, limits)
    return caught.value


def test_webvtt_with_every_kind_of_block_normalises() -> None:
    source = (
        "\ufeffWEBVTT - a title\r\n"
        "Kind: captions\r\n"
        "\r\n"
        "STYLE\r\n"
        "::cue { color: red }\r\n"
        "\r\n"
        "REGION\r\n"
        "id:fred width:40%\r\n"
        "\r\n"
        "NOTE a comment\r\n"
        "over two lines\r\n"
        "\r\n"
        "intro\r\n"
        "00:01.000 --> 00:02.500 align:start position:10% region:fred\r\n"
        "<v Roger Bingham>We are <i>in</i> New York &amp; <c.loud>live</c></v>\r\n"
        "\r\n"
        "NOTE\r\n"
        "between cues\r\n"
        "\r\n"
        "00:00:02.500 --> 00:00:04.000\r\n"
        "Tom & Jerry <00:00:03.000><b>now</b> <ruby>漢<rt>kan</rt></ruby>\r\n"
        "<lang pt-BR>olá</lang>\r\n"
    ).encode()
    cues = parse(source, "text/vtt; charset=utf-8", LIMITS)
    assert to_vtt(cues) == (
        "WEBVTT\n"
        "\n"
        "intro\n"
        "00:00:01.000 --> 00:00:02.500 align:start position:10%\n"
        "<v Roger Bingham>We are <i>in</i> New York &amp; <c.loud>live</c></v>\n"
        "\n"
        "00:00:02.500 --> 00:00:04.000\n"
        "Tom &amp; Jerry <00:00:03.000><b>now</b> <ruby>漢<rt>kan</rt></ruby>\n"
        "<lang pt-BR>olá</lang>\n"
        "\n"
    )
    # normalised output is a fixed point
    assert parse_vtt(to_vtt(cues).encode(), LIMITS) == cues


def test_srt_with_bom_crlf_comma_milliseconds_and_hours_over_99() -> None:
    source = (
        "\ufeff1\r\n"
        "00:00:00,500 --> 00:00:01,250\r\n"
        '<font color="#ff0000">Red</font> <i>line</i>\r\n'
        "second line\r\n"
        "\r\n"
        "2\r\n"
        "99:59:59,999 --> 100:00:01,000\r\n"
        "late\r\n"
        "\r\n"
        "3\r\n"
        "123:00:00.000 --> 123:00:00.001\r\n"
        "later\r\n"
    ).encode()
    cues = parse(source, "application/x-subrip", LIMITS)
    assert cues == [
        Cue(500, 1250, "Red <i>line</i>\nsecond line"),
        Cue(359_999_999, 360_001_000, "late"),
        Cue(442_800_000, 442_800_001, "later"),
    ]
    vtt = to_vtt(cues)
    assert "99:59:59.999 --> 100:00:01.000\nlate\n" in vtt
    assert "123:00:00.000 --> 123:00:00.001\nlater\n" in vtt
    assert parse_vtt(vtt.encode(), LIMITS) == cues


def test_round_trips_of_generated_cues() -> None:
    cues = [
        Cue(i * 1000, i * 1000 + 999, f"line {i}\n<b>bold</b> &lt;{i}&gt;", f"c{i}", "")
        for i in range(50)
    ]
    assert parse_vtt(to_vtt(cues).encode(), LIMITS) == cues
    srt = "".join(
        f"{n}\n{to_vtt([cue]).splitlines()[3].replace('.', ',')}\n{cue.text}\n\n"
        for n, cue in enumerate(cues, 1)
    )
    assert [(c.start_ms, c.end_ms, c.text) for c in parse_srt(srt.encode(), LIMITS)] == [
        (c.start_ms, c.end_ms, c.text) for c in cues
    ]


def test_srt_without_numbers_and_lf_only() -> None:
    cues = parse(b"00:00:01,000 --> 00:00:02,000\nhi\n\n", "application/x-subrip", LIMITS)
    assert cues == [Cue(1000, 2000, "hi")]


def test_an_empty_webvtt_file_has_no_cues() -> None:
    assert parse(b"WEBVTT\n", "text/vtt", LIMITS) == []
    assert to_vtt([]) == EMPTY_VTT
    assert len(EMPTY_VTT.encode()) >= 8


@pytest.mark.parametrize(
    ("data", "content_type", "status", "line"),
    [
        (b"<!DOCTYPE html><html><body>hi</body></html>", "text/vtt", 415, None),
        (b"<script>alert(1)</script>", "application/x-subrip", 415, None),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", "text/vtt", 415, None),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "text/vtt", 415, None),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\n\xff\xfe\n", "text/vtt", 415, None),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\nok\n", "text/html", 415, None),
        (b"1\n00:00:00,000 --> 00:00:01,000\nhi\n", "text/vtt", 415, 1),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n", "application/x-subrip", 415, 1),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\n<script>x</script>\n", "text/vtt", 422, 4),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\nok\n<img src=x onerror=y>\n", "text/vtt", 422, 5),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\n<a href='x'>l</a>\n", "text/vtt", 422, 4),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\n<B>shout</B>\n", "text/vtt", 422, 4),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\n</b class>\n", "text/vtt", 422, 4),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\n<b x>y</b>\n", "text/vtt", 422, 4),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\na < b\n", "text/vtt", 422, 4),
        (b"WEBVTT\n\n00:02.000 --> 00:01.000\nbackwards\n", "text/vtt", 422, 3),
        (b"WEBVTT\n\n00:01.000 --> 00:01.000\nempty span\n", "text/vtt", 422, 3),
        (
            b"WEBVTT\n\n00:05.000 --> 00:06.000\na\n\n00:01.000 --> 00:02.000\nb\n",
            "text/vtt",
            422,
            6,
        ),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000 onclick:x\nhi\n", "text/vtt", 422, 3),
        (b"WEBVTT\n\n0:00.000 --> 00:01.000\nhi\n", "text/vtt", 422, 3),
        (b"WEBVTT\n\n00:61.000 --> 00:62.000\nhi\n", "text/vtt", 422, 3),
        (b"WEBVTT\n\njust text\nmore text\n", "text/vtt", 422, 3),
        (b"WEBVTT\n00:00.000 --> 00:01.000\nhi\n", "text/vtt", 422, 2),
        (b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n00:01.000 --> 00:02.000\n", "text/vtt", 422, 5),
        (
            b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n\nSTYLE\n::cue { x }\n",
            "text/vtt",
            422,
            6,
        ),
        (b"WEBVTTX\n\n00:00.000 --> 00:01.000\nhi\n", "text/vtt", 415, 1),
        (b"1\nnot a timing\nhi\n", "application/x-subrip", 422, 2),
        (b"hello\n00:00:00,000 --> 00:00:01,000\n", "application/x-subrip", 422, 1),
        (b"", "application/x-subrip", 422, None),
        (b"\r\n\r\n", "application/x-subrip", 422, None),
    ],
)
def test_hostile_and_broken_inputs_are_refused(
    data: bytes, content_type: str, status: int, line: int | None
) -> None:
    error = refused(data, content_type)
    assert (error.status, error.line) == (status, line), error.reason


def test_size_and_cue_count_caps() -> None:
    big = b"WEBVTT\n\n" + b"00:00.000 --> 00:01.000\nx\n\n" * 200
    assert refused(big, limits=Limits(max_bytes=1024, max_cues=1000)).status == 413
    many = b"WEBVTT\n\n" + b"".join(
        f"00:{i:02d}.000 --> 00:{i:02d}.500\nx\n\n".encode() for i in range(11)
    )
    error = refused(many, limits=Limits(max_bytes=64 * 1024, max_cues=10))
    assert (error.status, error.line) == (422, 3 + 10 * 3)
    assert len(parse(many, "text/vtt", Limits(max_bytes=64 * 1024, max_cues=11))) == 11


def test_overlong_line_and_cue_are_refused() -> None:
    assert refused(b"WEBVTT\n\n" + b"x" * 5000 + b"\n").status == 422
    long_cue = b"WEBVTT\n\n00:00.000 --> 00:01.000\n" + (b"y" * 1000 + b"\n") * 3
    assert refused(long_cue).line == 3


def test_clamp_to_the_clip() -> None:
    cues = [Cue(0, 1000, "a"), Cue(1500, 3000, "b"), Cue(2500, 2600, "c"), Cue(2600, 4000, "d")]
    assert clamp(cues, 2500) == [Cue(0, 1000, "a"), Cue(1500, 2500, "b")]
    assert clamp(cues, 10_000) == cues


def test_place_cuts_and_moves_a_clips_cues() -> None:
    cues = [
        Cue(0, 1000, "a", "1"),
        Cue(1500, 3000, "b"),
        Cue(2500, 2600, "c"),
        Cue(2600, 4000, "d"),
    ]
    # the clip's [1000, 2600) shown from 10 s: "a" ends where it starts (dropped),
    # "b" cut and moved, "c" moved whole, "d" starts at the end (dropped)
    assert place(cues, 1000, 2600, 10_000) == [Cue(10_500, 11_600, "b"), Cue(11_500, 11_600, "c")]
    assert place(cues, 2000, 3500, 0) == [
        Cue(0, 1000, "b"),
        Cue(500, 600, "c"),
        Cue(600, 1500, "d"),
    ]
    assert place(cues, 0, 10_000, 0) == cues


def test_joined_keeps_identifiers_unique() -> None:
    first, second = [Cue(0, 1000, "a", "1")], [Cue(2000, 3000, "b", "1"), Cue(3000, 4000, "c", "x")]
    assert joined([first, second]) == (
        "WEBVTT\n\n1\n00:00:00.000 --> 00:00:01.000\na\n\n"
        "00:00:02.000 --> 00:00:03.000\nb\n\nx\n00:00:03.000 --> 00:00:04.000\nc\n\n"
    )
    assert joined([]) == "WEBVTT\n\n"


def test_timestamp_map_header() -> None:
    text = to_vtt([Cue(0, 500, "x")], "X-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000")
    assert text.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:126000,LOCAL:00:00:00.000\n\n00:")
    assert parse_vtt(text.encode(), LIMITS) == [Cue(0, 500, "x")]


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("pt-br", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("sr-Latn", "sr-Latn"),
        ("de-CH-1996", "de-CH-1996"),
        ("en-US-x-twain", "en-US-x-twain"),
        ("yue", "yue"),
        ("zh-yue-HK", "zh-yue-HK"),
    ],
)
def test_language_tags(raw: str, tag: str) -> None:
    assert language_tag(raw) == tag


@pytest.mark.parametrize(
    "raw",
    ["", "e", "en_US", "en-", "-en", "en--us", "123", "en-US-", "ü", "x-a"],
)
def test_not_language_tags(raw: str) -> None:
    assert language_tag(raw) is None
