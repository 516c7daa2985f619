"""Phone-like sources for the colour, orientation and frame-rate tests (issue 25), and
what those tests read back from a transcode's outputs.

Sources: the lavfi testsrc2 picture as SDR BT.709 (the original) and made HDR as phones
tag it (HEVC Main 10, BT.2020, HLG or PQ with HDR10 mastering display and content light
level SEI; HDR reference white at 203 cd/m², ITU-R BT.2408), optionally with a Dolby
Vision configuration record written into the MP4 (ffmpeg 5.1 writes one only when
copying a stream that has it); an SD picture in BT.601; a picture of four coloured
quadrants under a display matrix written into the MP4's `tkhd` (ffmpeg 5.1 writes
rotations only, no mirrors); variable-frame-rate clips with jittered and dropped frames
and a flash and a beep at the same instants.

Read-backs: mean luma and saturation (ffmpeg's `signalstats`), the colour at each
quadrant of a picture, the flash and beep times of a rendition, its video packets' time
stamps.
"""

from __future__ import annotations

import io
import json
import math
import re
import statistics
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from tests.helpers.clips import FFMPEG, FFPROBE

_FF = [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-y"]

#: SDR BT.709 -> linear BT.2020 at 203 cd/m² white -> HDR signal (zimg).
_SDR_TAGS = "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
_HDR = {
    "hlg": "arib-std-b67",
    "pq": "smpte2084",
}
#: HDR10 metadata as a phone writes it (x265 syntax): P3-D65 mastering display of
#: 1000 cd/m², MaxCLL 1000, MaxFALL 400.
MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"


def _run(cmd: Sequence[str], timeout: float = 300) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True, timeout=timeout)


def testsrc(width: int, height: int, fps: int, seconds: float) -> str:
    return f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds},format=yuv420p"


def make_sdr(path: Path, *, width=320, height=180, fps=30, seconds=2.0) -> Path:
    """The SDR original: testsrc2 in H.264, BT.709 limited range, tagged so."""
    _run(
        [*_FF, "-f", "lavfi", "-i", f"{testsrc(width, height, fps, seconds)},{_SDR_TAGS}"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
        + ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709"]
        + ["-color_range", "tv", str(path)]
    )
    return path


def make_hdr(
    path: Path,
    kind: str,
    *,
    width=320,
    height=180,
    fps=30,
    seconds=2.0,
    mastering: bool = True,
) -> Path:
    """The same picture made HDR (`kind` ``hlg`` or ``pq``): linear BT.2020 with SDR
    white at 203 cd/m², HLG or PQ signal, HEVC Main 10 tagged BT.2020 (+ HDR10 SEI for
    PQ with `mastering`)."""
    trc = _HDR[kind]
    graph = (
        f"{testsrc(width, height, fps, seconds)},{_SDR_TAGS},"
        "zscale=t=linear:npl=203:p=2020,format=gbrpf32le,"
        f"zscale=t={trc}:m=2020_ncl:r=tv:npl=203,format=yuv420p10le"
    )
    params = ["log-level=error", "colorprim=bt2020", f"transfer={trc}", "colormatrix=bt2020nc"]
    if kind == "pq" and mastering:
        params += ["hdr10=1", f"master-display={MASTERING}", "max-cll=1000,400"]
    _run(
        [*_FF, "-f", "lavfi", "-i", graph]
        + ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", ":".join(params)]
        + ["-color_primaries", "bt2020", "-color_trc", trc, "-colorspace", "bt2020nc"]
        + ["-color_range", "tv", "-tag:v", "hvc1", str(path)]
    )
    return path


def make_bt601(path: Path, *, width=640, height=480, fps=25, seconds=2.0, tagged=True) -> Path:
    """An SD picture whose Y'CbCr uses the BT.601 matrix (a DV or old-camera clip):
    tagged smpte170m, or untagged (`tagged` False) as many SD files are."""
    graph = (
        f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds},"
        "scale=out_color_matrix=bt601:out_range=tv,format=yuv420p"
    )
    tags = (
        ["-color_primaries", "smpte170m", "-color_trc", "smpte170m", "-colorspace", "smpte170m"]
        if tagged
        else []
    )
    _run(
        [*_FF, "-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset", "ultrafast"]
        + ["-pix_fmt", "yuv420p", *tags, str(path)]
    )
    return path


# ------------------------------------------------------------------ MP4 boxes

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
_VISUAL_ENTRY_HEADER = 86  # box header + VisualSampleEntry fields (ISO/IEC 14496-12 §12.1.3)


