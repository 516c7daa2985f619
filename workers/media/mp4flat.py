"""Rewrites a fragmented MP4 (what the export's ffmpeg writes: `empty_moov`, one `moof` +
`mdat` per GOP) into a progressive one, `ftyp` + `moov` + one `mdat`, `moov` first, so a
browser plays it before the download ends.

ffmpeg's own `+faststart` keeps every sample's index entry in memory until the end of
the file (~80 bytes a frame: 38 MB more for a 200-clip scene); its fragmented muxer
forgets each fragment once written. This rewrite reads the fragments once, in file
order, and keeps only the sample tables, in compact arrays (about 11 bytes a sample,
run-length where the boxes are), then writes the `moov` and copies the sample bytes
in file order, range by range, in the kernel (`copy_file_range`): memory holds the
tables and the finished `moov` (4 MB for 200 clips), never the media.

Box layouts follow ISO/IEC 14496-12 (ISOBMFF, 2015): track fragments §8.8 (`trex`
§8.8.3, `tfhd` §8.8.7, `trun` §8.8.8, `tfdt` §8.8.12) in; sample tables §8.6-8.7
(`stts` §8.6.1.2, `ctts` §8.6.1.3, `stss` §8.6.2, `stsz` §8.7.3, `stsc` §8.7.4,
`stco`/`co64` §8.7.5) and the edit list (`elst` §8.6.6) out. Each chunk of the output
is one track run of the input. The edit lists come from the fragmented `moov` (ffmpeg's
`delay_moov` writes them with their media times); their open durations, and those of
`mvhd`, `tkhd` and `mdhd`, are filled in from the samples. The AAC track gets the `roll`
sample group (§10.1, roll distance -1) that ffmpeg's progressive muxer writes.

`flatten` is the thin file layer; `Fragments` and `progressive_header` are pure.
`describe` reads back what a written MP4 declares (top-level boxes, tracks, codecs,
durations) from its `moov` alone. The export job runs both in a child process
(`python -m workers.media.mp4flat FRAGMENTED OUT`, printing one JSON line), so the tables
never weigh on the worker: ffprobe, which would index every sample too, is not needed.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

_MAX32 = 0xFFFFFFFF
_NON_SYNC = 0x00010000  # sample_is_non_sync_sample in sample flags (§8.8.3.1)
_COPY_STEP = 64 << 20  # bytes per copy_file_range / sendfile call

# tfhd flags (§8.8.7.1)
_BASE_DATA_OFFSET = 0x000001
_SAMPLE_DESCRIPTION = 0x000002
_DEFAULT_DURATION = 0x000008
_DEFAULT_SIZE = 0x000010
_DEFAULT_FLAGS = 0x000020
_BASE_IS_MOOF = 0x020000
# trun flags (§8.8.8.1)
_DATA_OFFSET = 0x000001
_FIRST_FLAGS = 0x000004
_DURATION = 0x000100
_SIZE = 0x000200
_FLAGS = 0x000400
_CTO = 0x000800


class Mp4FlatError(ValueError):
    """The input is not a fragmented MP4 this rewrite understands (what is wrong)."""


# ------------------------------------------------------------------------ boxes


def iter_boxes(
    data: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in data[start:end] (§4.2)."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise Mp4FlatError(f"truncated box header at byte {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if end - pos < 16:
                raise Mp4FlatError(f"truncated box header at byte {pos}")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise Mp4FlatError(f"box {kind!r} at byte {pos} overruns its parent")
        yield kind, pos + head, pos + size
        pos += size


def children(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of each box in `data`."""
    return [(kind, data[at:end]) for kind, at, end in iter_boxes(data)]


def child(data: bytes, kind: bytes) -> bytes:
    for k, payload in children(data):
        if k == kind:
            return payload
    raise Mp4FlatError(f"no {kind.decode()} box")


def box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    if len(body) + 8 > _MAX32:
        return struct.pack(">I4sQ", 1, kind, len(body) + 16) + body
    return struct.pack(">I4s", len(body) + 8, kind) + body


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", version << 24 | flags), *parts)


