"""Joins MPEG-TS pieces (runs of HLS media segments, or re-encoded cuts) into one
continuous MPEG-TS stream that ffmpeg stream-copies into the export's MP4. Pure: bytes
in, bytes out, no I/O.

Each piece keeps its own clock (ffmpeg restarts timestamps for every clip). The joiner
lays the pieces end to end on one timeline:

- **Video** packets pass through unchanged but for their clocks: every PES header's
  PTS and every PCR get the piece's offset (ISO/IEC 13818-1 §2.4.3.7, §2.4.3.5), so
  piece *n+1* starts exactly where piece *n*'s last frame ends. The first video packet
  of each piece gets the discontinuity indicator (§2.4.3.5), so its continuity counter
  and its PCR restart legally.
- **Decode order** is kept at every join. A piece's DTS get its offset too and are
  floored to `dts_grid` (the fastest frame period among the clips, so a tool that
  guesses the file's frame rate from its first DTS, as ffmpeg does, finds the
  fastest; a frame whose PES carries no DTS decodes at its PTS and keeps it). A
  piece can start decoding further ahead of its first frame than the previous
  piece's last frame decodes ahead of its own (a 24 fps clip reorders two frames,
  83 ms, ahead; a 50 fps one 40 ms; a one-frame cut not at all): its first DTS then
  fall at or before the previous one. Those frames (they carry a DTS: each decodes
  before it is shown) get new DTS, read ahead in the piece: packed on the grid just
  below the first of its frames that keeps its own (evenly between where the grid
  has no room), each at most its PTS and after the previous piece's last DTS. That
  always exists for H.264: frame *k* in decode order would have to be shown within
  *k* ticks of its piece's start for it not to (a reorder depth of hundreds of
  frames; H.264 allows 16), so no piece is re-encoded for decode order.
- **Audio** is rebuilt: the pieces' ADTS frames (ISO/IEC 13818-7 §6.2, 1,024 samples at
  48 kHz each) are re-laid as one gapless sequence, slot after slot of exactly 1,920
  ticks, each slot filled with the frame of the piece playing at that time whose clock
  is nearest. A player that plays audio sample by sample (most do) then stays in sync
  at every join: the error is at most half a frame (10.7 ms) and never accumulates.
- PAT/PMT are written once at the start (§2.4.4.3, §2.4.4.8); the pieces' own tables,
  SDT and null packets are dropped.

Every piece must be H.264 + AAC-LC (ADTS, 48 kHz) MPEG-TS as our transcoder writes it,
starting with a random access point; anything else raises `JoinError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

PACKET = 188
SYNC = 0x47
CLOCK = 90_000  # PTS/DTS ticks per second (§2.4.3.7)
WRAP = 1 << 33
AAC_SAMPLES = 1024
AAC_RATE = 48_000
SLOT = AAC_SAMPLES * CLOCK // AAC_RATE  # 1,920 ticks per AAC frame
BASE = 10 * CLOCK  # timeline origin: leaves room for the first DTS before the first PTS

PAT_PID = 0x0000
SDT_PID = 0x0011
NULL_PID = 0x1FFF
PMT_PID = 0x1000
VIDEO_PID = 0x0100
AUDIO_PID = 0x0101
STREAM_H264 = 0x1B
STREAM_ADTS = 0x0F
_AUDIO_STREAM_ID = 0xC0
_FRAMES_PER_PES = 8
_LOOKAHEAD = 16  # video frames read ahead at the start of a piece (H.264's deepest reorder)


class JoinError(ValueError):
    """A piece is not the MPEG-TS the joiner expects (what is wrong, readably)."""


# ------------------------------------------------------------------ CRC, tables


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC_32 of PSI sections (§2.4.4.11, Annex A): polynomial 0x04C11DB7, no
    reflection, initial value 0xFFFFFFFF, no final xor."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ b) & 0xFF]
    return crc


def _section_packet(pid: int, section: bytes) -> bytes:
    body = section + crc32_mpeg2(section).to_bytes(4, "big")
    head = bytes([SYNC, 0x40 | (pid >> 8), pid & 0xFF, 0x10, 0x00])  # PUSI, payload, pointer 0
    return (head + body).ljust(PACKET, b"\xff")


def pat_packet() -> bytes:
    """One PAT (§2.4.4.3): program 1 on PMT_PID, as ffmpeg's muxer writes it."""
    section = bytes([0x00, 0xB0, 13, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01])
    return _section_packet(PAT_PID, section + bytes([0xE0 | PMT_PID >> 8, PMT_PID & 0xFF]))


