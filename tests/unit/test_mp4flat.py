"""The fragmented-to-progressive MP4 rewrite on files built here box by box: a two-track
fragmented MP4 (B-frame reordering, a fragment whose `tfdt` leaves a gap, explicit and
implicit data offsets, defaults from `trex` and `tfhd`) becomes ftyp + moov + mdat whose
sample tables are the bytes they must be, and anything else is refused readably."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest

from workers.media import mp4flat
from workers.media.mp4flat import Facts, Mp4FlatError, TrackFacts, describe, flatten

VIDEO = [b"V" * 10, b"v" * 4, b"w" * 5]  # first fragment: I, P, B
VIDEO2 = [b"X" * 7, b"x" * 2]
AUDIO = [b"a" * 3, b"b" * 3]
AUDIO2 = [b"c" * 3]
SYNC, NON_SYNC = 0x02000000, 0x01010000


def bx(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def fb(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return bx(kind, struct.pack(">I", version << 24 | flags), *parts)


# an AAC sample entry as ffmpeg writes it: AudioSampleEntry fields, then an esds whose
# descriptor sizes take four bytes each (ISO/IEC 14496-1 §8.3.3); objectType 0x40
ESDS = fb(
    b"esds",
    0,
    0,
    b"\x03\x80\x80\x80\x16\x00\x02\x00",  # ES_Descriptor, ES_ID 2, no flags
    b"\x04\x80\x80\x80\x0e\x40\x15" + bytes(12),  # DecoderConfigDescriptor: AAC
)
ENTRIES = {b"avc1": [bytes(8)], b"mp4a": [bytes(28), ESDS]}


def trak(tid: int, scale: int, handler: bytes, entry: bytes, media_time: int) -> bytes:
    empty = [fb(k, 0, 0, struct.pack(">I", 0)) for k in (b"stts", b"stsc", b"stco")]
    stbl = bx(
        b"stbl",
        fb(b"stsd", 0, 0, struct.pack(">I", 1), bx(entry, *ENTRIES[entry])),
        *empty[:2],
        fb(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        empty[2],
    )
    return bx(
        b"trak",
        fb(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, tid, 0, 0), bytes(60)),
        bx(b"edts", fb(b"elst", 0, 0, struct.pack(">IIiHH", 1, 0, media_time, 1, 0))),
        bx(
            b"mdia",
            fb(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, scale, 0), b"\x55\xc4\x00\x00"),
            fb(b"hdlr", 0, 0, bytes(4), handler, bytes(12), b"H\x00"),
            bx(b"minf", stbl),
        ),
    )


def moov() -> bytes:
    trex = [
        fb(b"trex", 0, 0, struct.pack(">5I", 1, 1, 0, 0, NON_SYNC)),
        fb(b"trex", 0, 0, struct.pack(">5I", 2, 1, 1024, 0, SYNC)),
    ]
    return bx(
        b"moov",
        fb(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, 0), bytes(80)),
        trak(1, 90000, b"vide", b"avc1", 3000),
        trak(2, 48000, b"soun", b"mp4a", 1024),
        bx(b"mvex", *trex),
        bx(b"udta", b"kept"),
    )


def fragment_one(*, audio_track: int = 2, start: int = 0) -> bytes:
    """Both tracks' data offsets relative to the moof (default-base-is-moof)."""

    def build(video_at: int, audio_at: int) -> bytes:
        video = bx(
            b"traf",
            fb(b"tfhd", 0, 0x020008, struct.pack(">II", 1, 3000)),
            fb(b"tfdt", 1, 0, struct.pack(">Q", start)),
            fb(
                b"trun",
                0,
                0xA05,
                struct.pack(">IiI", 3, video_at, SYNC),
                *(
                    struct.pack(">II", len(s), c)
                    for s, c in zip(VIDEO, (3000, 6000, 0), strict=True)
                ),
            ),
        )
        audio = bx(
            b"traf",
            fb(b"tfhd", 0, 0x020000, struct.pack(">I", audio_track)),
            fb(b"tfdt", 0, 0, struct.pack(">I", 0)),
            fb(
                b"trun",
                0,
                0x201,
                struct.pack(">Ii", 2, audio_at),
                *(struct.pack(">I", len(s)) for s in AUDIO),
            ),
        )
        return bx(b"moof", fb(b"mfhd", 0, 0, struct.pack(">I", 1)), video, audio)

    size = len(build(0, 0))
    vlen = sum(map(len, VIDEO))
    return build(size + 8, size + 8 + vlen) + bx(b"mdat", *VIDEO, *AUDIO)


