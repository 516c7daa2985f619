"""The TS joiner on MPEG-TS built here packet by packet: tables as ffmpeg writes them,
clock fields, ADTS framing, pieces laid end to end (video clocks moved, decode order
kept, audio re-laid gapless), and refusals of anything else."""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.media import tsjoin
from workers.media.tsjoin import (
    AUDIO_PID,
    BASE,
    CLOCK,
    PACKET,
    SLOT,
    VIDEO_PID,
    WRAP,
    JoinError,
    TsJoiner,
    adts_frames,
    crc32_mpeg2,
    first_video_pts,
    pat_packet,
    pmt_packet,
    read_pcr_base,
    read_timestamp,
    without_video,
    write_pcr_base,
    write_timestamp,
)

# PAT and PMT of a segment ffmpeg 5.1's HLS muxer wrote (H.264 on 0x100, AAC on 0x101)
FFMPEG_PAT = bytes.fromhex("474000100000b00d0001c100000001f0002ab104b2")
FFMPEG_PMT = bytes.fromhex("475000100002b0170001c10000e100f0001be100f0000fe101f0002f44b99b")


def test_tables_are_byte_for_byte_ffmpegs():
    assert pat_packet() == FFMPEG_PAT.ljust(PACKET, b"\xff")
    assert pmt_packet() == FFMPEG_PMT.ljust(PACKET, b"\xff")


def test_crc32_mpeg2_check_value():
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # CRC-32/MPEG-2 catalogue check


@pytest.mark.parametrize("value", [0, 1, 900_000, 2**32 + 12345, 2**33 - 1])
@pytest.mark.parametrize("prefix", [0x2, 0x3, 0x1])
def test_timestamps_round_trip_and_keep_their_prefix(value, prefix):
    buf = bytearray([prefix << 4, 0, 0, 0, 0])
    write_timestamp(buf, 0, value)
    assert read_timestamp(buf, 0) == value
    assert buf[0] >> 4 == prefix and buf[0] & 1 and buf[2] & 1 and buf[4] & 1  # markers


def test_timestamps_wrap_at_33_bits():
    buf = bytearray([0x20, 0, 0, 0, 0])
    write_timestamp(buf, 0, 2**33 + 5)
    assert read_timestamp(buf, 0) == 5


def test_pcr_base_round_trips_and_keeps_the_extension():
    buf = bytearray(6)
    buf[4], buf[5] = 0x7F, 0xAB  # reserved bits and extension
    write_pcr_base(buf, 0, 2**33 - 3)
    assert read_pcr_base(buf, 0) == 2**33 - 3
    assert buf[4] & 0x7F == 0x7F and buf[5] == 0xAB


# ------------------------------------------------------------------ ADTS


def adts(payload: bytes, *, rate_index: int = 3, profile: int = 1, blocks: int = 0) -> bytes:
    size = 7 + len(payload)
    return (
        bytes(
            [
                0xFF,
                0xF1,
                (profile << 6) | (rate_index << 2) | 0,
                0x80 | (size >> 11),
                (size >> 3) & 0xFF,
                ((size & 7) << 5) | 0x1F,
                0xFC | blocks,
            ]
        )
        + payload
    )


def test_adts_frames_split_and_refuse():
    frames = [adts(bytes([n]) * (10 + n)) for n in range(3)]
    assert adts_frames(b"".join(frames)) == frames
    for bad, why in [
        (adts(b"x", rate_index=4), "48 kHz"),
        (adts(b"x", profile=0), "AAC-LC"),
        (adts(b"x", blocks=1), "raw data blocks"),
        (b"\x00" * 20, "sync"),
        (adts(b"xyz")[:-1], "length"),
    ]:
        with pytest.raises(JoinError, match=why):
            adts_frames(bad)


# ------------------------------------------------------- a tiny TS muxer