def pmt_packet() -> bytes:
    """One PMT (§2.4.4.8): H.264 on VIDEO_PID (also the PCR PID), ADTS AAC on AUDIO_PID."""
    streams = b"".join(
        bytes([kind, 0xE0 | pid >> 8, pid & 0xFF, 0xF0, 0x00])
        for kind, pid in ((STREAM_H264, VIDEO_PID), (STREAM_ADTS, AUDIO_PID))
    )
    length = 9 + len(streams) + 4
    head = bytes([0x02, 0xB0, length, 0x00, 0x01, 0xC1, 0x00, 0x00])
    pcr = bytes([0xE0 | VIDEO_PID >> 8, VIDEO_PID & 0xFF, 0xF0, 0x00])
    return _section_packet(PMT_PID, head + pcr + streams)


# ------------------------------------------------------------------ field codecs


def read_timestamp(b: bytes | bytearray, at: int) -> int:
    """The 33-bit PTS/DTS coded in 5 bytes at `at` (§2.4.3.7)."""
    return (
        ((b[at] >> 1) & 0x07) << 30
        | b[at + 1] << 22
        | (b[at + 2] >> 1) << 15
        | b[at + 3] << 7
        | b[at + 4] >> 1
    )


def write_timestamp(b: bytearray, at: int, value: int) -> None:
    """Code `value` at `at`, keeping the 4-bit prefix already there (0010/0011/0001)."""
    v = value % WRAP
    b[at] = (b[at] & 0xF0) | ((v >> 29) & 0x0E) | 1
    b[at + 1] = (v >> 22) & 0xFF
    b[at + 2] = ((v >> 14) & 0xFE) | 1
    b[at + 3] = (v >> 7) & 0xFF
    b[at + 4] = ((v << 1) & 0xFE) | 1


def _timestamp_bytes(prefix: int, value: int) -> bytes:
    out = bytearray(5)
    out[0] = prefix << 4
    write_timestamp(out, 0, value)
    return bytes(out)


def read_pcr_base(b: bytes | bytearray, at: int) -> int:
    """The 33-bit program_clock_reference_base at `at` (§2.4.3.5)."""
    return b[at] << 25 | b[at + 1] << 17 | b[at + 2] << 9 | b[at + 3] << 1 | b[at + 4] >> 7


def write_pcr_base(b: bytearray, at: int, value: int) -> None:
    v = value % WRAP
    b[at] = (v >> 25) & 0xFF
    b[at + 1] = (v >> 17) & 0xFF
    b[at + 2] = (v >> 9) & 0xFF
    b[at + 3] = (v >> 1) & 0xFF
    b[at + 4] = ((v << 7) & 0x80) | (b[at + 4] & 0x7F)


