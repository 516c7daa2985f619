"""A thumbnail at any moment, the I/O half (the pure half is origin/playback/moments.py):
the JPEG of a `Still` from memory, else from storage (`{sceneId}/{segmentId}/stills/...` in the
videos bucket), else grabbed by ffmpeg from the one `.ts` that holds the frame and then
kept in both, so a second request, in this process or any other, never runs ffmpeg.

ffmpeg runs are bounded per process (`THUMBNAIL_CONCURRENCY`): a request that would
wait longer than `WAIT_LIMIT` for a slot is refused with `Busy` (503 + Retry-After),
at once when the queue ahead of it already promises that, else when the wait runs out.
Concurrent requests for the same moment share one run. Each run has a time limit and
is killed with its process group (core/procs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core import layout
from core.lru import LRU, weigh_bytes
from core.metrics import family
from core.playlists import Clip, clip_bytes
from core.procs import run_capture
from core.settings import Settings
from core.storage import ObjectNotFound, Storage
from origin.playback.caches import Budgets
from origin.playback.moments import Still, grab_command

log = logging.getLogger("storyforge.stills")

#: Longest a request waits for an ffmpeg slot before 503 (issue 16).
WAIT_LIMIT = 2.0
#: Longest one frame grab may run (a 4 s segment decodes in a fraction of this).
GRAB_TIMEOUT = 15.0
_MAX_JPEG = 8 * 1024 * 1024


class ThumbnailStats:
    """Thumbnails at any moment, bumped on their path: answers by
    where they came from, ffmpeg runs started, running now and at most, refusals."""

    __slots__ = ("answers", "ffmpeg_runs", "running", "max_running", "busy", "failures")

    def __init__(self) -> None:
        self.answers: Counter[str] = Counter()  # memory | storage | ffmpeg
        self.ffmpeg_runs = 0
        self.running = 0
        self.max_running = 0
        self.busy = 0  # 503: the concurrency bound would have kept it waiting too long
        self.failures = 0

    def families(self, cache_bytes: int) -> list[Metric]:
        answers = family(
            CounterMetricFamily,
            "storyforge_thumbnail_answers",
            "Thumbnails at a moment answered, by where the JPEG came from (memory, storage, "
            "a new ffmpeg run, or shared with a concurrent request for the same frame)",
            ["source"],
            (((k,), n) for k, n in sorted(self.answers.items())),
        )
        scalars = [
            (CounterMetricFamily, "ffmpeg_runs", "ffmpeg frame grabs started", self.ffmpeg_runs),
            (GaugeMetricFamily, "ffmpeg_running", "ffmpeg frame grabs running now", self.running),
            (
                GaugeMetricFamily,
                "ffmpeg_running_max",
                "Most ffmpeg frame grabs ever running at once in this process",
                self.max_running,
            ),
            (
                CounterMetricFamily,
                "busy",
                "Thumbnail requests answered 503 (THUMBNAIL_CONCURRENCY busy for too long)",
                self.busy,
            ),
            (CounterMetricFamily, "failures", "ffmpeg frame grabs that failed", self.failures),
            (GaugeMetricFamily, "cache_bytes", "Bytes of thumbnails kept in memory", cache_bytes),
        ]
        return [answers] + [
            family(kind, f"storyforge_thumbnail_{name}", doc, [], [((), value)])
            for kind, name, doc, value in scalars
        ]


class Busy(Exception):
    """Every ffmpeg slot is taken for longer than the wait limit."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"thumbnail grabs are busy: retry in {retry_after} s")
        self.retry_after = retry_after


class GrabFailed(Exception):
    """ffmpeg produced no frame (a server-side fault: our own media)."""