def fragment_two(at: int) -> bytes:
    """Video with an absolute base data offset and its own durations, starting 600
    ticks after the first fragment's end; audio with neither base nor data offset:
    its data follows the video's (§8.8.7.1)."""

    def build(base: int) -> bytes:
        video = bx(
            b"traf",
            fb(b"tfhd", 0, 0x000001, struct.pack(">IQ", 1, base)),
            fb(b"tfdt", 1, 0, struct.pack(">Q", 9600)),
            fb(
                b"trun",
                0,
                0x305,
                struct.pack(">IiI", 2, 0, SYNC),
                *(struct.pack(">II", d, len(s)) for s, d in zip(VIDEO2, (3000, 1500), strict=True)),
            ),
        )
        audio = bx(
            b"traf",
            fb(b"tfhd", 0, 0x000010, struct.pack(">II", 2, 3)),
            fb(b"tfdt", 1, 0, struct.pack(">Q", 2048)),
            fb(b"trun", 0, 0, struct.pack(">I", 1)),
        )
        return bx(b"moof", fb(b"mfhd", 0, 0, struct.pack(">I", 2)), video, audio)

    size = len(build(0))
    return build(at + size + 8) + bx(b"mdat", *VIDEO2, *AUDIO2)


def fragmented() -> bytes:
    head = bx(b"ftyp", b"iso5", bytes(4), b"iso5iso6mp41") + moov()
    one = fragment_one()
    return head + one + fragment_two(len(head) + len(one)) + bx(b"mfra", bytes(8))


def top(data: bytes) -> list[tuple[bytes, bytes]]:
    return mp4flat.children(data)


def find(data: bytes, *path: bytes, nth: int = 0) -> bytes:
    """The payload of the box at `path`; `nth` picks among the first level's matches."""
    matches = [p for k, p in mp4flat.children(data) if k == path[0]]
    found = matches[nth]
    for kind in path[1:]:
        found = mp4flat.child(found, kind)
    return found


@pytest.fixture
def flat(tmp_path: Path) -> bytes:
    src, dst = tmp_path / "frag.mp4", tmp_path / "flat.mp4"
    src.write_bytes(fragmented())
    result = flatten(src, dst)
    assert result.fragments == 2 and result.samples == {1: 5, 2: 3}
    return dst.read_bytes()


def test_box_writers():
    assert mp4flat.box(b"free", b"ab") == b"\x00\x00\x00\x0afreeab"
    assert mp4flat.full_box(b"stss", 0, 1, b"\x00") == b"\x00\x00\x00\x0dstss\x00\x00\x00\x01\x00"


def test_layout_is_ftyp_moov_then_one_mdat_of_the_samples_in_file_order(flat):
    kinds = [k for k, _ in top(flat)]
    assert kinds == [b"ftyp", b"moov", b"mdat"]
    assert find(flat, b"ftyp") == b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41"
    assert find(flat, b"mdat") == b"".join(VIDEO + AUDIO + VIDEO2 + AUDIO2)
    moov_kinds = [k for k, _ in mp4flat.children(find(flat, b"moov"))]
    assert moov_kinds == [b"mvhd", b"trak", b"trak", b"udta"]  # mvex dropped, udta kept


def stbl(flat: bytes, nth: int) -> dict[bytes, bytes]:
    moov = find(flat, b"moov")
    trak = [p for k, p in mp4flat.children(moov) if k == b"trak"][nth]
    table = find(trak, b"mdia", b"minf", b"stbl")
    return dict(mp4flat.children(table))


def test_video_sample_tables(flat):
    t = stbl(flat, 0)
    assert list(t) == [b"stsd", b"stts", b"stss", b"ctts", b"stsc", b"stsz", b"stco"]
    # the gap before the second fragment (tfdt 9600, not 9000) lengthens sample 3
    assert t[b"stts"] == struct.pack(">10I", 0, 4, 2, 3000, 1, 3600, 1, 3000, 1, 1500)
    assert t[b"stss"] == struct.pack(">4I", 0, 2, 1, 4)
    assert t[b"ctts"] == struct.pack(">8I", 0, 3, 1, 3000, 1, 6000, 3, 0)
    assert t[b"stsc"] == struct.pack(">8I", 0, 2, 1, 3, 1, 2, 2, 1)
    assert t[b"stsz"] == struct.pack(">8I", 0, 0, 5, 10, 4, 5, 7, 2)
    mdat = len(flat) - sum(map(len, VIDEO + AUDIO + VIDEO2 + AUDIO2))
    assert t[b"stco"] == struct.pack(">4I", 0, 2, mdat, mdat + 25)


def test_audio_sample_tables_and_roll_group(flat):
    t = stbl(flat, 1)
    assert list(t) == [b"stsd", b"stts", b"stsc", b"stsz", b"stco", b"sgpd", b"sbgp"]
    assert t[b"stts"] == struct.pack(">4I", 0, 1, 3, 1024)  # all sync: no stss
    assert t[b"stsz"] == struct.pack(">3I", 0, 3, 3)  # one size for all
    mdat = len(flat) - sum(map(len, VIDEO + AUDIO + VIDEO2 + AUDIO2))
    assert t[b"stco"] == struct.pack(">4I", 0, 2, mdat + 19, mdat + 34)
    assert t[b"sgpd"] == b"\x01\x00\x00\x00roll" + struct.pack(">IIh", 2, 1, -1)
    assert t[b"sbgp"] == b"\x00\x00\x00\x00roll" + struct.pack(">III", 1, 3, 1)