def _table(values: array) -> bytes:  # type: ignore[type-arg]
    """An array's items as big-endian bytes."""
    out = array(values.typecode, values)
    if out.itemsize > 1 and sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


def _interleave(*columns: array) -> bytes:  # type: ignore[type-arg]
    """Rows of equally long columns of 32-bit integers, big-endian."""
    rows = array("I", bytes(4 * len(columns) * len(columns[0])))
    for i, col in enumerate(columns):
        rows[i :: len(columns)] = array("I", col.tobytes()) if col.typecode != "I" else col
    return _table(rows)


# ------------------------------------------------------------- the fragments in


@dataclass
class Track:
    """One track's samples as the fragments list them, in compact arrays."""

    track_id: int
    timescale: int
    defaults: tuple[int, int, int, int]  # trex: description index, duration, size, flags
    handler: bytes = b""
    entry: bytes = b""  # the sample entry's type (avc1, mp4a, ...)
    sizes: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    stts_counts: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    stts_deltas: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    ctts_counts: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    ctts_offsets: array = field(default_factory=lambda: array("i"))  # type: ignore[type-arg]
    sync: array = field(default_factory=lambda: array("I"))  # type: ignore[type-arg]
    chunk_sources: array = field(default_factory=lambda: array("Q"))  # type: ignore[type-arg]
    stsc: list[tuple[int, int, int]] = field(default_factory=list)
    decode_time: int = 0  # of the next sample
    ends: int = 0  # latest composition end of the samples before the last
    last: tuple[int, int] = (0, 0)  # decode time and composition offset of the last
    min_cts: int | None = None

    @property
    def count(self) -> int:
        return len(self.sizes)

    def _duration(self, delta: int) -> None:
        if self.stts_deltas and self.stts_deltas[-1] == delta:
            self.stts_counts[-1] += 1
        else:
            self.stts_counts.append(1)
            self.stts_deltas.append(delta)

    def _retime_last(self, delta: int) -> None:
        """The last sample lasts `delta`, not what its run said: the next fragment's
        `tfdt` places the next sample there."""
        if delta <= 0:
            raise Mp4FlatError(
                f"track {self.track_id}: a fragment starts before the previous one ends"
            )
        self.stts_counts[-1] -= 1
        if self.stts_counts[-1] == 0:
            self.stts_counts.pop()
            self.stts_deltas.pop()
        self._duration(delta)

    def add_run(
        self, start: int, samples: list[tuple[int, int, int, int]], description: int
    ) -> int:
        """Samples (duration, size, flags, composition offset) of one run starting at
        decode time `start`, one chunk; returns the run's byte length."""
        if self.count and start != self.decode_time:
            dts, _ = self.last
            self._retime_last(start - dts)
            self.decode_time = start
        elif not self.count and start != 0:
            raise Mp4FlatError(
                f"track {self.track_id} starts at decode time {start}, not 0: a progressive "
                "file's first sample is at 0"
            )
        chunk = len(self.chunk_sources) + 1
        if not self.stsc or self.stsc[-1][1:] != (len(samples), description):
            self.stsc.append((chunk, len(samples), description))
        length = 0
        for duration, size, flags, cto in samples:
            if self.count:
                dts, offset = self.last
                self.ends = max(self.ends, dts + offset + self.stts_deltas[-1])
            self.sizes.append(size)
            length += size
            self._duration(duration)
            if self.ctts_offsets and self.ctts_offsets[-1] == cto:
                self.ctts_counts[-1] += 1
            else:
                self.ctts_counts.append(1)
                self.ctts_offsets.append(cto)
            if not flags & _NON_SYNC:
                self.sync.append(self.count)
            cts = self.decode_time + cto
            self.min_cts = cts if self.min_cts is None else min(self.min_cts, cts)
            self.last = (self.decode_time, cto)
            self.decode_time += duration
        return length

    @property
    def media_duration(self) -> int:
        return sum(c * d for c, d in zip(self.stts_counts, self.stts_deltas, strict=True))

    @property
    def presentation_end(self) -> int:
        """Latest composition time + duration over all samples (media timescale)."""
        if not self.count:
            return 0
        dts, offset = self.last
        return max(self.ends, dts + offset + self.stts_deltas[-1])