class Muxer:
    """MPEG-TS as ffmpeg's muxer lays it out: PAT and PMT first, a PES per video
    frame (adaptation field with random access and PCR on key frames), audio PES of
    several ADTS frames."""

    def __init__(self) -> None:
        self.cc: dict[int, int] = {}

    def packets(self, pid: int, data: bytes, *, key: bool = False, pcr: int | None = None) -> bytes:
        out = []
        first = True
        while data:
            af = b""
            if first and (key or pcr is not None):
                flags = (0x40 if key else 0) | (0x10 if pcr is not None else 0)
                body = bytes([flags])
                if pcr is not None:
                    field = bytearray(6)
                    write_pcr_base(field, 0, pcr)
                    field[4] |= 0x7E
                    body += bytes(field)
                af = bytes([len(body)]) + body
            room = PACKET - 4 - len(af)
            chunk, data = data[:room], data[room:]
            if len(chunk) < room:  # stuffing
                pad = room - len(chunk)
                if af:
                    af = bytes([af[0] + pad]) + af[1:] + b"\xff" * pad
                elif pad == 1:
                    af = b"\x00"
                else:
                    af = bytes([pad - 1, 0]) + b"\xff" * (pad - 2)
            cc = self.cc.get(pid, 0)
            self.cc[pid] = (cc + 1) & 15
            head = bytes([0x47, (0x40 if first else 0) | pid >> 8, pid & 0xFF])
            out.append(head + bytes([(0x30 if af else 0x10) | cc]) + af + chunk)
            first = False
        return b"".join(out)

    @staticmethod
    def pes(stream_id: int, pts: int, dts: int | None, payload: bytes) -> bytes:
        stamps = bytearray(5 if dts is None else 10)
        stamps[0] = 0x20 if dts is None else 0x30
        write_timestamp(stamps, 0, pts)
        if dts is not None:
            stamps[5] = 0x10
            write_timestamp(stamps, 5, dts)
        flags = 0x80 if dts is None else 0xC0
        header = bytes([0x80, flags, len(stamps)]) + bytes(stamps)
        length = 0 if stream_id == 0xE0 else len(header) + len(payload)
        return b"\x00\x00\x01" + bytes([stream_id]) + length.to_bytes(2, "big") + header + payload


def piece(
    fps: int, frames: int, start: int, *, audio_frames: int | None = None, tag: int = 1
) -> bytes:
    """A clip as the transcoder writes it: `frames` frames from PTS `start` with a
    B-frame delay of two frames, and AAC from one frame before the video (priming)
    to a little after it. Audio frame i's payload is (tag, i) repeated."""
    m = Muxer()
    tick = 90_000 // fps
    out = [pat_packet(), pmt_packet()]
    n_audio = audio_frames if audio_frames is not None else frames * tick // SLOT + 2
    audio = [adts(bytes([tag, i % 256]) * 10) for i in range(n_audio)]
    a = 0
    for i in range(frames):
        pts, dts = start + i * tick, start + (i - 2) * tick  # simple: display order = decode
        key = i == 0
        out.append(
            m.packets(
                VIDEO_PID,
                m.pes(0xE0, pts, dts, bytes(300)),
                key=key,
                pcr=dts - 1000 if key or i % 5 == 0 else None,
            )
        )
        while a < n_audio and start - SLOT + a * SLOT <= pts:
            batch = audio[a : a + 4]
            out.append(
                m.packets(AUDIO_PID, m.pes(0xC0, start - SLOT + a * SLOT, None, b"".join(batch)))
            )
            a += len(batch)
    while a < n_audio:
        batch = audio[a : a + 4]
        out.append(
            m.packets(AUDIO_PID, m.pes(0xC0, start - SLOT + a * SLOT, None, b"".join(batch)))
        )
        a += len(batch)
    return b"".join(out)


#: Decode-order structures of the x264 streams the transcoder and the export's cuts
#: write: B-pyramids (three B-frames, the middle one a reference: a reorder delay of
#: two frames), plain B-frames (one frame), none (a one-frame cut, intra only).
DELAYS = {"pyramid": 2, "b": 1, "none": 0}


def decode_order(frames: int, structure: str) -> list[int]:
    """Presentation indexes of a closed GOP's frames in decode order: an I-frame,
    then each anchor (up to four frames on) before the B-frames it closes."""
    order, shown = [0], 0
    while shown < frames - 1:
        anchor = min(shown + 4, frames - 1) if structure != "none" else shown + 1
        between = list(range(shown + 1, anchor))
        if structure == "pyramid" and len(between) == 3:
            between = [between[1], between[0], between[2]]
        order += [anchor, *between]
        shown = anchor
    return order