class Stills:
    """The thumbnails of one origin process."""

    def __init__(
        self,
        storage: Storage,
        bucket: str,
        *,
        concurrency: int,
        cache_bytes: int,
        wait_limit: float = WAIT_LIMIT,
        grab_timeout: float = GRAB_TIMEOUT,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.storage = storage
        self.bucket = bucket
        self.concurrency = concurrency
        self.wait_limit = wait_limit
        self.grab_timeout = grab_timeout
        self.stats = ThumbnailStats()
        self.cache: LRU[bytes] = LRU(sys.maxsize, max_bytes=cache_bytes, weigh=weigh_bytes)
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0
        self._run_seconds: float | None = None  # moving average of one grab
        self._in_flight: dict[Hashable, asyncio.Task[bytes]] = {}

    async def jpeg(self, scene_id: str, still: Still) -> bytes:
        """The JPEG of `still` (a frame of a ready segment of `scene_id`). Raises
        `Busy` or `GrabFailed`."""
        key = (still.segment_id, still.profile, still.generation, still.frame, still.width)
        body = self.cache.get(key)
        if body is not None:
            self.stats.answers["memory"] += 1
            return body
        task = self._in_flight.get(key)
        if task is not None:  # someone is making it already: share theirs
            body = await asyncio.shield(task)
            self.stats.answers["shared"] += 1
            return body
        # a task of its own, so a client that goes away does not waste the others' wait
        task = asyncio.create_task(self._make(key, scene_id, still))
        self._in_flight[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    async def _make(self, key: Hashable, scene_id: str, still: Still) -> bytes:
        body = await self._produce(scene_id, still)
        self.cache.put(key, body)
        return body

    def _forget(self, key: Hashable, task: asyncio.Task[bytes]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, even when every requester has gone

    async def close(self) -> None:
        """Stop the grabs in flight (their ffmpeg processes are killed)."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _produce(self, scene_id: str, still: Still) -> bytes:
        key = layout.still_key(scene_id, still.segment_id, still.still_name)
        try:
            obj = await self.storage.get(self.bucket, key)
        except ObjectNotFound:
            pass
        else:
            async with obj:
                body = await obj.read()
            self.stats.answers["storage"] += 1
            return body
        async with self._slot():
            body = await self._grab(scene_id, still)
        self.stats.answers["ffmpeg"] += 1
        meta = layout.file_meta(still.still_name)
        try:
            await self.storage.put(
                self.bucket,
                key,
                body,
                content_type=meta.content_type,
                cache_control=meta.cache_control,
                tags={"type": meta.tag},
            )
        except Exception:  # the answer stands; the next process grabs it again
            log.warning("could not store thumbnail %s", key, exc_info=True)
        return body

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the `concurrency` ffmpeg slots, or `Busy`."""
        if self._slots.locked() and self._run_seconds is not None:
            rounds = math.ceil((self._waiting + 1) / self.concurrency)
            expected = rounds * self._run_seconds
            if expected > self.wait_limit:
                self.stats.busy += 1
                raise Busy(max(1, math.ceil(expected)))
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait_limit):
                await self._slots.acquire()
        except TimeoutError:
            self.stats.busy += 1
            raise Busy(max(1, math.ceil(self.wait_limit))) from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def _grab(self, scene_id: str, still: Still) -> bytes:
        ts_key = layout.segment_key(scene_id, still.segment_id, still.media_name)
        local = await self.storage.local_path(self.bucket, ts_key)
        if local is not None:
            if not local.is_file():
                raise GrabFailed(f"{ts_key} is missing from storage")
            return await self._run(local, still)
        fd, name = tempfile.mkstemp(prefix="storyforge-still-", suffix=".ts")
        os.close(fd)
        try:
            await self._download(ts_key, Path(name))
            return await self._run(Path(name), still)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    async def _download(self, key: str, dest: Path) -> None:
        try:
            obj = await self.storage.get(self.bucket, key)
        except ObjectNotFound:
            raise GrabFailed(f"{key} is missing from storage") from None
        with dest.open("wb") as f:
            async with obj:
                async for chunk in obj:
                    await asyncio.to_thread(f.write, chunk)

    async def _run(self, segment: Path, still: Still) -> bytes:
        stats = self.stats
        stats.ffmpeg_runs += 1
        stats.running += 1
        stats.max_running = max(stats.max_running, stats.running)
        started = time.monotonic()
        try:
            done = await run_capture(grab_command(segment, still), timeout=self.grab_timeout)
        except TimeoutError:
            stats.failures += 1
            raise GrabFailed(
                f"the frame grab did not finish within {self.grab_timeout:g} s"
            ) from None
        finally:
            stats.running -= 1
        seconds = time.monotonic() - started
        avg = self._run_seconds
        self._run_seconds = seconds if avg is None else 0.8 * avg + 0.2 * seconds
        body = done.stdout
        if done.returncode != 0 or not body.startswith(b"\xff\xd8") or len(body) > _MAX_JPEG:
            stats.failures += 1
            detail = done.stderr.strip().splitlines()[-1:] or ["no frame written"]
            raise GrabFailed(f"ffmpeg could not grab the frame: {detail[0][:300]}")
        return body


@dataclass
class StillsState:
    """A process's thumbnails at a moment: the grabber and the clips moments are placed
    on (origin/playback/scenes.py `scene_clips`, `segment_clip`)."""

    stills: Stills
    scenes: LRU[tuple[Clip, ...]]  # (scene id, version) -> its ready clips, in order
    segments: LRU[Clip]  # (scene id, segment id, generation) -> a ready clip


def _clips_bytes(clips: tuple[Clip, ...]) -> int:
    return sum(clip_bytes(c) for c in clips)


@contextlib.asynccontextmanager
async def stills_state(settings: Settings, storage: Storage) -> AsyncIterator[StillsState]:
    """The process's thumbnail grabber and its caches, closed on exit."""
    stills = Stills(
        storage,
        settings.videos_bucket,
        concurrency=settings.thumbnail_concurrency,
        cache_bytes=settings.thumbnail_cache_mb * 1024 * 1024,
    )
    try:
        share = Budgets.of(settings.read_cache_mb * 1024 * 1024).stills_clips // 2
        yield StillsState(
            stills,
            LRU(256, max_bytes=share, weigh=_clips_bytes),
            LRU(4096, max_bytes=share, weigh=clip_bytes),
        )
    finally:
        await stills.close()