def _unwrap(value: int, near: int) -> int:
    """`value` (33 bits) moved by multiples of 2^33 to lie within 2^32 of `near`."""
    return value + ((near - value + (WRAP >> 1)) // WRAP) * WRAP


def adts_frames(data: bytes | bytearray) -> list[bytes]:
    """Split ADTS bytes into frames (ISO/IEC 13818-7 §6.2), each AAC-LC, 48 kHz, one
    raw data block (1,024 samples). JoinError on anything else."""
    frames = []
    i, n = 0, len(data)
    while i < n:
        if n - i < 7 or data[i] != 0xFF or (data[i + 1] & 0xF6) != 0xF0:
            raise JoinError("audio is not ADTS: lost frame sync")
        if (data[i + 2] >> 2) & 0x0F != 3:
            raise JoinError("audio sample rate is not 48 kHz")
        if data[i + 2] >> 6 != 1:
            raise JoinError("audio is not AAC-LC")
        size = ((data[i + 3] & 0x03) << 11) | (data[i + 4] << 3) | (data[i + 5] >> 5)
        if data[i + 6] & 0x03 or size < 7 or i + size > n:
            raise JoinError("ADTS frame with several raw data blocks or a bad length")
        frames.append(bytes(data[i : i + size]))
        i += size
    return frames


# ------------------------------------------------------------------ the joiner


@dataclass
class JoinStats:
    video_frames: int = 0
    audio_frames: int = 0  # AAC frames written
    audio_repeated: int = 0  # slots filled with a repeated frame (a piece's audio ran short)
    dts_raised: int = 0  # DTS moved up to keep decode order at a join
    pieces: int = 0
    spans: list[int] = field(default_factory=list)  # ticks of video per piece


@dataclass
class _Piece:
    fps: Fraction
    start: int  # timeline position (ticks from BASE) of its first frame
    video_pid: int = -1
    audio_pid: int = -1
    pmt_pid: int = -1
    first_pts: int | None = None  # in its own clock, unwrapped
    offset: int = 0  # added to its own clock
    max_end: int = 0  # latest frame end seen, on the timeline (ticks from BASE)
    first_video_packet: bool = True
    audio_pes: bytearray = field(default_factory=bytearray)
    audio_pes_pts: int | None = None
    early_audio: list[tuple[int, bytes]] = field(default_factory=list)
    frames: deque[bytes] = field(default_factory=deque)  # parsed, not yet used
    frames_first: int = 0  # index (within the piece) of frames[0]
    frame0_time: int | None = None  # timeline time of the piece's frame 0
    raised: deque[int] = field(default_factory=deque)  # new DTS of its first frames


class TsJoiner:
    """Feed pieces in order: `begin(fps)`, `feed(bytes)` (whole 188-byte packets,
    any number of calls), `end()`; then `finish()`. Every call returns the output
    bytes it produced, to be written to ffmpeg in order."""

    def __init__(self, *, dts_grid: int = 1) -> None:
        if dts_grid < 1:
            raise ValueError("dts_grid must be >= 1 tick")
        self._grid = dts_grid
        self.stats = JoinStats()
        self._pieces_done = 0
        self._piece: _Piece | None = None
        self._timeline = 0  # ticks from BASE where the next piece starts
        self._last_dts: int | None = None  # output clock
        self._cc_audio = 0
        self._slot = 0  # next audio slot to fill
        self._slot0: int | None = None  # timeline time of slot 0 (the first frame)
        self._pending: list[bytes] = []  # frames of slots chosen, not yet packetised
        self._pending_pts = 0
        self._last_frame: bytes | None = None
        self._started = False

    # -- piece boundaries

    def begin(self, fps: Fraction) -> bytes:
        if self._piece is not None:
            raise RuntimeError("begin() inside a piece")
        if fps <= 0:
            raise ValueError("frame rate must be positive")
        self._piece = _Piece(fps=Fraction(fps), start=self._timeline)
        if self._started:
            return b""
        self._started = True
        return pat_packet() + pmt_packet()

    def end(self) -> bytes:
        """The current piece is complete: its video span fixes where the next starts."""
        p = self._require_piece()
        if p.first_pts is None:
            raise JoinError("a piece has no video")
        self._end_audio_pes(p)
        if p.early_audio:
            raise JoinError("a piece has no video")
        span = p.max_end - p.start
        self.stats.spans.append(span)
        self.stats.pieces += 1
        self._timeline = p.max_end
        out = self._fill_slots(p, limit=self._timeline, final=True)
        self._piece = None
        return out

    def finish(self) -> bytes:
        """All pieces fed: the last audio written, up to the end of the video."""
        if self._piece is not None:
            raise RuntimeError("finish() inside a piece")
        if not self.stats.pieces:
            raise JoinError("nothing to join")
        return self._packetise_pending()

    @property
    def duration(self) -> float:
        """Seconds of video joined so far (pieces ended)."""
        return self._timeline / CLOCK

    # -- bytes

    def feed(self, data: bytes | bytearray) -> bytes:
        """The output for `data` (whole packets of the current piece). A bytearray is
        patched in place (no copy); bytes are copied first."""
        p = self._require_piece()
        n = len(data)
        if n % PACKET:
            raise JoinError("a piece's size is not a whole number of 188-byte TS packets")
        buf = data if isinstance(data, bytearray) else bytearray(data)
        out: list[bytes | bytearray] = []
        run = 0  # start of the current pass-through run of video packets
        vpid = p.video_pid if not p.first_video_packet else -2
        for off in range(0, n, PACKET):
            if buf[off] != SYNC:
                raise JoinError(f"lost TS sync at byte {off} of a piece")
            pid = ((buf[off + 1] & 0x1F) << 8) | buf[off + 2]
            if pid == vpid:
                # the fast path: payload-only continuation packets pass untouched
                if not buf[off + 1] & 0x40 and not buf[off + 3] & 0x20:
                    continue
                self._video_packet(p, buf, off)
                continue
            if pid == p.video_pid:  # the piece's first video packet
                self._video_packet(p, buf, off)
                vpid = pid
                continue
            if off > run:
                out.append(buf[run:off])
            run = off + PACKET
            if pid == p.audio_pid:
                self._audio_packet(p, buf, off)
            elif pid == PAT_PID:
                self._read_pat(p, buf, off)
            elif pid == p.pmt_pid:
                self._read_pmt(p, buf, off)
            elif p.video_pid < 0 and pid not in (SDT_PID, NULL_PID):
                raise JoinError("a piece must start with its PAT and PMT")
            # SDT, null and anything else: dropped
        if run < n:
            out.append(buf[run:n])
        out.append(self._fill_slots(p, limit=p.max_end - CLOCK // 2, final=False))
        return b"".join(out)

    def feed_audio(self, data: bytes | bytearray) -> bytes:
        """The audio of the clip's next media segment, for the current piece's last
        frames: a segment's muxer holds audio back (up to `max_delay`) and writes the
        end of a segment's sound into the next segment's file. Only its audio is
        read (it continues the piece's own, on the piece's clock); video, tables and
        the rest are dropped. The output for it (audio slots now filled)."""
        p = self._require_piece()
        if p.first_pts is None:
            raise RuntimeError("feed_audio() before the piece's video")
        if len(data) % PACKET:
            raise JoinError("a piece's size is not a whole number of 188-byte TS packets")
        buf = data if isinstance(data, bytearray) else bytearray(data)
        for off in range(0, len(buf), PACKET):
            if buf[off] != SYNC:
                raise JoinError(f"lost TS sync at byte {off} of a piece")
            if ((buf[off + 1] & 0x1F) << 8) | buf[off + 2] == p.audio_pid:
                self._audio_packet(p, buf, off)
        return self._fill_slots(p, limit=p.max_end - CLOCK // 2, final=False)

    # -- tables

    def _require_piece(self) -> _Piece:
        if self._piece is None:
            raise RuntimeError("feed()/end() outside a piece: call begin() first")
        return self._piece

    @staticmethod
    def _section(buf: bytearray, off: int) -> bytes:
        if not buf[off + 1] & 0x40:
            raise JoinError("a PSI section spans TS packets")
        at = off + 4
        if buf[off + 3] & 0x20:
            at += 1 + buf[at]
        at += 1 + buf[at]  # pointer_field
        length = ((buf[at + 1] & 0x0F) << 8) | buf[at + 2]
        end = at + 3 + length
        if end > off + PACKET or length < 9:
            raise JoinError("a PSI section spans TS packets")
        section = bytes(buf[at:end])
        if crc32_mpeg2(section[:-4]) != int.from_bytes(section[-4:], "big"):
            raise JoinError("a PSI section fails its CRC")
        return section

    def _read_pat(self, p: _Piece, buf: bytearray, off: int) -> None:
        s = self._section(buf, off)
        programs = [
            (int.from_bytes(s[i : i + 2], "big"), int.from_bytes(s[i + 2 : i + 4], "big") & 0x1FFF)
            for i in range(8, len(s) - 4, 4)
        ]
        pmts = [pid for number, pid in programs if number != 0]
        if len(pmts) != 1:
            raise JoinError("a piece has no single program")
        if p.pmt_pid not in (-1, pmts[0]):
            raise JoinError("a piece changes its PMT PID")
        p.pmt_pid = pmts[0]

    def _read_pmt(self, p: _Piece, buf: bytearray, off: int) -> None:
        s = self._section(buf, off)
        info = ((s[10] & 0x0F) << 8) | s[11]
        i, end = 12 + info, len(s) - 4
        video: list[int] = []
        audio: list[int] = []
        while i + 5 <= end:
            kind, pid = s[i], ((s[i + 1] & 0x1F) << 8) | s[i + 2]
            if kind == STREAM_H264:
                video.append(pid)
            elif kind == STREAM_ADTS:
                audio.append(pid)
            i += 5 + (((s[i + 3] & 0x0F) << 8) | s[i + 4])
        if len(video) != 1 or len(audio) != 1:
            raise JoinError("a piece must hold exactly one H.264 and one ADTS AAC stream")
        if p.video_pid not in (-1, video[0]) or p.audio_pid not in (-1, audio[0]):
            raise JoinError("a piece changes its stream PIDs")
        if video[0] != VIDEO_PID:
            raise JoinError(f"unexpected video PID {video[0]:#x} (ours is {VIDEO_PID:#x})")
        p.video_pid, p.audio_pid = video[0], audio[0]

    # -- video

    def _video_packet(self, p: _Piece, buf: bytearray, off: int) -> None:
        at = off + 4
        if buf[off + 3] & 0x20:  # adaptation field
            af_len = buf[at]
            if p.first_video_packet:
                if af_len == 0 or not buf[at + 1] & 0x40:
                    raise JoinError("a piece does not start with a random access point")
                buf[at + 1] |= 0x80  # discontinuity_indicator: the CC restarts here
            if af_len >= 7 and buf[at + 1] & 0x10:  # PCR
                if p.first_pts is None:
                    pass  # patched below, once the offset is known from the PES
                else:
                    base = _unwrap(read_pcr_base(buf, at + 2), p.first_pts)
                    write_pcr_base(buf, at + 2, base + p.offset)
            pcr_at = at + 2 if af_len >= 7 and buf[at + 1] & 0x10 else -1
            at += 1 + af_len
        else:
            if p.first_video_packet:
                raise JoinError("a piece does not start with a random access point")
            pcr_at = -1
        first = p.first_video_packet
        p.first_video_packet = False
        if not buf[off + 1] & 0x40:
            if first:
                raise JoinError("a piece does not start with a video frame")
            return
        # PES header (§2.4.3.6): 00 00 01 stream_id len(2) flags(2) header_length
        if at + 9 > off + PACKET or buf[at : at + 3] != b"\x00\x00\x01":
            raise JoinError("a video PES header is cut or missing")
        flags = buf[at + 7] >> 6
        if flags not in (2, 3) or at + 9 + (10 if flags == 3 else 5) > off + PACKET:
            raise JoinError("a video PES has no PTS")
        pts = read_timestamp(buf, at + 9)
        dts = read_timestamp(buf, at + 14) if flags == 3 else pts
        if p.first_pts is None:
            p.first_pts = pts
            p.offset = BASE + p.start - pts
            if pcr_at >= 0:
                base = _unwrap(read_pcr_base(buf, pcr_at), pts)
                write_pcr_base(buf, pcr_at, base + p.offset)
            for early_pts, early in p.early_audio:
                self._add_audio(p, early_pts, early)
            p.early_audio.clear()
            if self._last_dts is not None:
                p.raised.extend(self._raise_plan(p, _video_headers(buf, off, _LOOKAHEAD)))
        out_pts = _unwrap(pts, p.first_pts) + p.offset
        if out_pts < BASE + p.start:
            raise JoinError("a frame is shown before its piece's first frame (open GOP?)")
        if flags == 2:  # no DTS field: it decodes when it is shown
            out_dts = out_pts
        elif p.raised:
            out_dts = p.raised.popleft()
            self.stats.dts_raised += 1
        else:
            out_dts = self._snap(_unwrap(dts, p.first_pts) + p.offset)
            if self._last_dts is not None and out_dts <= self._last_dts:
                out_dts = self._last_dts + 1  # beyond the read-ahead: one tick on
                self.stats.dts_raised += 1
        if out_dts > out_pts:
            raise JoinError("a video frame is decoded after it is shown")
        if self._last_dts is not None and out_dts <= self._last_dts:
            raise JoinError("decode order cannot be kept at a join")
        self._last_dts = out_dts
        write_timestamp(buf, at + 9, out_pts)
        if flags == 3:
            write_timestamp(buf, at + 14, out_dts)
        frame = p.fps.denominator * CLOCK // p.fps.numerator
        p.max_end = max(p.max_end, out_pts - BASE + frame)
        self.stats.video_frames += 1

    def _snap(self, dts: int) -> int:
        return dts // self._grid * self._grid

    def _raise_plan(self, p: _Piece, headers: list[tuple[int, int | None]]) -> list[int]:
        """New DTS for the piece's first frames whose own (offset, on the grid) would
        not follow the previous piece's last DTS, from `headers` (its first frames'
        PTS and DTS, as written): packed on the grid below the first frame that keeps
        its own DTS, evenly between where the grid has no room, each at most its PTS.
        Empty when none needs one or the read-ahead cannot tell (then each is raised
        one tick past the previous)."""
        assert self._last_dts is not None and p.first_pts is not None
        last = self._last_dts
        frames = []  # (PTS, DTS, fixed) on the output clock
        for pts, dts in headers:
            out_pts = _unwrap(pts, p.first_pts) + p.offset
            if dts is None:
                frames.append((out_pts, out_pts, True))
            else:
                frames.append((out_pts, self._snap(_unwrap(dts, p.first_pts) + p.offset), False))
        keep = next((i for i, (_, dts, fixed) in enumerate(frames) if fixed or dts > last), None)
        if not keep:  # the first keeps its own, or the read-ahead saw no frame that does
            return []
        ceiling = frames[keep][1]
        caps = [pts for pts, _, _ in frames[:keep]]
        on_grid = _below(ceiling, caps, self._snap)
        if on_grid[0] > last:
            return on_grid
        step = (ceiling - last) / (keep + 1)  # no room on the grid: evenly between
        spread = _below(ceiling, [min(c, last + round(step * (j + 1))) for j, c in enumerate(caps)])
        return spread if spread[0] > last else []

    # -- audio

    def _audio_packet(self, p: _Piece, buf: bytearray, off: int) -> None:
        at = off + 4
        if buf[off + 3] & 0x20:
            at += 1 + buf[at]
        if not buf[off + 3] & 0x10:
            return
        payload = buf[at : off + PACKET]
        if buf[off + 1] & 0x40:
            self._end_audio_pes(p)
            if payload[:3] != b"\x00\x00\x01" or len(payload) < 14 or payload[7] >> 6 not in (2, 3):
                raise JoinError("an audio PES header is cut or has no PTS")
            p.audio_pes_pts = read_timestamp(payload, 9)
            payload = payload[9 + payload[8] :]
        elif p.audio_pes_pts is None:
            return  # the tail of a PES that began before this piece
        p.audio_pes += payload

    def _end_audio_pes(self, p: _Piece) -> None:
        if p.audio_pes_pts is None:
            return
        pts, payload = p.audio_pes_pts, bytes(p.audio_pes)
        p.audio_pes = bytearray()
        p.audio_pes_pts = None
        if p.first_pts is None:  # audio ahead of the first video frame: placed later
            p.early_audio.append((pts, payload))
            return
        self._add_audio(p, pts, payload)

    def _add_audio(self, p: _Piece, pes_pts: int, payload: bytes) -> None:
        assert p.first_pts is not None
        frames = adts_frames(payload)
        t = _unwrap(pes_pts, p.first_pts) + p.offset - BASE
        if p.frame0_time is None:
            p.frame0_time = t
        expected = p.frame0_time + (p.frames_first + len(p.frames)) * SLOT
        if abs(t - expected) > 2:
            raise JoinError("a piece's audio has a gap or an overlap")
        p.frames.extend(frames)

    def _fill_slots(self, p: _Piece, *, limit: int, final: bool) -> bytes:
        """Fill audio slots whose middle lies before `limit` (timeline ticks) from this
        piece's frames. Before the piece's end only slots whose frame is parsed."""
        if p.frame0_time is None:
            if final:
                raise JoinError("a piece has no audio")
            return b""
        if self._slot0 is None:
            self._slot0 = p.frame0_time  # the first piece's first frame (its priming)
        produced = False
        while True:
            t = self._slot0 + self._slot * SLOT
            if t + SLOT // 2 >= limit:
                break
            index = (t - p.frame0_time + SLOT // 2) // SLOT  # nearest frame of this piece
            index = max(index, p.frames_first)
            available = p.frames_first + len(p.frames) - 1
            if index > available:
                if not final:
                    break
                if self._last_frame is None and not p.frames:
                    raise JoinError("a piece has no audio")
                self.stats.audio_repeated += 1
                frame = p.frames[-1] if p.frames else self._last_frame
            else:
                while p.frames_first < index:
                    p.frames.popleft()
                    p.frames_first += 1
                frame = p.frames[0]
            assert frame is not None
            if not self._pending:
                self._pending_pts = BASE + t
            self._pending.append(frame)
            self._last_frame = frame
            self._slot += 1
            self.stats.audio_frames += 1
            produced = True
        if not produced:
            return b""
        return self._packetise_pending(keep_open=True)

    def _packetise_pending(self, keep_open: bool = False) -> bytes:
        out = []
        while len(self._pending) >= _FRAMES_PER_PES or (self._pending and not keep_open):
            batch, self._pending = self._pending[:_FRAMES_PER_PES], self._pending[_FRAMES_PER_PES:]
            out.append(self._audio_pes(self._pending_pts, b"".join(batch)))
            self._pending_pts += len(batch) * SLOT
        return b"".join(out)

    def _audio_pes(self, pts: int, payload: bytes) -> bytes:
        """One audio PES (§2.4.3.6) with a PTS, cut into TS packets on AUDIO_PID."""
        header = (
            bytes([0, 0, 1, _AUDIO_STREAM_ID])
            + (len(payload) + 8).to_bytes(2, "big")
            + bytes([0x80, 0x80, 0x05])
            + _timestamp_bytes(0x2, pts)
        )
        data = header + payload
        out = []
        first = True
        i = 0
        while i < len(data):
            room = PACKET - 4
            chunk = data[i : i + room]
            i += len(chunk)
            head = bytes([SYNC, (0x40 if first else 0) | AUDIO_PID >> 8, AUDIO_PID & 0xFF])
            if len(chunk) < room:  # stuff the last packet with an adaptation field
                stuffing = room - len(chunk)
                if stuffing == 1:
                    af = b"\x00"
                else:
                    af = bytes([stuffing - 1, 0x00]) + b"\xff" * (stuffing - 2)
                out.append(head + bytes([0x30 | self._cc_audio]) + af + chunk)
            else:
                out.append(head + bytes([0x10 | self._cc_audio]) + chunk)
            self._cc_audio = (self._cc_audio + 1) & 0x0F
            first = False
        return b"".join(out)


def _below(ceiling: int, caps: list[int], snap: Callable[[int], int] = lambda t: t) -> list[int]:
    """Strictly increasing values below `ceiling`, the j-th at most `caps[j]`, each
    the highest `snap` allows: worked out from the last one down."""
    out: list[int] = []
    for cap in reversed(caps):
        ceiling = snap(min(ceiling - 1, cap))
        out.append(ceiling)
    return out[::-1]


def _video_headers(buf: bytes | bytearray, off: int, count: int) -> list[tuple[int, int | None]]:
    """(PTS, DTS or None) as written in the first `count` video PES headers whose first
    packet is at or after byte `off` of `buf`."""
    found: list[tuple[int, int | None]] = []
    for start in range(off, len(buf) - PACKET + 1, PACKET):
        pid = ((buf[start + 1] & 0x1F) << 8) | buf[start + 2]
        if pid != VIDEO_PID or not buf[start + 1] & 0x40:
            continue
        at = start + 4
        if buf[start + 3] & 0x20:
            at += 1 + buf[at]
        flags = buf[at + 7] >> 6 if at + 8 <= start + PACKET else 0
        if buf[at : at + 3] != b"\x00\x00\x01" or flags not in (2, 3):
            break
        if at + 9 + (10 if flags == 3 else 5) > start + PACKET:
            break
        dts = read_timestamp(buf, at + 14) if flags == 3 else None
        found.append((read_timestamp(buf, at + 9), dts))
        if len(found) == count:
            break
    return found


def without_video(data: bytes | bytearray) -> bytes:
    """`data` (one of our TS files) without its video packets: the tables and the
    audio, for a re-encoded cut that needs the next segment's sound only."""
    keep = []
    for off in range(0, len(data) - PACKET + 1, PACKET):
        if data[off] != SYNC:
            raise JoinError(f"lost TS sync at byte {off}")
        if ((data[off + 1] & 0x1F) << 8) | data[off + 2] != VIDEO_PID:
            keep.append(data[off : off + PACKET])
    return b"".join(keep)


def first_video_pts(data: bytes | bytearray) -> int:
    """PTS (90 kHz ticks) of the first video frame of one of our TS files: where a cut
    of it is measured from. JoinError when there is none in `data`."""
    for off in range(0, len(data) - PACKET + 1, PACKET):
        if data[off] != SYNC:
            raise JoinError(f"lost TS sync at byte {off}")
        pid = ((data[off + 1] & 0x1F) << 8) | data[off + 2]
        if pid != VIDEO_PID or not data[off + 1] & 0x40:
            continue
        at = off + 4
        if data[off + 3] & 0x20:
            at += 1 + data[at]
        if data[at : at + 3] != b"\x00\x00\x01" or at + 14 > off + PACKET or data[at + 7] >> 6 < 2:
            raise JoinError("a video PES header is cut or has no PTS")
        return read_timestamp(data, at + 9)
    raise JoinError("no video frame found")