def x264_piece(fps: Fraction, frames: int, start: int, structure: str, *, tag: int = 1) -> bytes:
    """A piece with x264's timestamps: PTS on the frame grid from `start` (rounded to
    ticks, wrapping at 2^33), decode order by `structure`, the k-th DTS the k-th
    presentation time less the reorder delay, no DTS field where DTS = PTS (as
    ffmpeg's muxer writes it); AAC from one frame before the video to after it."""
    m = Muxer()
    shown = [start + round(i * CLOCK / fps) for i in range(frames + 1)]
    delay = shown[min(DELAYS[structure], frames - 1)] - shown[0]
    out = [pat_packet(), pmt_packet()]
    end = shown[frames]
    audio_times = list(range(start - SLOT, end + SLOT, SLOT))
    a = 0
    for k, i in enumerate(decode_order(frames, structure)):
        pts, dts = shown[i] % WRAP, (shown[k] - delay) % WRAP
        pes = m.pes(0xE0, pts, None if dts == pts else dts, bytes(200 + 37 * k % 300))
        out.append(m.packets(VIDEO_PID, pes, key=k == 0, pcr=dts if k % 5 == 0 else None))
        while a < len(audio_times) and audio_times[a] <= shown[k] - delay:
            batch = [adts(bytes([tag, (a + n) % 256]) * 10) for n in range(4)]
            batch = batch[: len(audio_times) - a]
            pes = m.pes(0xC0, audio_times[a] % WRAP, None, b"".join(batch))
            out.append(m.packets(AUDIO_PID, pes))
            a += len(batch)
    while a < len(audio_times):
        batch = [adts(bytes([tag, (a + n) % 256]) * 10) for n in range(4)][: len(audio_times) - a]
        out.append(m.packets(AUDIO_PID, m.pes(0xC0, audio_times[a] % WRAP, None, b"".join(batch))))
        a += len(batch)
    return b"".join(out)


