"""Runs ffprobe and ffmpeg for the jobs: asyncio subprocesses that die with the worker
(core/procs.py starts, bounds and kills them).

`probe` validates an upload (`BadInput` on anything unusable); `measure_loudness` runs the
audio-only loudness measurement pass; `transcode` runs the single ffmpeg command of
`workers.media.encoding.transcode_command`, reports progress, keeps a bounded log, then measures
what ffmpeg really wrote (segment durations and sizes, profile/level from the SPS, frame
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import procs
from core.playlists import StoryboardCue
from core.procs import Completed
from core.procs import kill as _kill
from core.procs import spawn as _spawn
from workers.media import encoding
from workers.media.encoding import DEFAULT_RUNGS, Rung
from workers.media.h264 import codecs_from_sps, find_sps, variant_codecs
from workers.media.loudness import GainPlan, Measurement, parse_ebur128_summary
from workers.media.probe import (
    BadInput,
    Limits,
    MediaInfo,
    check_first_frame,
    counted_frames,
    ffprobe_command,
    first_frame_colour,
    frame_count_command,
    needs_frame_count,
    parse_rate,
    probe_failure_reason,
    validate_probe,
)
from workers.media.storyboard import build_storyboard
from workers.runtime import metrics as jobstats

__all__ = [
    "Completed",
    "RenditionOutput",
    "Stalled",
    "TranscodeFailed",
    "TranscodeOutput",
    "measure_loudness",
    "probe",
    "run_capture",
    "run_fed",
    "transcode",
]

ProgressCallback = Callable[[float], Awaitable[None]]


async def run_capture(cmd: Sequence[str], *, timeout: float) -> Completed:
    """`core.procs.run_capture`, its wall time counted for the current job."""
    started = time.monotonic()
    try:
        return await procs.run_capture(cmd, timeout=timeout)
    finally:
        jobstats.tool_ran(time.monotonic() - started)


async def run_fed(
    cmd: Sequence[str],
    feed: Callable[[asyncio.StreamWriter], Awaitable[None]],
    *,
    timeout: float,
) -> Completed:
    """`core.procs.run_fed`, its wall time counted for the current job."""
    started = time.monotonic()
    try:
        return await procs.run_fed(cmd, feed, timeout=timeout)
    finally:
        jobstats.tool_ran(time.monotonic() - started)


class TranscodeFailed(Exception):
    """ffmpeg failed for a reason that is not clearly the upload's fault (retryable)."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


@dataclass(frozen=True)
class RenditionOutput:
    """One rendition as ffmpeg wrote it (everything measured from the files)."""

    name: str
    width: int
    height: int
    fps: float
    codecs: str  # full variant CODECS, e.g. "avc1.4d401f,mp4a.40.2"
    video_codecs: str  # e.g. "avc1.4d401f", from the SPS of the first segment
    profile: str  # ffprobe's name, e.g. "Main"
    level: int  # level_idc, e.g. 31
    video_bitrate: int  # the rung's nominal bit rate
    audio_sample_rate: int
    audio_channels: int
    durations: tuple[float, ...]
    sizes: tuple[int, ...]
    playlist: Path
    segments: tuple[Path, ...]
    first_pts: int  # 90 kHz: its first video frame's presentation time

    @property
    def duration(self) -> float:
        return sum(self.durations)


@dataclass(frozen=True)
class TranscodeOutput:
    renditions: tuple[RenditionOutput, ...]
    thumbnail: Path
    thumbnail_large: Path
    frames: tuple[Path, ...]
    storyboard_sheets: tuple[Path, ...]
    storyboard_cues: tuple[StoryboardCue, ...]  # the WebVTT is core.playlists' to write
    log: Path
    duration: float


