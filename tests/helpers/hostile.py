"""The hostile upload corpus: bodies made on the spot (ffmpeg's lavfi sources, a few
bytes, small patches of real files), each tiny, keyed by name. `body(name, work, ctx)`
writes one into `work` and returns its bytes; `ctx` names the loopback address and
the local file a crafted playlist points at (neither may ever be opened)."""

from __future__ import annotations

import random
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.clips import FFMPEG


@dataclass(frozen=True)
class Bait:
    """What a crafted upload points at: a local file and a loopback URL."""

    secret: Path
    url: str


def ffmpeg(out: Path, *args: str) -> bytes:
    """Run ffmpeg with `args` (inputs, options) writing `out`; its bytes."""
    subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out.read_bytes()


def _picture(size: str = "64x64", rate: str = "10", duration: str = "1") -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={duration}"]


_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_TONE = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1"]


def _clip(work: Path, name: str = "clip.mp4", *extra: str) -> bytes:
    return ffmpeg(work / name, *_picture(), *_TONE, *_X264, "-c:a", "aac", "-shortest", *extra)


def _patch_box(data: bytes, box: bytes, offset: int, value: bytes) -> bytes:
    """`value` written `offset` bytes after the type of the first `box` (an MP4 atom)."""
    at = data.index(box) + 4 + offset
    return data[:at] + value + data[at + len(value) :]


def _mvhd_duration(data: bytes, seconds: int) -> bytes:
    # mvhd version 0: version/flags, creation, modification, timescale, duration (u32 each)
    (timescale,) = struct.unpack(">I", data[data.index(b"mvhd") + 16 : data.index(b"mvhd") + 20])
    return _patch_box(data, b"mvhd", 16, struct.pack(">I", timescale * seconds))


def _rotated(work: Path, degrees: int) -> bytes:
    # the display-rotation tag a phone writes, over an unchanged coded picture
    src = work / "src.mp4"
    src.write_bytes(_clip(work))
    return ffmpeg(
        work / "rotated.mp4",
        *["-i", str(src), "-map", "0", "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}"],
    )


def _zero_frame_durations(data: bytes) -> bytes:
    # every video frame lasts 0 ticks (the video track's stts): all at time 0, no rate
    at = data.index(b"stts") + 12  # version/flags, entry count, then (count, delta)
    return data[: at + 4] + struct.pack(">I", 0) + data[at + 8 :]


def _declared(work: Path, width: int, height: int) -> bytes:
    """64x64 Motion-JPEG frames in MOV whose headers (each frame's SOF0 and the sample
    description) declare `width`x`height`: the size is a lie told before any decoding."""
    data = bytearray(ffmpeg(work / "mjpeg.mov", *_picture(), "-c:v", "mjpeg", "-q:v", "5"))
    at = 0
    while (at := data.find(b"\xff\xc0", at)) >= 0:  # SOF0: length, precision, height, width
        if data[at + 4] == 8:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
        at += 2
    entry = data.index(b"jpeg") + 4 + 6 + 2 + 2 + 2 + 4 + 4 + 4  # visual sample entry
    data[entry : entry + 4] = struct.pack(">HH", width, height)
    return bytes(data)


def _many_streams(work: Path) -> bytes:
    inputs: list[str] = []
    maps: list[str] = []
    for i in range(8):
        inputs += _picture(rate="5")
        inputs += ["-f", "lavfi", "-i", f"sine=frequency={300 + 50 * i}:duration=1"]
        maps += ["-map", f"{2 * i}:v", "-map", f"{2 * i + 1}:a"]
    return ffmpeg(work / "many.mkv", *inputs, *maps, *_X264, "-c:a", "aac")


def _vfr(work: Path) -> bytes:
    # frame k shown at k^2 / 400 s: gaps from 2.5 ms to 0.1 s, no rate of its own
    return ffmpeg(
        work / "vfr.mkv",
        *_picture(rate="25", duration="0.84"),
        "-vf",
        "setpts=N*N/400/TB",
        "-fps_mode",
        "passthrough",
        *_X264,
    )


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


_Maker = Callable[[Path, Bait], bytes]