def check_decode_order(
    video: list[tuple[int, int]], specs: list[tuple[float, int, str]], *, grid: int
) -> None:
    """The joined video of pieces (fps, frames, structure), in order: each piece's
    frames in its own decode order, shown end to end from BASE; DTS strictly
    increasing and never after their PTS."""
    expected_pts, at = [], Fraction(0)
    for fps, frames, structure in specs:
        rate = Fraction(fps)
        first = round(at)
        grid_of = [round(i * CLOCK / rate) for i in range(frames + 1)]
        expected_pts += [BASE + first + grid_of[i] for i in decode_order(frames, structure)]
        at = Fraction(first + grid_of[frames - 1] + rate.denominator * CLOCK // rate.numerator)
    assert [p for p, _ in video] == expected_pts
    dts = [d for _, d in video]
    assert all(b > a for a, b in zip(dts, dts[1:], strict=False)), dts
    assert all(d <= p for p, d in video)


def parse(stream: bytes) -> dict:
    """What a demuxer sees: video (pts, dts) per frame, audio PES (pts, frames), the
    first video packet of each piece's discontinuity flag, audio continuity counters."""
    video, audio, flags, audio_cc, audio_frames, has_dts = [], [], [], [], [], []
    pes: dict[int, bytearray] = {}
    starts: dict[int, int] = {}

    def flush(pid: int) -> None:
        data = pes.pop(pid, None)
        if data is None:
            return
        pts = read_timestamp(data, 9)
        if pid == VIDEO_PID:
            dts = read_timestamp(data, 14) if data[7] >> 6 == 3 else pts
            video.append((pts, dts))
            has_dts.append(data[7] >> 6 == 3)
        else:
            frames = adts_frames(bytes(data[9 + data[8] :]))
            audio.append((pts, len(frames)))
            audio_frames.extend((f[7], f[8]) for f in frames)

    for off in range(0, len(stream), PACKET):
        p = stream[off : off + PACKET]
        assert p[0] == 0x47
        pid = ((p[1] & 0x1F) << 8) | p[2]
        at = 4
        if p[3] & 0x20:
            if pid == VIDEO_PID and p[4] and p[5] & 0x40:
                flags.append(bool(p[5] & 0x80))
            at += 1 + p[4]
        if pid == AUDIO_PID:
            audio_cc.append(p[3] & 15)
        if pid not in (VIDEO_PID, AUDIO_PID):
            continue
        if p[1] & 0x40:
            flush(pid)
            pes[pid] = bytearray()
            starts[pid] = off
        pes[pid] += p[at:]
    flush(VIDEO_PID)
    flush(AUDIO_PID)
    return {
        "video": video,
        "audio": audio,
        "audio_frames": audio_frames,  # (tag, index) of every frame written
        "flags": flags,
        "audio_cc": audio_cc,
        "has_dts": has_dts,
    }


def join(pieces: list[tuple[int, bytes]], **options) -> tuple[bytes, TsJoiner]:
    j = TsJoiner(**options)
    out = []
    for fps, data in pieces:
        out.append(j.begin(Fraction(fps)))
        half = len(data) // PACKET // 2 * PACKET  # fed in two calls, as segments are
        out.append(j.feed(data[:half]))
        out.append(j.feed(data[half:]))
        out.append(j.end())
    out.append(j.finish())
    return b"".join(out), j


def test_pieces_are_laid_end_to_end_with_gapless_audio():
    # clip 1: 25 fps, 20 frames from 1.4 s; clip 2: 50 fps, 30 frames from 1.4 s again
    stream, j = join([(25, piece(25, 20, 126_000)), (50, piece(50, 30, 126_000))])
    got = parse(stream)
    assert stream[:PACKET] == pat_packet() and stream[PACKET : 2 * PACKET] == pmt_packet()
    pts = [p for p, _ in got["video"]]
    assert pts[:20] == [BASE + i * 3600 for i in range(20)]
    assert pts[20:] == [BASE + 72_000 + i * 1800 for i in range(30)]  # right after clip 1
    dts = [d for _, d in got["video"]]
    assert all(b > a for a, b in zip(dts, dts[1:], strict=False))
    assert all(d <= p for p, d in got["video"])
    assert j.stats.video_frames == 50 and j.stats.pieces == 2
    assert j.stats.spans == [72_000, 54_000] and j.duration == pytest.approx(1.4)
    assert j.stats.dts_raised == 0  # 25 -> 50 fps: decode order needs no help
    # audio: one gapless run of 1,024-sample frames from the first priming frame to
    # within half a frame of the video's end
    first = got["audio"][0][0]
    assert first == BASE - SLOT
    t = first
    for pts_a, n in got["audio"]:
        assert pts_a == t
        t += n * SLOT
    video_end = BASE + 72_000 + 54_000
    assert abs(t - video_end) <= SLOT // 2
    assert j.stats.audio_frames == (t - first) // SLOT and j.stats.audio_repeated == 0
    # the second piece's first video packet says its counter restarts; ours count on
    assert got["flags"] == [True, True]
    cc = got["audio_cc"]
    assert all((b - a) % 16 == 1 for a, b in zip(cc, cc[1:], strict=False))


def test_audio_slots_take_the_frames_playing_then():
    # 0.8 s at 25 fps then 0.8 s more: the first piece's frames in order from its
    # priming frame up to the join, then the second's from the frame nearest the join
    # (its own priming frame skipped), never one frame twice or out of order
    stream, j = join([(25, piece(25, 20, 126_000, tag=1)), (25, piece(25, 20, 700_000, tag=2))])
    chosen = parse(stream)["audio_frames"]
    ones = [i for tag, i in chosen if tag == 1]
    twos = [i for tag, i in chosen if tag == 2]
    assert [tag for tag, _ in chosen] == [1] * len(ones) + [2] * len(twos)
    assert ones == list(range(len(ones))) and twos == list(range(twos[0], twos[0] + len(twos)))
    # slot k plays at -1920 + k*1920 ticks; the join is at 72,000: 38.5 slots in
    assert len(ones) == 38  # slots whose middle lies before the join
    assert twos[0] == 1  # piece 2's frame 1 starts at the join (frame 0 is priming)
    assert len(chosen) == round((144_000 + SLOT) / SLOT)
    assert j.stats.audio_repeated == 0


def test_decode_order_is_kept_where_a_slower_clip_follows_a_faster_one():
    # 50 fps reorders two frames (40 ms) ahead, 25 fps two frames (80 ms): the 25 fps
    # clip's first DTS would fall before the 50 fps clip's last one
    stream, j = join([(50, piece(50, 20, 126_000)), (25, piece(25, 10, 126_000))], dts_grid=1800)
    got = parse(stream)
    dts = [d for _, d in got["video"]]
    assert all(b > a for a, b in zip(dts, dts[1:], strict=False))
    assert all(d <= p for p, d in got["video"])
    # clip 1's last DTS: its last frame (BASE + 19 x 1800) less 3,600; clip 2's first
    # two would be BASE + 36,000 - 7,200 and - 3,600: the first is moved between, on
    # the grid (no room there: evenly), the second keeps its own
    assert dts[19] == BASE + 30_600
    assert dts[20] == BASE + 31_500 and dts[21] == BASE + 32_400
    assert j.stats.dts_raised == 1


def test_a_one_frame_cut_then_a_faster_clip_keeps_decode_order():
    # issue 24: a moment starting in the last frame of a 24 fps clip (a one-frame cut:
    # intra only, no DTS field) crossing into a 30 fps clip, DTS on the 30 fps grid:
    # raising each DTS by a whole grid step overtook the B-frame that decodes when it
    # is shown ("decode order cannot be kept at a join")
    one = x264_piece(Fraction(24), 1, 500_000, "none")
    after = x264_piece(Fraction(30), 12, 126_000, "pyramid")
    stream, j = join([(24, one), (30, after)], dts_grid=3000)
    got = parse(stream)
    assert [p for p, _ in got["video"]][:1] == [BASE]
    check_decode_order(got["video"], [(24, 1, "none"), (30, 12, "pyramid")], grid=3000)
    assert j.stats.dts_raised == 2  # the I and P frames decoding ahead of the join


def test_short_audio_is_padded_by_repeating_and_counted():
    stream, j = join([(25, piece(25, 20, 126_000, audio_frames=10))])
    total = sum(n for _, n in parse(stream)["audio"])
    assert total == round((72_000 + SLOT) / SLOT)
    assert j.stats.audio_repeated > 0


def next_segment_audio(start: int, first_frame: int, frames: int, tag: int) -> bytes:
    """The start of a clip's next media segment: its tables, a video frame and audio
    frames `first_frame`.. of the clip (audio frame i at start - SLOT + i x SLOT)."""
    m = Muxer()
    video = m.packets(VIDEO_PID, m.pes(0xE0, start + 80_000, start + 70_000, bytes(300)), key=True)
    audio = b"".join(
        m.packets(
            AUDIO_PID,
            m.pes(
                0xC0,
                start - SLOT + i * SLOT,
                None,
                b"".join(adts(bytes([tag, n % 256]) * 10) for n in range(i, i + 4)),
            ),
        )
        for i in range(first_frame, first_frame + frames, 4)
    )
    return pat_packet() + pmt_packet() + video + audio


def test_the_next_segments_audio_completes_a_piece():
    # the segment's muxer wrote its last 0.35 s of sound into the next segment's file:
    # fed with feed_audio, the piece's slots take those frames, never a repeated one
    data = piece(25, 20, 126_000, audio_frames=24)  # 24 of the 39 frames its 0.8 s need
    j = TsJoiner()
    out = [j.begin(Fraction(25)), j.feed(data)]
    out.append(j.feed_audio(next_segment_audio(126_000, 24, 20, tag=9)))
    out += [j.end(), j.finish()]
    chosen = parse(b"".join(out))["audio_frames"]
    assert chosen == [(1, i) for i in range(24)] + [(9, i) for i in range(24, len(chosen))]
    assert len(chosen) == round((72_000 + SLOT) / SLOT) and j.stats.audio_repeated == 0
    assert j.stats.video_frames == 20  # the next segment's video is not joined
    with pytest.raises(RuntimeError):
        TsJoiner().feed_audio(data)


def test_without_video_keeps_the_tables_and_the_audio():
    data = next_segment_audio(126_000, 0, 8, tag=3)
    kept = without_video(data)
    pids = [((kept[o + 1] & 0x1F) << 8) | kept[o + 2] for o in range(0, len(kept), PACKET)]
    assert VIDEO_PID not in pids and pids[:2] == [0, 0x1000] and AUDIO_PID in pids
    assert parse(kept)["audio_frames"] == parse(data)["audio_frames"]


def test_decode_timestamps_snap_to_the_grid():
    stream, _ = join([(25, piece(25, 12, 126_000)), (50, piece(50, 12, 126_000))], dts_grid=1800)
    got = parse(stream)
    assert all(d % 1800 == 0 for _, d in got["video"])
    pts_sorted = [p for p, _ in got["video"]]
    assert pts_sorted[0] == BASE  # presentation untouched


def test_frames_without_a_dts_field_keep_their_pts_as_dts():
    # ffmpeg writes no DTS field where DTS = PTS: such a frame can only decode when it
    # is shown, whatever the grid (a grid DTS for it would never reach the stream)
    stream, _ = join([(24, x264_piece(Fraction(24), 9, 126_000, "pyramid"))], dts_grid=1800)
    got = parse(stream)
    flags = [has_dts for has_dts in got["has_dts"]]
    assert False in flags and True in flags
    for (pts, dts), has_dts in zip(got["video"], flags, strict=True):
        assert dts == pts if not has_dts else dts % 1800 == 0


def test_refusals():
    good = piece(25, 5, 126_000)
    j = TsJoiner()
    j.begin(Fraction(25))
    with pytest.raises(JoinError, match="188"):
        j.feed(good[:100])
    cases = {
        "sync": b"\x00" * PACKET,
        "PAT and PMT": good[2 * PACKET :],  # video before any table
        "random access": good[: 2 * PACKET]
        + Muxer().packets(VIDEO_PID, Muxer.pes(0xE0, 1, 1, bytes(10))),
    }
    for why, data in cases.items():
        j = TsJoiner()
        j.begin(Fraction(25))
        with pytest.raises(JoinError, match=why):
            j.feed(data)
            j.end()
    j = TsJoiner()
    j.begin(Fraction(25))
    j.feed(pat_packet() + pmt_packet())
    with pytest.raises(JoinError, match="no video"):
        j.end()
    with pytest.raises(JoinError, match="nothing"):
        TsJoiner().finish()
    with pytest.raises(RuntimeError):
        TsJoiner().feed(good)


def test_first_video_pts():
    assert first_video_pts(piece(25, 3, 123_456)) == 123_456
    with pytest.raises(JoinError):
        first_video_pts(pat_packet())
    assert tsjoin.SLOT == 1920


# ---------------------------------------------- property: every pair of pieces

#: Frame rates a piece can have: the transcoder's standard ones, the exact ones it
#: keeps (down to 1 fps) and, beyond its 60 fps cap, up to 120 fps.
RATES = [Fraction(r) for r in (1, 5, 12, 15, 24, 25, 30, 48, 50, 60, 90, 100, 120)] + [
    Fraction(25, 2),
    Fraction(24000, 1001),
    Fraction(30000, 1001),
    Fraction(60000, 1001),
    Fraction(120000, 1001),
]
JOIN_DRAWS = int(os.environ.get("STORYFORGE_JOIN_DRAWS", "200"))


@st.composite
def pieces_st(draw: st.DrawFn) -> list[tuple[Fraction, int, str, int, int]]:
    """Pieces as (fps, frames, structure, first PTS, first feed's size in packets)."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        fps = draw(st.sampled_from(RATES))
        frames = draw(st.sampled_from([1, 2, 3, 4, 5]) | st.integers(1, 40))
        structure = draw(st.sampled_from(sorted(DELAYS)))
        start = draw(st.sampled_from([126_000, 1_400_000, WRAP - 90_000]) | st.integers(0, WRAP))
        split = draw(st.none() | st.integers(1, 40))  # None: the whole piece at once
        out.append((fps, frames, structure, start, split))
    return out


@settings(max_examples=JOIN_DRAWS, deadline=None)
@given(pieces=pieces_st())
def test_any_pieces_join_in_decode_order(pieces):
    """Whatever the rates (1-120 fps), reorder delays (B-pyramids, B-frames, none),
    lengths (one frame and up), first timestamps (wrapping included) and feeds: the
    pieces are shown end to end in their own decode order, DTS strictly increase and
    never come after their PTS, DTS fields sit on the grid but where a join moved
    them, the audio is one gapless run to the end of the video."""
    grid = max(1, int(CLOCK / max(fps for fps, *_ in pieces)))
    j = TsJoiner(dts_grid=grid)
    out = []
    for n, (fps, frames, structure, start, split) in enumerate(pieces):
        data = x264_piece(fps, frames, start, structure, tag=n % 256)
        out.append(j.begin(fps))
        cut = len(data) if split is None else min(split * PACKET, len(data))
        out.append(j.feed(data[:cut]))
        if cut < len(data):
            out.append(j.feed(data[cut:]))
        out.append(j.end())
    out.append(j.finish())
    got = parse(b"".join(out))
    check_decode_order(got["video"], [(f, n, st_) for f, n, st_, _, _ in pieces], grid=grid)
    off_grid = [
        d for (p, d), has in zip(got["video"], got["has_dts"], strict=True) if has and d % grid
    ]
    assert len(off_grid) <= j.stats.dts_raised
    t = got["audio"][0][0]
    for pts_a, count in got["audio"]:
        assert pts_a == t
        t += count * SLOT
    assert abs(t - (BASE + sum(j.stats.spans))) <= SLOT // 2