async def _lines(stream: asyncio.StreamReader, max_line: int = 4096) -> AsyncIterator[str]:
    """Lines of a stream, without StreamReader's line-length limit (long lines are cut)."""
    buf = b""
    while chunk := await stream.read(65536):
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            yield raw[:max_line].decode("utf-8", "replace").rstrip("\r")
        if len(buf) > max_line:
            yield buf[:max_line].decode("utf-8", "replace")
            buf = b""
    if buf:
        yield buf[:max_line].decode("utf-8", "replace").rstrip("\r")


class _BoundedLog:
    """First `head` and last `tail` lines of a stream; the middle is counted, not kept."""

    def __init__(self, head: int = 200, tail: int = 2000) -> None:
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=tail)
        self._head_max = head
        self.dropped = 0

    def add(self, line: str) -> None:
        if len(self.head) < self._head_max:
            self.head.append(line)
            return
        if len(self.tail) == self.tail.maxlen:
            self.dropped += 1
        self.tail.append(line)

    async def pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is not None:
            async for line in _lines(stream):
                self.add(line)

    def last(self, n: int = 15) -> list[str]:
        lines = self.head + list(self.tail)
        return [ln for ln in lines if ln.strip()][-n:]

    def text(self) -> str:
        mid = [f"... {self.dropped} lines omitted ..."] if self.dropped else []
        return "\n".join(self.head + mid + list(self.tail)) + "\n"


# --------------------------------------------------------------------- probe


async def probe(
    path: str | os.PathLike[str], limits: Limits | None = None, *, timeout: float = 60.0
) -> MediaInfo:
    """ffprobe an upload and validate it; `BadInput` (readable `.reason`) if unusable."""
    info, _ = await probe_and_measure(path, limits, loudness=False, timeout=timeout)
    return info


async def probe_and_measure(
    path: str | os.PathLike[str],
    limits: Limits | None = None,
    *,
    loudness: bool,
    timeout: float = 60.0,
    loudness_timeout: float = 600.0,
) -> tuple[MediaInfo, Measurement | None]:
    """`probe`, and with `loudness` (and audio in the upload) `measure_loudness`, run
    beside probe's check of the first picture: after ffprobe neither needs the other,
    and a transcode waits for both (0.3 s of a 30 s clip's time to playable). The
    picture's verdict comes first: when it refuses the upload, the measurement is
    stopped. The first picture also completes what ffprobe said of the colour
    (`workers.media.probe.first_frame_colour`)."""
    info = await _probe_streams(path, limits or Limits(), timeout)
    if not (loudness and info.has_audio):
        return await _check_picture(path, info, timeout), None
    checking = asyncio.ensure_future(_check_picture(path, info, timeout))
    measuring = asyncio.ensure_future(measure_loudness(path, info, timeout=loudness_timeout))
    try:
        checked = await checking
        return checked, await measuring
    finally:
        for task in (checking, measuring):
            task.cancel()
        await asyncio.gather(checking, measuring, return_exceptions=True)


async def _probe_streams(path: str | os.PathLike[str], limits: Limits, timeout: float) -> MediaInfo:
    """ffprobe of the upload, validated against `limits`; when the container does not
    declare the mean frame rate, a second ffprobe counts the frames
    (`workers.media.probe.needs_frame_count`)."""
    size = os.stat(path).st_size
    if size == 0:
        raise BadInput("empty upload")
    if size > limits.max_bytes:
        raise BadInput(
            f"file is {size / 1e6:.0f} MB, above the limit of {limits.max_bytes / 1e6:.0f} MB"
        )
    data = _json(await _ffprobe(ffprobe_command(path), path, timeout))
    frames = None
    stream = needs_frame_count(data)
    if stream is not None:
        frames = counted_frames(
            _json(await _ffprobe(frame_count_command(path, stream), path, timeout))
        )
    return validate_probe(data, limits, frames=frames)


def _json(done: Completed) -> dict[str, Any]:
    try:
        data = json.loads(done.stdout)
    except ValueError:
        raise BadInput("not a readable video file: ffprobe output unreadable") from None
    if not isinstance(data, dict):
        raise BadInput("not a readable video file: ffprobe output unreadable")
    return data