def _full(payload: bytes) -> tuple[int, int, bytes]:
    (word,) = struct.unpack_from(">I", payload)
    return word >> 24, word & 0xFFFFFF, payload[4:]


def _timescale(mdhd: bytes) -> int:
    version, _, body = _full(mdhd)
    return struct.unpack_from(">I", body, 16 if version == 1 else 8)[0]


class Fragments:
    """The fragmented file's `moov`, then its `moof`s in file order: the sample tables
    of every track and the byte ranges (chunks) their samples occupy."""

    def __init__(self, moov: bytes) -> None:
        self.moov = moov
        self.tracks: dict[int, Track] = {}
        self.ranges: list[tuple[int, int]] = []  # (source offset, length) of each chunk
        boxes = children(moov)
        trex = {}
        for kind, payload in boxes:
            if kind == b"mvex":
                for k, p in children(payload):
                    if k == b"trex":
                        _, _, body = _full(p)
                        tid, *defaults = struct.unpack_from(">5I", body)
                        trex[tid] = tuple(defaults)
        for kind, payload in boxes:
            if kind != b"trak":
                continue
            tkhd = child(payload, b"tkhd")
            version, _, body = _full(tkhd)
            (tid,) = struct.unpack_from(">I", body, 16 if version == 1 else 8)
            mdia = child(payload, b"mdia")
            hdlr = child(mdia, b"hdlr")
            stsd = child(child(child(mdia, b"minf"), b"stbl"), b"stsd")
            entries = list(iter_boxes(stsd, 8))
            if tid not in trex:
                raise Mp4FlatError(f"track {tid} has no trex: not a fragmented MP4")
            self.tracks[tid] = Track(
                tid,
                _timescale(child(mdia, b"mdhd")),
                trex[tid],  # type: ignore[arg-type]
                handler=hdlr[8:12],
                entry=stsd[entries[0][1] - 4 : entries[0][1]] if entries else b"",
            )
        if not self.tracks:
            raise Mp4FlatError("the moov has no track")

    def add_moof(self, moof: bytes, offset: int) -> None:
        """One `moof` (its payload), its box starting at byte `offset` of the file."""
        next_base = offset  # §8.8.7.1: without a base, a traf's data follows the last
        for kind, at, end in iter_boxes(moof):
            if kind == b"traf":
                next_base = self._traf(moof[at:end], offset, next_base)

    def _traf(self, traf: bytes, moof_offset: int, implicit_base: int) -> int:
        tfhd = tfdt = None
        runs = []
        for kind, payload in children(traf):
            if kind == b"tfhd":
                tfhd = payload
            elif kind == b"tfdt":
                tfdt = payload
            elif kind == b"trun":
                runs.append(payload)
        if tfhd is None:
            raise Mp4FlatError("a traf without tfhd")
        _, flags, body = _full(tfhd)
        (tid,) = struct.unpack_from(">I", body)
        track = self.tracks.get(tid)
        if track is None:
            raise Mp4FlatError(f"a fragment of track {tid}, which the moov does not declare")
        description, duration, size, sample_flags = track.defaults
        pos = 4
        base = implicit_base
        if flags & _BASE_DATA_OFFSET:
            (base,) = struct.unpack_from(">Q", body, pos)
            pos += 8
        elif flags & _BASE_IS_MOOF:
            base = moof_offset
        for bit in (_SAMPLE_DESCRIPTION, _DEFAULT_DURATION, _DEFAULT_SIZE, _DEFAULT_FLAGS):
            if flags & bit:
                (value,) = struct.unpack_from(">I", body, pos)
                pos += 4
                if bit == _SAMPLE_DESCRIPTION:
                    description = value
                elif bit == _DEFAULT_DURATION:
                    duration = value
                elif bit == _DEFAULT_SIZE:
                    size = value
                else:
                    sample_flags = value
        start = track.decode_time
        if tfdt is not None:
            version, _, t = _full(tfdt)
            (start,) = struct.unpack_from(">Q" if version == 1 else ">I", t)
        data = base
        for trun in runs:
            version, tflags, t = _full(trun)
            (count,) = struct.unpack_from(">I", t)
            if not count:
                continue  # a chunk holds at least one sample (§8.7.4)
            pos = 4
            if tflags & _DATA_OFFSET:
                (rel,) = struct.unpack_from(">i", t, pos)
                data = base + rel
                pos += 4
            first = None
            if tflags & _FIRST_FLAGS:
                (first,) = struct.unpack_from(">I", t, pos)
                pos += 4
            names = [b for b in (_DURATION, _SIZE, _FLAGS, _CTO) if tflags & b]
            width = 4 * len(names)
            if pos + width * count > len(t):
                raise Mp4FlatError(f"a trun of track {tid} is shorter than its sample count")
            # the fields present, column by column; the absent from the tfhd/trex defaults
            table = array("I", t[pos : pos + width * count])
            if sys.byteorder == "little":
                table.byteswap()
            cols = len(names)
            fields = [
                names.index(b) if b in names else -1 for b in (_DURATION, _SIZE, _FLAGS, _CTO)
            ]
            fallback = (duration, size, sample_flags, 0)
            columns = [
                table[i::cols] if i >= 0 else array("I", [fallback[n]]) * count
                for n, i in enumerate(fields)
            ]
            if fields[3] >= 0 and version:
                columns[3] = array("i", columns[3].tobytes())
            if first is not None:
                columns[2][0] = first
            samples = list(zip(*columns, strict=True))
            length = track.add_run(start, samples, description)
            start = track.decode_time
            track.chunk_sources.append(data)
            self.ranges.append((data, length))
            data += length
        return data