MAKERS: dict[str, _Maker] = {
    "zero-bytes": lambda w, b: b"",
    "random-bytes": lambda w, b: _random(8192, 14),
    "text": lambda w, b: b"Once upon a time there was a signal.\n" * 50,
    "mp4-head-only": lambda w, b: _clip(w)[:64],
    "truncated-moov": lambda w, b: (lambda d: d[: len(d) - 600])(_clip(w)),
    "moov-without-mdat": lambda w, b: (lambda d: d[: d.index(b"mdat") + 64])(
        _clip(w, "fast.mp4", "-movflags", "+faststart")
    ),
    "png": lambda w, b: ffmpeg(w / "p.png", *_picture(), "-frames:v", "1"),
    "jpeg": lambda w, b: ffmpeg(w / "p.jpg", *_picture(), "-frames:v", "1"),
    "gif": lambda w, b: ffmpeg(w / "p.gif", *_picture(rate="5")),
    "apng": lambda w, b: ffmpeg(w / "p.apng", *_picture(rate="5"), "-f", "apng"),
    "png-in-mov": lambda w, b: ffmpeg(w / "png.mov", *_picture(), "-frames:v", "1", "-c:v", "png"),
    "hls-local-file": lambda w, b: (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:2.0,\n{b.secret}\n#EXT-X-ENDLIST\n"
    ).encode(),
    "hls-loopback": lambda w, b: (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:2.0,\n{b.url}/seg.ts\n#EXT-X-ENDLIST\n"
    ).encode(),
    "ffconcat-local-file": lambda w, b: f"ffconcat version 1.0\nfile '{b.secret}'\n".encode(),
    "ffconcat-loopback": lambda w, b: f"ffconcat version 1.0\nfile '{b.url}/a.mp4'\n".encode(),
    "sdp-loopback": lambda w, b: (
        b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
        b"m=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    ),
    "audio-only-m4a": lambda w, b: ffmpeg(w / "a.m4a", *_TONE, "-c:a", "aac"),
    "audio-only-wav": lambda w, b: ffmpeg(w / "a.wav", *_TONE),
    "audio-only-mp3": lambda w, b: ffmpeg(w / "a.mp3", *_TONE),
    "audio-with-cover-art": lambda w, b: ffmpeg(
        w / "cover.mp4",
        *_TONE,
        *_picture(),
        "-map",
        "0:a",
        "-map",
        "1:v",
        "-frames:v",
        "1",
        "-c:a",
        "aac",
        "-c:v",
        "mjpeg",
        "-disposition:v",
        "attached_pic",
    ),
    "subtitles-only": lambda w, b: (
        (w / "s.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n"),
        ffmpeg(w / "s.mkv", "-i", str(w / "s.srt")),
    )[1],
    "srt-file": lambda w, b: b"1\n00:00:00,000 --> 00:00:01,000\nhello\n",
    "two-hour-declared": lambda w, b: _mvhd_duration(_clip(w), 7200),
    "two-hour-stream": lambda w, b: ffmpeg(
        w / "long.mkv", "-f", "lavfi", "-i", "color=size=16x16:rate=1:duration=7200", *_X264
    ),
    "too-wide": lambda w, b: ffmpeg(
        w / "wide.mp4", *_picture(size="16384x16", rate="1", duration="2"), *_X264
    ),
    "declared-8000x8000": lambda w, b: _declared(w, 8000, 8000),
    "declared-16384x16384": lambda w, b: _declared(w, 16384, 16384),
    "tiny-picture": lambda w, b: ffmpeg(w / "tiny.mp4", *_picture(size="8x8"), *_X264),
    "pixel-rate": lambda w, b: ffmpeg(
        w / "fast.mp4", *_picture(size="1280x720", rate="600", duration="0.1"), *_X264
    ),
    "rotation-45": lambda w, b: _rotated(w, 45),
    "too-short": lambda w, b: ffmpeg(
        w / "short.mp4", *_picture(rate="100", duration="0.02"), *_X264
    ),
    "mpegts-garbage": lambda w, b: b"".join(b"\x47" + _random(187, i) for i in range(64)),
    "wrong-type-webm-as-mp4": lambda w, b: ffmpeg(
        w / "v.webm", *_picture(), "-c:v", "libvpx", "-deadline", "realtime", "-b:v", "200k"
    ),
    "many-streams": lambda w, b: _many_streams(w),
    "vfr-extreme": lambda w, b: _vfr(w),
    "rotation-90": lambda w, b: _rotated(w, 90),
    "zero-fps": lambda w, b: _zero_frame_durations(_clip(w)),
    "huge-fps": lambda w, b: ffmpeg(w / "hfr.mkv", *_picture(rate="1000", duration="0.2"), *_X264),
}


def body(name: str, work: Path, bait: Bait) -> bytes:
    """The upload `name` of the corpus (MAKERS), made in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    return MAKERS[name](work, bait)