async def _check_picture(
    path: str | os.PathLike[str], info: MediaInfo, timeout: float
) -> MediaInfo:
    """The first decoded picture must have the declared size
    (`workers.media.probe.check_first_frame`); what it says of its colour completes
    `info` (`workers.media.probe.first_frame_colour`)."""
    try:
        done = await run_capture(encoding.first_frame_command(path, info), timeout=timeout)
    except TimeoutError:
        raise TranscodeFailed(f"ffmpeg did not decode a picture within {timeout:g} s") from None
    if done.returncode < 0:
        raise TranscodeFailed(f"ffmpeg killed by signal {-done.returncode}", done.stderr[-2000:])
    check_first_frame(done.stderr, info)
    return first_frame_colour(done.stderr, info)


async def _ffprobe(cmd: Sequence[str], path: str | os.PathLike[str], timeout: float) -> Completed:
    """Run an ffprobe of the upload: `BadInput` when it refuses the file, `TranscodeFailed`
    when it was killed or did not finish in time."""
    try:
        done = await run_capture(cmd, timeout=timeout)
    except TimeoutError:
        raise TranscodeFailed(f"ffprobe did not finish within {timeout:g} s") from None
    if done.returncode < 0:
        raise TranscodeFailed(f"ffprobe killed by signal {-done.returncode}", done.stderr[-2000:])
    if done.returncode != 0:
        raise BadInput(probe_failure_reason(done.stderr, path))
    return done


# ------------------------------------------------------------------ loudness


async def measure_loudness(
    source: str | os.PathLike[str], info: MediaInfo, *, timeout: float = 600.0
) -> Measurement:
    """The loudness measurement pass over a validated upload's audio
    (`workers.media.encoding.loudness_command`). Raises `BadInput` when the audio cannot be
    decoded, `TranscodeFailed` otherwise."""
    try:
        done = await run_capture(encoding.loudness_command(source, info), timeout=timeout)
    except TimeoutError:
        raise TranscodeFailed(
            f"the loudness measurement did not finish within {timeout:g} s"
        ) from None
    if done.returncode != 0:
        log = _BoundedLog()
        for line in done.stderr.splitlines():
            log.add(line)
        raise _failure(done.returncode, log)
    try:
        return parse_ebur128_summary(done.stderr)
    except ValueError as exc:
        raise TranscodeFailed(f"loudness measurement: {exc}", done.stderr[-2000:]) from None


# ----------------------------------------------------------------- transcode

_INPUT_FAULTS = re.compile(
    r"Invalid data found when processing input|moov atom not found|could not find codec parameters"
    r"|Decoder \(codec .*\) not found|Unsupported codec|no decoder|decode_slice_header error"
    r"|Error while decoding stream|corrupt|truncat",
    re.IGNORECASE,
)
_ENVIRONMENT_FAULTS = re.compile(
    r"No space left|Cannot allocate memory|Too many open files|Permission denied|Read-only file system"
    r"|Resource temporarily unavailable|Broken pipe",
    re.IGNORECASE,
)


def _failure(returncode: int, log: _BoundedLog) -> Exception:
    tail = "\n".join(log.last())
    last = log.last(1)
    detail = last[0].strip() if last else "no output"
    if returncode < 0:
        return TranscodeFailed(f"ffmpeg killed by signal {-returncode}: {detail}", tail)
    text = "\n".join(log.head + list(log.tail))
    if _INPUT_FAULTS.search(text) and not _ENVIRONMENT_FAULTS.search(text):
        m = _INPUT_FAULTS.search(tail) or _INPUT_FAULTS.search(text)
        line = next((ln for ln in log.last(50) if m and m.group(0) in ln), detail)
        return BadInput(f"the video could not be decoded: {line.strip()[:300]}")
    return TranscodeFailed(f"ffmpeg exited with {returncode}: {detail[:300]}", tail)