def _children(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the boxes in data[start:end]."""
    out = []
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
        elif size == 0:
            size = end - at
        out.append((kind, at, size))
        at += size
    return out


def _child(data: bytes, parent: tuple[bytes, int, int], kind: bytes) -> tuple[bytes, int, int]:
    _, at, size = parent
    for box in _children(data, at + 8, at + size):
        if box[0] == kind:
            return box
    raise ValueError(f"no {kind!r} in {parent[0]!r}")


def _video_trak(data: bytes) -> tuple[tuple[bytes, int, int], tuple[bytes, int, int]]:
    """(moov, the video trak) of an MP4."""
    moov = next(b for b in _children(data, 0, len(data)) if b[0] == b"moov")
    for trak in _children(data, moov[1] + 8, moov[1] + moov[2]):
        if trak[0] != b"trak":
            continue
        hdlr = _child(data, _child(data, trak, b"mdia"), b"hdlr")
        if data[hdlr[1] + 16 : hdlr[1] + 20] == b"vide":
            return moov, trak
    raise ValueError("no video track")


def set_display_matrix(path: Path, a: int, b: int, c: int, d: int) -> Path:
    """Write the video track's `tkhd` matrix (ISO/IEC 14496-12 §8.3.2) as a, b, c, d
    (each -1, 0 or 1; 16.16 fixed point), no translation: a point (x, y) of the coded
    picture (y down) is shown at (a*x + c*y, b*x + d*y)."""
    data = bytearray(path.read_bytes())
    _, trak = _video_trak(bytes(data))
    tkhd = _child(bytes(data), trak, b"tkhd")
    version = data[tkhd[1] + 8]
    at = tkhd[1] + 8 + 4 + (32 if version == 1 else 20) + 8 + 8
    one = 1 << 16
    data[at : at + 36] = struct.pack(">9i", a * one, b * one, 0, c * one, d * one, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def add_dolby_vision(path: Path, profile: int, compatibility: int, level: int = 4) -> Path:
    """Write a Dolby Vision configuration record into the video sample entry, as a
    phone's MP4 carries it (`dvcC` up to profile 7, `dvvC` for 8-10; Dolby Vision
    streams within the ISO base media file format v2.3 §3.2): version 1.0, RPU and base
    layer present, no enhancement layer. The stream itself carries no RPU: the record
    is what the probe reads. The MP4 must have its `moov` after the `mdat` (ffmpeg's
    default), so no chunk offset moves."""
    data = path.read_bytes()
    moov, trak = _video_trak(data)
    if data.index(b"mdat") > moov[1]:
        raise ValueError("moov before mdat: chunk offsets would move")
    mdia = _child(data, trak, b"mdia")
    minf = _child(data, mdia, b"minf")
    stbl = _child(data, minf, b"stbl")
    stsd = _child(data, stbl, b"stsd")
    entry = _children(data, stsd[1] + 16, stsd[1] + stsd[2])[0]
    bits = (profile << 9) | (level << 3) | (1 << 2) | (0 << 1) | 1  # rpu, el, bl
    record = bytes([1, 0]) + struct.pack(">HI", bits, compatibility << 28) + bytes(16)
    box = struct.pack(">I4s", 8 + len(record), b"dvcC" if profile <= 7 else b"dvvC") + record
    out = bytearray(data)
    insert = entry[1] + entry[2]
    out[insert:insert] = box
    for _, at, size in (entry, stsd, stbl, minf, mdia, trak, moov):
        struct.pack_into(">I", out, at, size + len(box))
    path.write_bytes(bytes(out))
    return path


# ------------------------------------------------------------ orientation

QUADRANTS = ("R", "G", "B", "W")  # top-left, top-right, bottom-left, bottom-right
_COLOURS = {"R": (255, 0, 0), "G": (0, 255, 0), "B": (0, 0, 255), "W": (255, 255, 255)}

#: Display matrices (a, b, c, d) phones write, and the filters that make the coded
#: picture from the upright one (the inverse of what the matrix does on display).
MATRICES: dict[str, tuple[tuple[int, int, int, int], str]] = {
    "rot90": ((0, 1, -1, 0), "transpose=cclock"),  # an iPhone held upright
    "rot180": ((-1, 0, 0, -1), "hflip,vflip"),
    "rot270": ((0, -1, 1, 0), "transpose=clock"),
    "mirror": ((-1, 0, 0, 1), "hflip"),  # a mirrored selfie
    "mirror90": ((0, 1, 1, 0), "transpose=cclock_flip"),  # mirrored, upright phone
}


def make_oriented(path: Path, name: str, *, width=160, height=120, fps=25, seconds=1.0) -> Path:
    """Four coloured quadrants (`QUADRANTS`), `width` x `height` when shown upright,
    stored as a phone stores them under display matrix `name` (`MATRICES`)."""
    (a, b, c, d), coded = MATRICES[name]
    w, h = width // 2, height // 2
    src = "".join(
        f"color=0x{r:02x}{g:02x}{bl:02x}:s={w}x{h}:r={fps}:d={seconds}[q{i}];"
        for i, (r, g, bl) in enumerate(_COLOURS[q] for q in QUADRANTS)
    )
    graph = src + f"[q0][q1][q2][q3]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0,{coded}"
    _run(
        [*_FF, "-filter_complex", graph, "-c:v", "libx264", "-preset", "ultrafast"]
        + ["-pix_fmt", "yuv420p", "-f", "mp4", str(path)]
    )
    return set_display_matrix(path, a, b, c, d)


def nearest_colour(rgb: Sequence[float]) -> str:
    return min(
        _COLOURS, key=lambda k: sum((x - y) ** 2 for x, y in zip(rgb, _COLOURS[k], strict=True))
    )


def quadrant_colours(
    image: Image.Image, aspect: float, box: tuple[int, int, int, int] | None = None
) -> tuple[str, ...]:
    """The colours at the centres of the four quadrants of a picture of display
    `aspect` fitted (centred) into `image` (or its `box` region: x, y, w, h)."""
    x0, y0, bw, bh = box or (0, 0, *image.size)
    if bw / bh > aspect:  # pillarboxed
        cw, ch = bh * aspect, bh
    else:
        cw, ch = bw, bw / aspect
    left, top = x0 + (bw - cw) / 2, y0 + (bh - ch) / 2
    rgb = image.convert("RGB")
    out = []
    for fy in (0.25, 0.75):
        for fx in (0.25, 0.75):
            out.append(nearest_colour(rgb.getpixel((int(left + fx * cw), int(top + fy * ch)))))
    return tuple(out)


def video_frame(
    path: Path, index: int = 0, *, autorotate: bool = True, matrix: str = "bt709"
) -> Image.Image:
    """Frame `index` of a video as RGB, its Y'CbCr read with `matrix` (limited range),
    as ffmpeg's CLI shows it: with its autorotation unless `autorotate` is off."""
    convert = f"scale=in_color_matrix={matrix}:in_range=tv:out_range=pc,format=rgb24"
    probe = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error"]
        + ([] if autorotate else ["-noautorotate"])
        + ["-i", str(path), "-vf", f"select=eq(n\\,{index}),{convert}", "-frames:v", "1"]
        + ["-f", "image2pipe", "-c:v", "png", "-"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Image.open(io.BytesIO(probe.stdout)).convert("RGB")


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-size RGB pictures, 0-255 per channel."""
    assert a.size == b.size, (a.size, b.size)
    pa, pb = a.convert("RGB").tobytes(), b.convert("RGB").tobytes()
    return sum(abs(x - y) for x, y in zip(pa, pb, strict=True)) / len(pa)


# --------------------------------------------------------- picture statistics


def picture_stats(path: Path | Sequence[Path]) -> tuple[float, float]:
    """(mean luma, mean saturation) over every frame (`signalstats` YAVG and SATAVG,
    8-bit scale) of a video file or of MPEG-TS segments read in order."""
    paths = [path] if isinstance(path, Path) else list(path)
    src = f"concat:{'|'.join(str(p) for p in paths)}" if len(paths) > 1 else str(paths[0])
    out = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-i", src, "-map", "0:v:0"]
        + ["-vf", "format=yuv420p,signalstats,metadata=print:file=-", "-f", "null", "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    luma = [float(v) for v in re.findall(r"signalstats\.YAVG=([\d.]+)", out)]
    sat = [float(v) for v in re.findall(r"signalstats\.SATAVG=([\d.]+)", out)]
    assert luma and sat, out[-500:]
    return statistics.fmean(luma), statistics.fmean(sat)


def video_stream(path: Path) -> dict:
    done = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams"]
        + ["-print_format", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(done.stdout)["streams"][0]


def packet_times(paths: Sequence[Path], stream: str = "v:0") -> list[float]:
    """Presentation times (s) of one stream's packets over MPEG-TS segments in order."""
    src = f"concat:{'|'.join(str(p) for p in paths)}" if len(paths) > 1 else str(paths[0])
    done = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-select_streams", stream]
        + ["-show_entries", "packet=pts_time", "-of", "json", src],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    packets = json.loads(done.stdout).get("packets") or []
    return sorted(float(p["pts_time"]) for p in packets if "pts_time" in p)


# ----------------------------------------------------- variable frame rate


def jittered_times(
    fps: int, seconds: float, jitter: float, drop_every: int
) -> list[tuple[int, float]]:
    """(source frame number, time) of a phone-like variable-rate capture: nominal
    `fps`, each time moved by up to `jitter` seconds, and one frame in `drop_every`
    dropped (0: none)."""
    out = []
    for n in range(int(fps * seconds)):
        if drop_every and n % drop_every == drop_every // 2:
            continue
        out.append((n, n / fps + jitter * math.sin(n * 1.3)))
    return out


def make_vfr(
    path: Path,
    *,
    seconds: float = 60.0,
    fps: int = 30,
    jitter: float = 0.006,
    drop_every: int = 13,
    markers: Sequence[float] = (),
    container: str = "mp4",
    timescale: int | None = 600,
    size: str = "160x90",
) -> tuple[Path, list[float]]:
    """A variable-frame-rate clip (`jittered_times`) with AAC audio: black frames and
    silence, except a white flash of 4 frames and a 1 kHz beep of 0.12 s starting at the
    same instants, the first kept frame at or after each of `markers`. `timescale`: the
    MP4 track's (phones write 600; 1000 makes ffprobe see a 1000 fps rate), None for the
    container's own (Matroska: 1/1000). Returns the path and the exact marker times."""
    frames = jittered_times(fps, seconds, jitter, drop_every)
    flashes: list[int] = []
    times: list[float] = []
    for m in markers:
        k = next(i for i, (_, t) in enumerate(frames) if t >= m)
        flashes.append(k)
        times.append(frames[k][1])
    drop = f"select='not(eq(mod(n,{drop_every}),{drop_every // 2}))'," if drop_every else ""
    flash = "+".join(f"between(n,{k},{k + 3})" for k in flashes) or "0"
    beep = "+".join(f"between(t,{t:.6f},{t + 0.12:.6f})" for t in times) or "0"
    video = (
        f"color=black:s={size}:r={fps}:d={seconds},format=yuv420p,settb=1/90000,"
        f"setpts='(N/{fps}+{jitter}*sin(N*1.3))/TB',{drop}"
        f"drawbox=c=white:t=fill:enable='{flash}'"
    )
    audio = f"aevalsrc='0.5*sin(2*PI*1000*t)*({beep})':s=48000:d={seconds}"
    cmd = [*_FF, "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio]
    cmd += ["-fps_mode", "passthrough", "-enc_time_base:v", "-1"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-b:a", "64k"]
    if container == "mp4" and timescale:
        cmd += ["-video_track_timescale", str(timescale)]
    cmd += ["-f", "matroska" if container == "mkv" else "mp4", str(path)]
    _run(cmd, timeout=600)
    return path, times


def flash_times(paths: Sequence[Path]) -> list[float]:
    """Times (s) of the first frame of each white flash over MPEG-TS segments, on the
    segments' own clock (as `beep_times`)."""
    src = f"concat:{'|'.join(str(p) for p in paths)}" if len(paths) > 1 else str(paths[0])
    out = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-copyts", "-i", src, "-map", "0:v:0"]
        + ["-vf", "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-"]
        + ["-f", "null", "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    frames = re.findall(r"pts_time:([\d.]+)\s*\nlavfi\.signalstats\.YAVG=([\d.]+)", out)
    onsets, white = [], False
    for t, y in frames:
        bright = float(y) > 128
        if bright and not white:
            onsets.append(float(t))
        white = bright
    return onsets


def beep_times(paths: Sequence[Path]) -> list[float]:
    """Times (s) where each beep starts over MPEG-TS segments: the first decoded sample
    above a quarter of full scale after a silence, on the audio stream's own clock."""
    src = f"concat:{'|'.join(str(p) for p in paths)}" if len(paths) > 1 else str(paths[0])
    start = packet_times(paths, "a:0")[0]
    pcm = subprocess.run(
        [FFMPEG or "ffmpeg", "-nostdin", "-v", "error", "-i", src, "-map", "0:a:0"]
        + ["-ac", "1", "-ar", "48000", "-f", "s16le", "-"],
        check=True,
        capture_output=True,
        timeout=300,
    ).stdout
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    onsets, last = [], -1e9
    for i, s in enumerate(samples):
        if abs(s) > 8192:
            t = start + i / 48000
            if t - last > 0.5:
                onsets.append(t)
            last = t
    return onsets