def test_durations_and_edit_lists_are_filled_in(flat):
    moov = find(flat, b"moov")
    assert struct.unpack_from(">I", find(moov, b"mvhd"), 16)[0] == 124
    traks = [p for k, p in mp4flat.children(moov) if k == b"trak"]
    # video: presentation from 3000 (the edit's media time) to 14100 ticks: 123.3 ms,
    # rounded up; audio from 1024 to 3072 samples: 42.7 ms
    for trak, media, movie, media_time in (
        (traks[0], 14100, 124, 3000),
        (traks[1], 3072, 43, 1024),
    ):
        assert struct.unpack_from(">I", find(trak, b"tkhd"), 20)[0] == movie
        assert find(trak, b"edts", b"elst") == struct.pack(">IIIiHH", 0, 1, movie, media_time, 1, 0)
        assert struct.unpack_from(">I", find(trak, b"mdia", b"mdhd"), 16)[0] == media


def test_a_duration_beyond_32_bits_makes_the_box_version_1():
    mdhd = struct.pack(">IIIII", 0, 7, 8, 90000, 0) + b"\x55\xc4\x00\x00"
    wide = mp4flat.set_duration(mdhd, 12, 20, 1 << 33)
    assert wide == struct.pack(">IQQIQ", 1 << 24, 7, 8, 90000, 1 << 33) + b"\x55\xc4\x00\x00"
    assert mp4flat.set_duration(wide, 12, 20, 5)[-12:] == struct.pack(">Q", 5) + b"\x55\xc4\x00\x00"
    assert mp4flat.set_duration(mdhd, 12, 20, 5) == struct.pack(">IIIII", 0, 7, 8, 90000, 5) + (
        b"\x55\xc4\x00\x00"
    )


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: b"", "no moov box"),
        (lambda: bx(b"ftyp", b"isom") + b"\x00\x00\x00\x40moov", "runs past the end"),
        (lambda: fragment_one(), "a moof before the moov"),
        (
            lambda: bx(b"ftyp", b"isom") + moov().replace(b"mvex", b"mvez"),
            "has no trex: not a fragmented MP4",
        ),
        (lambda: fragmented()[:-40], "runs past the end"),
        (
            lambda: bx(b"ftyp", b"isom") + moov() + fragment_one(audio_track=9),
            "track 9, which the moov does not declare",
        ),
        (
            lambda: bx(b"ftyp", b"isom") + moov() + fragment_one(start=1800),
            "starts at decode time 1800, not 0",
        ),
    ],
)
def test_refuses_what_it_cannot_rewrite(tmp_path, make, reason):
    src = tmp_path / "in.mp4"
    src.write_bytes(make())
    with pytest.raises(Mp4FlatError, match=reason):
        flatten(src, tmp_path / "out.mp4")


def test_describe_reads_what_the_written_file_declares(flat, tmp_path):
    path = tmp_path / "flat.mp4"
    assert path.read_bytes() == flat
    facts = describe(path)
    assert facts == Facts(
        boxes=["ftyp", "moov", "mdat"],
        duration=0.124,
        tracks=[TrackFacts("vide", "h264", 0.124, 5), TrackFacts("soun", "aac", 0.043, 3)],
    )
    assert Facts.from_json(json.loads(json.dumps(dataclasses.asdict(facts)))) == facts
    # an mp4a entry without an esds is not called AAC
    other = flat.replace(b"esds", b"esdz")
    path.write_bytes(other)
    assert [t.codec for t in describe(path).tracks] == ["h264", "mp4a"]


def test_main_prints_one_json_line_or_refuses_readably(tmp_path, capsys):
    src, dst = tmp_path / "frag.mp4", tmp_path / "flat.mp4"
    src.write_bytes(fragmented())
    assert mp4flat.main([str(src), str(dst)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flattened"].startswith("2 fragments (track 1: 5, track 2: 3 samples)")
    assert report["facts"]["boxes"] == ["ftyp", "moov", "mdat"]
    assert mp4flat.main([str(dst), str(tmp_path / "again.mp4")]) == 1  # not fragmented
    assert capsys.readouterr().err == "mp4flat: track 1 has no trex: not a fragmented MP4\n"
    assert mp4flat.main([str(tmp_path / "missing.mp4"), str(dst)]) == 1
    assert "No such file" in capsys.readouterr().err
    short = tmp_path / "short.mp4"  # a tkhd shorter than its fields
    short.write_bytes(bx(b"ftyp", b"isom") + bx(b"moov", bx(b"trak", bx(b"tkhd", b"\x00"))))
    assert mp4flat.main([str(short), str(dst)]) == 1
    assert capsys.readouterr().err.startswith("mp4flat: malformed MP4 (error(")
    assert mp4flat.main([]) == 2