def _clean_outputs(workdir: Path, ladder: Sequence[Rung]) -> None:
    """Remove what an earlier attempt left, so stale segments or frames never leak in."""
    patterns = [f"{r.name}_*.ts" for r in ladder] + [f"{r.name}.m3u8" for r in ladder]
    patterns += [encoding.THUMBNAIL, encoding.THUMBNAIL_LARGE, "storyboard*.jpg"]
    for pattern in patterns:
        for p in workdir.glob(pattern):
            p.unlink(missing_ok=True)
    frames = workdir / encoding.FRAMES_DIR
    frames.mkdir(parents=True, exist_ok=True)
    for p in frames.glob("*.jpg"):
        p.unlink(missing_ok=True)


#: The fields of an ffmpeg ``-progress`` block that advance while it works: frames
#: encoded, output time, bytes written. A block repeating them is no progress.
PROGRESS_FIELDS = ("frame", "out_time_us", "out_time_ms", "out_time", "total_size")


def progress_mark(block: Mapping[str, str]) -> tuple[str, ...]:
    """What must change between two progress blocks for ffmpeg to have made progress."""
    return tuple(block.get(k, "") for k in PROGRESS_FIELDS)


class Stalled(TranscodeFailed):
    """ffmpeg made no progress for the stall timeout and was killed (retryable)."""


async def _run_transcode(
    cmd: Sequence[str],
    *,
    duration: float,
    on_progress: ProgressCallback | None,
    progress_interval: float,
    timeout: float,
    stall_seconds: float,
    log: _BoundedLog,
    niceness: int = 0,
) -> int:
    """Run the transcode; kill it after `timeout` (TimeoutError) or when its progress
    (`progress_mark`) does not advance for `stall_seconds` (`Stalled`): an input that
    stops delivering data, a filter that hangs."""
    proc = await _spawn(cmd, stdout=asyncio.subprocess.PIPE, niceness=niceness)
    loop = asyncio.get_running_loop()
    stall = asyncio.timeout(stall_seconds)

    async def pump_progress() -> None:
        assert proc.stdout is not None
        parser = encoding.ProgressParser()
        last = 0.0
        mark: tuple[str, ...] | None = None
        async for line in _lines(proc.stdout):
            block = parser.feed(line)
            if block is None:
                continue
            if progress_mark(block) != mark:
                mark = progress_mark(block)
                stall.reschedule(loop.time() + stall_seconds)
            if on_progress is None or block.get("progress") == "end":
                continue
            now = time.monotonic()
            if now - last >= progress_interval:
                last = now
                await on_progress(encoding.parse_progress(block, duration))

    stderr_task = asyncio.create_task(log.pump(proc.stderr))
    progress_task = asyncio.create_task(pump_progress())
    try:
        async with asyncio.timeout(timeout):
            try:
                async with stall:
                    await progress_task  # stdout ends when ffmpeg exits
                await stderr_task
                return await proc.wait()
            except TimeoutError:
                if stall.expired():
                    raise Stalled(
                        f"ffmpeg made no progress for {stall_seconds:g} s (input stalled?)",
                        "\n".join(log.last()),
                    ) from None
                raise
    except BaseException:
        await _kill(proc)
        for task in (progress_task, stderr_task):
            task.cancel()
        await asyncio.gather(progress_task, stderr_task, return_exceptions=True)
        raise


async def _probe_rendition(segment: Path, timeout: float) -> tuple[dict, dict, str]:
    """(video stream, audio stream, codecs from SPS) of one of our own output segments."""
    info, raw = await asyncio.gather(
        run_capture(encoding.segment_streams_command(segment), timeout=timeout),
        run_capture(encoding.segment_sps_command(segment), timeout=timeout),
    )
    if info.returncode != 0 or raw.returncode != 0:
        raise TranscodeFailed(
            f"cannot read back {segment.name}: {(info.stderr or raw.stderr)[-300:]}"
        )
    streams = json.loads(info.stdout).get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    sps = find_sps(raw.stdout)
    if video is None or audio is None or sps is None:
        raise TranscodeFailed(f"{segment.name} lacks video, audio or an SPS")
    return video, audio, codecs_from_sps(sps)