# ---------------------------------------------------------- the progressive out


def set_duration(payload: bytes, at_v0: int, at_v1: int, value: int) -> bytes:
    """A full box's payload (mvhd, tkhd, mdhd) with its duration field set; version 0
    becomes version 1 when the value needs 64 bits."""
    version, flags, body = _full(payload)
    if version == 0 and value > _MAX32:
        # v0: creation, modification (32 bit) ... duration (32); v1: the same in 64 bits
        times = struct.unpack_from(">II", body)
        middle = body[8:at_v0]
        body = struct.pack(">QQ", *times) + middle + struct.pack(">Q", value) + body[at_v0 + 4 :]
        return struct.pack(">I", 1 << 24 | flags) + body
    if version == 1:
        return payload[:4] + body[:at_v1] + struct.pack(">Q", value) + body[at_v1 + 8 :]
    return payload[:4] + body[:at_v0] + struct.pack(">I", value) + body[at_v0 + 4 :]


def _ceil_scale(value: int, to: int, frm: int) -> int:
    return -(-value * to // frm)


def _edits(elst: bytes, track: Track, movie_scale: int) -> tuple[bytes, int]:
    """The edit list with an open last edit (duration 0) closed at the track's
    presentation end; and the edits' total duration (movie timescale)."""
    version, flags, body = _full(elst)
    (count,) = struct.unpack_from(">I", body)
    fmt = ">QqHH" if version == 1 else ">IiHH"
    entries = list(struct.iter_unpack(fmt, body[4 : 4 + struct.calcsize(fmt) * count]))
    if len(entries) != count:
        raise Mp4FlatError(f"track {track.track_id}: truncated edit list")
    for i, (duration, media_time, rate, frac) in enumerate(entries):
        if duration == 0 and media_time >= 0 and i == count - 1:
            span = max(track.presentation_end - media_time, 0)
            entries[i] = (_ceil_scale(span, movie_scale, track.timescale), media_time, rate, frac)
    big = any(d > _MAX32 or not -(1 << 31) <= m < 1 << 31 for d, m, _, _ in entries)
    out_fmt = ">QqHH" if big or version == 1 else ">IiHH"
    rows = b"".join(struct.pack(out_fmt, *e) for e in entries)
    total = sum(d for d, _, _, _ in entries)
    return full_box(
        b"elst", 1 if out_fmt[1] == "Q" else 0, flags, struct.pack(">I", count), rows
    ), total


Pieces = list[bytes]  # a box as the byte strings it is made of, written one after another


def _boxed(kind: bytes, pieces: Pieces) -> Pieces:
    """A box around `pieces`, without copying them: a long table stays one string."""
    return [struct.pack(">I4s", 8 + sum(map(len, pieces)), kind), *pieces]


def _full_boxed(kind: bytes, version: int, flags: int, pieces: Pieces) -> Pieces:
    return _boxed(kind, [struct.pack(">I", version << 24 | flags), *pieces])


def _stbl(stbl: bytes, track: Track, chunk_offsets: array, wide: bool) -> Pieces:  # type: ignore[type-arg]
    n = track.count
    runs = struct.pack(">I", len(track.stts_counts))
    pieces = [box(b"stsd", child(stbl, b"stsd"))]
    pieces += _full_boxed(b"stts", 0, 0, [runs, _interleave(track.stts_counts, track.stts_deltas)])
    if len(track.sync) < n:
        pieces += _full_boxed(
            b"stss", 0, 0, [struct.pack(">I", len(track.sync)), _table(track.sync)]
        )
    if any(track.ctts_offsets):
        version = 1 if min(track.ctts_offsets) < 0 else 0
        table = _interleave(track.ctts_counts, track.ctts_offsets)
        pieces += _full_boxed(
            b"ctts", version, 0, [struct.pack(">I", len(track.ctts_counts)), table]
        )
    stsc = array("I", [v for row in track.stsc for v in row])
    pieces += _full_boxed(b"stsc", 0, 0, [struct.pack(">I", len(track.stsc)), _table(stsc)])
    if n and min(track.sizes) == max(track.sizes):
        pieces.append(full_box(b"stsz", 0, 0, struct.pack(">II", track.sizes[0], n)))
    else:
        pieces += _full_boxed(b"stsz", 0, 0, [struct.pack(">II", 0, n), _table(track.sizes)])
    count = struct.pack(">I", len(chunk_offsets))
    if wide:
        pieces += _full_boxed(b"co64", 0, 0, [count, _table(chunk_offsets)])
    else:
        pieces += _full_boxed(b"stco", 0, 0, [count, _table(array("I", chunk_offsets))])
    if track.entry == b"mp4a" and n:
        # AAC decodes a sample with the one before it: roll distance -1 (§10.1.1.2),
        # as ffmpeg's progressive muxer writes it
        pieces.append(full_box(b"sgpd", 1, 0, b"roll", struct.pack(">IIh", 2, 1, -1)))
        pieces.append(full_box(b"sbgp", 0, 0, b"roll", struct.pack(">III", 1, n, 1)))
    return _boxed(b"stbl", pieces)


def _ftyp(tracks: list[Track]) -> bytes:
    brands = [b"isom", b"iso2"] + ([b"avc1"] if any(t.entry == b"avc1" for t in tracks) else [])
    return box(b"ftyp", b"isom", struct.pack(">I", 0x200), *brands, b"mp41")


@dataclass(frozen=True)
class Layout:
    """The output's header and where its sample bytes come from."""

    header: Pieces  # ftyp + moov + the mdat box header
    ranges: list[tuple[int, int]]  # (source offset, length), file order, merged
    mdat_payload: int  # bytes after the header

    @property
    def header_size(self) -> int:
        return sum(map(len, self.header))


def progressive_header(fragments: Fragments) -> Layout:
    """ftyp + moov + mdat header of the progressive file, the sample bytes to follow
    being the fragments' chunks in file order."""
    payload = 0
    placed: dict[int, int] = {}
    merged: list[tuple[int, int]] = []
    previous_end = -1
    for source, length in sorted(fragments.ranges):
        if source < previous_end:
            raise Mp4FlatError(f"two track runs share the bytes at {source}")
        placed[source] = payload
        payload += length
        if merged and merged[-1][0] + merged[-1][1] == source:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((source, length))
        previous_end = source + length
    ftyp = _ftyp(list(fragments.tracks.values()))
    mdat_head = 16 if payload + 8 > _MAX32 else 8
    # the moov's size depends only on stco vs co64; its offsets on its size
    size = sum(map(len, _moov(fragments, placed, 0, wide=False)))
    wide = len(ftyp) + size + mdat_head + payload > _MAX32
    if wide:
        size = sum(map(len, _moov(fragments, placed, 0, wide)))
    moov = _moov(fragments, placed, len(ftyp) + size + mdat_head, wide)
    if mdat_head == 16:
        head = struct.pack(">I4sQ", 1, b"mdat", payload + 16)
    else:
        head = struct.pack(">I4s", payload + 8, b"mdat")
    return Layout([ftyp, *moov, head], merged, payload)


def _moov(fragments: Fragments, placed: dict[int, int], base: int, wide: bool) -> Pieces:
    boxes = children(fragments.moov)
    mvhd = next((p for k, p in boxes if k == b"mvhd"), None)
    if mvhd is None:
        raise Mp4FlatError("the moov has no mvhd")
    version, _, body = _full(mvhd)
    (movie_scale,) = struct.unpack_from(">I", body, 16 if version == 1 else 8)
    if not movie_scale:
        raise Mp4FlatError("the mvhd's timescale is 0")
    traks: list[Pieces] = []
    longest = 0
    for kind, payload in boxes:
        if kind == b"trak":
            trak, duration = _trak(payload, fragments, placed, base, wide, movie_scale)
            traks.append(trak)
            longest = max(longest, duration)
    pieces: Pieces = []
    for kind, payload in boxes:
        if kind == b"mvhd":
            pieces.append(box(b"mvhd", set_duration(payload, 12, 20, longest)))
        elif kind == b"trak":
            pieces += traks.pop(0)
        elif kind != b"mvex":  # the samples are in the moov now
            pieces.append(box(kind, payload))
    return _boxed(b"moov", pieces)


def _trak(
    trak: bytes,
    fragments: Fragments,
    placed: dict[int, int],
    base: int,
    wide: bool,
    movie_scale: int,
) -> tuple[Pieces, int]:
    """A track's box and its duration (movie timescale)."""
    tkhd = child(trak, b"tkhd")
    version, _, body = _full(tkhd)
    track = fragments.tracks[struct.unpack_from(">I", body, 16 if version == 1 else 8)[0]]
    offsets = array("Q", (base + placed[s] for s in track.chunk_sources))
    span = track.presentation_end - (track.min_cts or 0)
    duration = _ceil_scale(span, movie_scale, track.timescale)
    pieces: Pieces = []
    for kind, payload in children(trak):
        if kind == b"edts":
            edits = []
            for k, p in children(payload):
                if k == b"elst":
                    elst, duration = _edits(p, track, movie_scale)
                    edits.append(elst)
                else:
                    edits.append(box(k, p))
            pieces.append(box(b"edts", *edits))
        elif kind == b"mdia":
            pieces += _mdia(payload, track, offsets, wide)
        elif kind != b"tkhd":
            pieces.append(box(kind, payload))
    return _boxed(b"trak", [box(b"tkhd", set_duration(tkhd, 16, 24, duration)), *pieces]), duration


def _mdia(mdia: bytes, track: Track, offsets: array, wide: bool) -> Pieces:  # type: ignore[type-arg]
    pieces: Pieces = []
    for kind, payload in children(mdia):
        if kind == b"mdhd":
            pieces.append(box(b"mdhd", set_duration(payload, 12, 20, track.media_duration)))
        elif kind == b"minf":
            inner: Pieces = []
            for k, p in children(payload):
                if k == b"stbl":
                    inner += _stbl(p, track, offsets, wide)
                else:
                    inner.append(box(k, p))
            pieces += _boxed(b"minf", inner)
        else:
            pieces.append(box(kind, payload))
    return _boxed(b"mdia", pieces)


# ------------------------------------------------------------------- the files


@dataclass(frozen=True)
class Flattened:
    fragments: int
    samples: dict[int, int]  # track id -> samples
    header_bytes: int
    mdat_bytes: int

    def __str__(self) -> str:
        counts = ", ".join(f"track {t}: {n}" for t, n in self.samples.items())
        return (
            f"{self.fragments} fragments ({counts} samples) -> moov of "
            f"{self.header_bytes} bytes + mdat of {self.mdat_bytes} bytes"
        )


def _top_level(f: BinaryIO, size: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, payload start, box end) of the file's top-level boxes."""
    pos = 0
    while pos < size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise Mp4FlatError(f"truncated box header at byte {pos}")
        length, kind = struct.unpack_from(">I4s", head)
        at = pos + 8
        if length == 1:
            if len(head) < 16:
                raise Mp4FlatError(f"truncated box header at byte {pos}")
            (length,) = struct.unpack_from(">Q", head, 8)
            at = pos + 16
        elif length == 0:
            length = size - pos
        if length < at - pos or pos + length > size:
            raise Mp4FlatError(f"box {kind!r} at byte {pos} runs past the end of the file")
        yield kind, pos, at, pos + length
        pos += length


def _copy(src: int, dst: int, offset: int, length: int, out_at: int) -> None:
    """length bytes of src at offset to dst at out_at, in the kernel where it can."""
    done = 0
    while done < length:
        step = min(_COPY_STEP, length - done)
        try:
            n = os.copy_file_range(src, dst, step, offset + done, out_at + done)
        except OSError:
            os.lseek(dst, out_at + done, os.SEEK_SET)
            n = os.sendfile(dst, src, offset + done, step)
        if n <= 0:
            raise Mp4FlatError(f"the input ends inside the sample bytes at {offset + done}")
        done += n


def flatten(source: Path, target: Path) -> Flattened:
    """Write the progressive form of the fragmented MP4 `source` to `target`."""
    with open(source, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        fragments: Fragments | None = None
        moofs = 0
        for kind, start, at, end in _top_level(f, size):
            if kind == b"moov":
                f.seek(at)
                fragments = Fragments(f.read(end - at))
            elif kind == b"moof":
                if fragments is None:
                    raise Mp4FlatError("a moof before the moov")
                f.seek(at)
                fragments.add_moof(f.read(end - at), start)
                moofs += 1
        if fragments is None:
            raise Mp4FlatError("no moov box: not an MP4")
        for source_at, length in fragments.ranges:
            if source_at + length > size:
                raise Mp4FlatError(f"samples at {source_at} run past the end of the file")
        layout = progressive_header(fragments)
        with open(target, "wb") as out:
            out.writelines(layout.header)
            out.flush()
            at = layout.header_size
            for source_at, length in layout.ranges:
                _copy(f.fileno(), out.fileno(), source_at, length, at)
                at += length
    return Flattened(
        moofs,
        {t.track_id: t.count for t in fragments.tracks.values()},
        layout.header_size,
        layout.mdat_payload,
    )


# ------------------------------------------------------------ what it declares


@dataclass(frozen=True)
class TrackFacts:
    handler: str  # "vide", "soun", ...
    codec: str  # "h264", "aac", or the sample entry's type
    duration: float  # seconds of presentation (tkhd; the edit list's when there is one)
    samples: int


@dataclass(frozen=True)
class Facts:
    """What an MP4 declares: its top-level boxes in file order, its duration (mvhd)
    and its tracks."""

    boxes: list[str]
    duration: float
    tracks: list[TrackFacts]

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Facts:
        tracks = data["tracks"]
        assert isinstance(tracks, list)
        return cls(
            boxes=list(data["boxes"]),  # type: ignore[call-overload]
            duration=float(data["duration"]),  # type: ignore[arg-type]
            tracks=[TrackFacts(**t) for t in tracks],
        )


def _descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload start, payload end) of an MPEG-4 descriptor (ISO/IEC 14496-1
    §8.3.3: the size in 7-bit groups, the top bit saying another follows)."""
    tag, pos, size = data[pos], pos + 1, 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        size = size << 7 | byte & 0x7F
        if not byte & 0x80:
            break
    return tag, pos, pos + size


def _audio_object_type(mp4a: bytes) -> int | None:
    """objectTypeIndication of an `mp4a` sample entry's `esds` (0x40: MPEG-4 audio,
    AAC; ISO/IEC 14496-1 §7.2.6.5-6), or None."""
    try:
        esds = child(mp4a[28:], b"esds")  # after the AudioSampleEntry fields (§12.2.3)
        tag, at, _ = _descriptor(esds, 4)
        if tag != 0x03:  # ES_Descriptor
            return None
        flags = esds[at + 2]
        at += 3 + (2 if flags & 0x80 else 0) + (2 if flags & 0x20 else 0)
        if flags & 0x40:
            at += 1 + esds[at]
        tag, at, _ = _descriptor(esds, at)
        return esds[at] if tag == 0x04 else None  # DecoderConfigDescriptor
    except (IndexError, Mp4FlatError):
        return None


def _codec(stsd: bytes) -> str:
    entries = list(iter_boxes(stsd, 8))
    if not entries:
        return ""
    kind, at, end = entries[0]
    if kind in (b"avc1", b"avc3"):
        return "h264"
    if kind == b"mp4a" and _audio_object_type(stsd[at:end]) == 0x40:
        return "aac"
    return kind.decode("latin-1")


def describe(path: Path) -> Facts:
    """What the MP4 at `path` declares, read from its top-level boxes and `moov`."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        boxes, moov = [], None
        for kind, _, at, end in _top_level(f, size):
            boxes.append(kind.decode("latin-1"))
            if kind == b"moov":
                f.seek(at)
                moov = f.read(end - at)
    if moov is None:
        raise Mp4FlatError("no moov box: not an MP4")
    version, _, body = _full(child(moov, b"mvhd"))
    scale, duration = struct.unpack_from(
        ">IQ" if version == 1 else ">II", body, 16 if version else 8
    )
    if not scale:
        raise Mp4FlatError("the mvhd's timescale is 0")
    tracks = []
    for kind, trak in children(moov):
        if kind != b"trak":
            continue
        version, _, body = _full(child(trak, b"tkhd"))
        (length,) = struct.unpack_from(">Q" if version == 1 else ">I", body, 24 if version else 16)
        mdia = child(trak, b"mdia")
        stbl = child(child(mdia, b"minf"), b"stbl")
        (samples,) = struct.unpack_from(">I", child(stbl, b"stsz"), 8)
        tracks.append(
            TrackFacts(
                handler=child(mdia, b"hdlr")[8:12].decode("latin-1"),
                codec=_codec(child(stbl, b"stsd")),
                duration=length / scale,
                samples=samples,
            )
        )
    return Facts(boxes, duration / scale, tracks)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workers.media.mp4flat FRAGMENTED OUT`: flatten, then describe OUT as one
    JSON line {"flattened", "facts"}; a refusal on stderr, exit status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m workers.media.mp4flat FRAGMENTED.mp4 OUT.mp4", file=sys.stderr)
        return 2
    try:
        flat = flatten(Path(args[0]), Path(args[1]))
        facts = describe(Path(args[1]))
    except (Mp4FlatError, OSError) as exc:
        print(f"mp4flat: {exc}", file=sys.stderr)
        return 1
    except (struct.error, IndexError, KeyError) as exc:  # a box shorter than its fields
        print(f"mp4flat: malformed MP4 ({exc!r})", file=sys.stderr)
        return 1
    print(json.dumps({"flattened": str(flat), "facts": asdict(facts)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