SegmentCallback = Callable[[Rung, Path], Awaitable[None]]


class _SegmentWatch:
    """Media segments ffmpeg has finished while it still runs: a rung's segment n is
    whole once its muxer has opened segment n + 1 (the HLS muxer closes one file
    before it opens the next). Each is handed to `on_segment` once, in order; the
    first segment of every rung is read back (`_probe_rendition`) at once, beside the
    encode, rather than after it."""

    def __init__(
        self,
        out: Path,
        ladder: Sequence[Rung],
        on_segment: SegmentCallback | None,
        probe_timeout: float,
        interval: float = 0.25,
    ) -> None:
        self.out = out
        self.ladder = ladder
        self.on_segment = on_segment
        self.probe_timeout = probe_timeout
        self.interval = interval
        self.next = {r.name: 1 for r in ladder}
        self.probes: dict[str, asyncio.Task[tuple[dict, dict, str]]] = {}

    def _finished(self, rung: Rung) -> list[Path]:
        done = []
        n = self.next[rung.name]
        while (self.out / encoding.segment_name(rung, n + 1)).exists():
            done.append(self.out / encoding.segment_name(rung, n))
            n += 1
        self.next[rung.name] = n
        return done

    async def scan(self) -> None:
        for rung in self.ladder:
            for path in self._finished(rung):
                if rung.name not in self.probes:
                    self.probes[rung.name] = asyncio.ensure_future(
                        _probe_rendition(path, self.probe_timeout)
                    )
                if self.on_segment is not None:
                    await self.on_segment(rung, path)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.scan()

    async def probe(self, rung: Rung, segment: Path) -> tuple[dict, dict, str]:
        task = self.probes.pop(rung.name, None)
        if task is None:
            return await _probe_rendition(segment, self.probe_timeout)
        return await task

    async def aclose(self) -> None:
        tasks = list(self.probes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _read_rendition(
    workdir: Path, rung: Rung, timeout: float, watch: _SegmentWatch | None = None
) -> RenditionOutput:
    playlist = workdir / encoding.playlist_name(rung)
    try:
        durations, uris = encoding.media_segments(playlist.read_text())
    except (OSError, ValueError) as e:
        raise TranscodeFailed(f"{playlist.name}: {e}") from None
    # ffmpeg numbers a rung's segments 1, 2, ... without gaps: the playlist must list
    # exactly those, and no file after the last one (m3u8 skips a URI it cannot place).
    names = [encoding.segment_name(rung, n) for n in range(1, len(uris) + 1)]
    if uris != names or (workdir / encoding.segment_name(rung, len(uris) + 1)).exists():
        raise TranscodeFailed(f"{playlist.name} does not list the segments ffmpeg wrote")
    segments = tuple(workdir / uri for uri in uris)
    try:
        sizes = tuple(p.stat().st_size for p in segments)
    except OSError as e:
        raise TranscodeFailed(f"{rung.name}: missing segment: {e}") from None
    if watch is not None:
        video, audio, codecs = await watch.probe(rung, segments[0])
    else:
        video, audio, codecs = await _probe_rendition(segments[0], timeout)
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if (width, height) != (rung.width, rung.height):
        raise TranscodeFailed(
            f"{rung.name}: wrote {width}x{height}, expected {rung.width}x{rung.height}"
        )
    fps = parse_rate(video.get("r_frame_rate")) or parse_rate(video.get("avg_frame_rate"))
    # the source's time 0: the first frame (the audio starts earlier by the AAC
    # encoder's priming, the first DTS by the B-frame delay)
    first_pts = video.get("start_pts")
    if not isinstance(first_pts, int) or first_pts < 0:
        raise TranscodeFailed(f"{segments[0].name}: no start time on its video")
    return RenditionOutput(
        name=rung.name,
        width=width,
        height=height,
        fps=round(fps or 0.0, 3),
        codecs=variant_codecs(codecs),
        video_codecs=codecs,
        profile=str(video.get("profile") or ""),
        level=int(video.get("level") or 0),
        video_bitrate=rung.video_bitrate,
        audio_sample_rate=int(audio.get("sample_rate") or 0),
        audio_channels=int(audio.get("channels") or 0),
        durations=tuple(durations),
        sizes=sizes,
        playlist=playlist,
        segments=segments,
        first_pts=first_pts,
    )


async def _encode(
    source: str | os.PathLike[str],
    out: Path,
    info: MediaInfo,
    ladder: Sequence[Rung],
    *,
    on_progress: ProgressCallback | None,
    timeout: float,
    stall_seconds: float,
    progress_interval: float,
    probe_timeout: float,
    stills: bool,
    command_args: Mapping[str, Any],
    niceness: int = 0,
    on_segment: SegmentCallback | None = None,
) -> list[RenditionOutput]:
    """Run the transcode command into `out` and read every rendition back: aligned
    (the same segment durations in every rung) and as long as the upload declares.
    While ffmpeg runs, each finished media segment goes to `on_segment` and the first
    one of every rung is read back (`_SegmentWatch`); the last ones are whole when it
    exits (the caller sees them in the result). Cancellation, `timeout` and
    `stall_seconds` without progress kill ffmpeg's process group (`Stalled` after a
    stall)."""
    out.mkdir(parents=True, exist_ok=True)
    _clean_outputs(out, ladder)
    cmd = encoding.transcode_command(source, out, info, ladder, stills=stills, **command_args)
    log = _BoundedLog()
    log_path = out / encoding.TRANSCODE_LOG
    started = time.monotonic()
    rc: int | None = None
    watch = _SegmentWatch(out, ladder, on_segment, probe_timeout)
    watching = asyncio.ensure_future(watch.run())
    try:
        try:
            rc = await _run_transcode(
                cmd,
                duration=info.duration,
                on_progress=on_progress,
                progress_interval=progress_interval,
                timeout=timeout,
                stall_seconds=stall_seconds,
                log=log,
                niceness=niceness,
            )
        except TimeoutError:
            raise TranscodeFailed(
                f"ffmpeg did not finish within {timeout:g} s", "\n".join(log.last())
            ) from None
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
            jobstats.tool_ran(time.monotonic() - started)
            nice = f"# niceness {niceness}\n" if niceness else ""
            elapsed = time.monotonic() - started
            header = f"$ {' '.join(cmd)}\n{nice}# exit {rc} after {elapsed:.1f} s\n"
            with contextlib.suppress(OSError):
                log_path.write_text(header + log.text())
        if rc != 0:
            raise _failure(rc, log)
        renditions = await asyncio.gather(
            *(_read_rendition(out, r, probe_timeout, watch) for r in ladder)
        )
    finally:
        await watch.aclose()
    first = renditions[0]
    for r in renditions[1:]:
        if len(r.durations) != len(first.durations) or any(
            abs(a - b) > 0.0015 for a, b in zip(r.durations, first.durations, strict=True)
        ):
            raise TranscodeFailed(
                f"renditions not aligned: {first.name} {first.durations} vs {r.name} {r.durations}"
            )
    written = first.duration
    if written < info.duration * 0.9 - 0.5:
        raise BadInput(
            f"the video ends early (truncated or damaged upload): decoded {written:.1f} s "
            f"of the {info.duration:.1f} s it declares"
        )
    return list(renditions)


async def encode_renditions(
    source: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    info: MediaInfo,
    ladder: Sequence[Rung],
    *,
    presets: Mapping[str, str],
    loudness: GainPlan | None,
    niceness: int = 0,
    on_progress: ProgressCallback | None = None,
    timeout: float = 3600.0,
    stall_seconds: float = 120.0,
    segment_seconds: float = 4,
    progress_interval: float = 1.0,
    probe_timeout: float = 60.0,
) -> tuple[RenditionOutput, ...]:
    """The renditions alone, as `transcode` writes them (the same filter graph,
    segmentation, keyframes, audio and loudness gain) at each rung's preset in
    `presets`: what a refinement publishes in place of the fast ladder. `niceness`
    (0-19) lowers ffmpeg's CPU priority, so transcodes on the same host go first."""
    renditions = await _encode(
        source,
        Path(workdir),
        info,
        ladder,
        on_progress=on_progress,
        timeout=timeout,
        stall_seconds=stall_seconds,
        progress_interval=progress_interval,
        probe_timeout=probe_timeout,
        stills=False,
        command_args={
            "segment_seconds": segment_seconds,
            "presets": presets,
            "loudness": loudness,
        },
        niceness=niceness,
    )
    if on_progress is not None:
        await on_progress(100.0)
    return tuple(renditions)


async def transcode(
    source: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    info: MediaInfo,
    ladder: Sequence[Rung] = DEFAULT_RUNGS,
    *,
    on_progress: ProgressCallback | None = None,
    timeout: float = 3600.0,
    stall_seconds: float = 120.0,
    segment_seconds: float = 4,
    frame_interval: float = 10.0,
    preset: str = "veryfast",
    presets: Mapping[str, str] | None = None,
    progress_interval: float = 1.0,
    probe_timeout: float = 60.0,
    loudness: GainPlan | None = None,
    on_segment: SegmentCallback | None = None,
) -> TranscodeOutput:
    """One ffmpeg run -> every rendition, thumbnails, timeline frames; then the storyboard.
    The `loudness` plan (from `measure_loudness`) sets the audio's gain; `presets` the
    x264 preset of each rung (by name, else `preset`).

    `on_progress(percent)` is awaited at most every `progress_interval` s and once with
    100 at the end; an exception from it stops ffmpeg and propagates. `on_segment(rung,
    path)` is awaited for each media segment finished while ffmpeg runs (not the last
    of each rung), in order; it must not block (hand the work to a task). Cancellation,
    `timeout` and `stall_seconds` without progress kill ffmpeg's process group. Raises
    `TranscodeFailed` (retryable; `Stalled` after a stall) or `BadInput` (the upload's
    fault).
    """
    out = Path(workdir)
    renditions = await _encode(
        source,
        out,
        info,
        ladder,
        on_progress=on_progress,
        timeout=timeout,
        stall_seconds=stall_seconds,
        progress_interval=progress_interval,
        probe_timeout=probe_timeout,
        stills=True,
        command_args={
            "segment_seconds": segment_seconds,
            "frame_interval": frame_interval,
            "preset": preset,
            "presets": presets,
            "loudness": loudness,
        },
        on_segment=on_segment,
    )
    written = renditions[0].duration
    thumbs = (out / encoding.THUMBNAIL, out / encoding.THUMBNAIL_LARGE)
    for t in thumbs:
        if not t.is_file() or t.stat().st_size == 0:
            raise TranscodeFailed(f"ffmpeg wrote no {t.name}")
    frames = tuple(sorted((out / encoding.FRAMES_DIR).glob("frame_*.jpg")))
    cues = await asyncio.to_thread(
        build_storyboard,
        frames,
        out,
        interval=frame_interval,
        duration=written,
        tile=encoding.TIMELINE_TILE,
    )
    sheets = tuple(out / name for name in dict.fromkeys(c.sheet for c in cues))
    if on_progress is not None:
        await on_progress(100.0)
    return TranscodeOutput(
        renditions=tuple(renditions),
        thumbnail=thumbs[0],
        thumbnail_large=thumbs[1],
        frames=frames,
        storyboard_sheets=sheets,
        storyboard_cues=tuple(cues),
        log=out / encoding.TRANSCODE_LOG,
        duration=written,
    )
