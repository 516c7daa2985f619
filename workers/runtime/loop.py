"""The worker loop: claim jobs from the queue, run their handlers, record outcomes.

- A job is claimed (lease committed) before its handler starts; no transaction is
  held while a handler runs.
- Each running job has a heartbeat task extending its lease every lease/3 seconds
  and recording progress; when the heartbeat finds the lease lost, the handler is
  cancelled and the worker writes nothing more for that job. A handler that records
  its job's outcome in its own fenced transaction (a publish completes the job) has
  not lost it: the heartbeat stops and the handler finishes what follows the commit.
- Success -> `complete`; `PermanentError` -> `fail_permanent` (no retry); `Deferred`
  -> `defer` (queued again later, the attempt not counted); any other exception ->
  `retry_or_dead` with exponential backoff and full jitter.
  Status writes are shielded, so a cancellation during shutdown cannot lose them, and
  retried while the database is out of reach (`JobContext.retrying`: connection lost,
  server restarting; the pool reconnects) until they commit or the lease ends, so a
  database blip records the job's real outcome, not "lease expired". Handlers publish
  through `retrying` too.
- Temporary directories (`storyforge-{jobId}-*`, made by the handlers) of this
  database's jobs that no live worker holds are removed when a worker starts, with
  every re-queueing of expired leases, and when a job is claimed again: a SIGKILLed
  worker runs no cleanup. (Its ffmpeg children die with it: core/procs.py.)
- A job cancelled while it runs (its scene deleted, its clip removed) loses its
  lease like any other: once its handler has stopped, the worker `let_go`es of it,
  which tells the deleting job that nothing writes under the scene any more.
- Expired leases (of workers that died) are re-queued by every worker, periodically;
  the same pass prunes history past its retention (core/retention.py).
- An idle worker waits for new work: it claims as soon as a job of its kinds is
  queued (`workers.runtime.wakeup`: LISTEN/NOTIFY) and still polls every `poll_interval`
  (jobs whose retry backoff ends; while the listening connection is lost).
- On `stop`: no more claims; running jobs get `grace_seconds` to finish, then are
  cancelled and handed back (`release`: queued again, the attempt not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from core import queue
from core.backoff import backoff_seconds
from core.db import DatabaseError
from core.listen import wait_any
from core.queue import Conn, Job, LeaseLost, QueueError
from core.retention import Retention, maintain
from workers.runtime.metrics import JobStats, running_job
from workers.runtime.wakeup import listen_for_jobs

log = logging.getLogger("storyforge.worker")

T = TypeVar("T")

PROGRESS_MIN_INTERVAL = 1.0  # seconds between progress writes from JobContext.progress
CANCEL_WAIT_SECONDS = 10.0  # how long a cancelled handler gets to clean up (kill ffmpeg)
MAX_UNAVAILABLE_SLEEP = 30.0  # cap of the wait between claims while the database is down
RETRY_BASE = 0.25  # first wait of a write retried while the database is out of reach
RETRY_CAP = 5.0  # longest wait between two tries of such a write
LEASE_MARGIN = 1.0  # seconds before the lease ends when a retried write gives up
#: The temporary directory of a job's handler (`job_workdir`), named after its job.
WORKDIR = re.compile(r"^storyforge-(job_[a-z0-9]{12,32})-[a-z0-9_]+$")


class PermanentError(Exception):
    """The job can never succeed (bad input): fail it at once with this message."""


class Deferred(Exception):
    """The job's work continues later: queue it again in `delay` seconds with
    `payload` merged into its own (where it says how far it got)."""

    def __init__(self, delay: float, payload: Mapping[str, Any], why: str) -> None:
        super().__init__(why)
        self.delay = delay
        self.payload = payload


class RetryAfter(Exception):
    """Try the job again after `delay` seconds, the handler's own schedule (or `dead`
    when it has no attempts left), instead of the worker's backoff."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(eq=False)
class JobContext:
    """What a handler gets: its job, the pool, its lease, progress reporting."""

    job: Job
    pool: asyncpg.Pool
    worker: str
    lease_seconds: float
    _progress: float | None = field(default=None, repr=False)
    _written: float | None = field(default=None, repr=False)
    _last_write: float = field(default=float("-inf"), repr=False)
    _lease_lost: bool = field(default=False, repr=False)
    # the job's outcome is recorded, by a fenced write of this handler's
    _settled: bool = field(default=False, repr=False)
    # monotonic time our lease ends, as far as we know (claim or last heartbeat)
    _lease_until: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._lease_until = time.monotonic() + self.lease_seconds

    @property
    def lease_left(self) -> float:
        """Seconds until our lease ends unless a heartbeat extends it."""
        return self._lease_until - time.monotonic()

    @property
    def lease_token(self) -> str:
        assert self.job.lease_token is not None
        return self.job.lease_token

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def lease_lost(self) -> bool:
        return self._lease_lost

    async def progress(self, done: float) -> None:
        """Record progress: the fraction of the job done, clamped to [0, 1]
        (`queue.progress_fraction`). Writes are throttled; the heartbeat flushes the
        latest value. Raises LeaseLost when the job is no longer ours."""
        if self._lease_lost:
            raise LeaseLost(self.job.id, "progress")
        if self._settled:
            return
        self._progress = queue.progress_fraction(done)
        now = time.monotonic()
        if now - self._last_write < PROGRESS_MIN_INTERVAL and self._progress < 1.0:
            return
        self._last_write = now
        try:
            await self._beat()
        except QueueError as exc:  # the heartbeat will retry; the handler carries on
            log.warning(
                "job %s (%s): progress not recorded: %s",
                self.job.id,
                self.job.kind,
                exc,
                extra=_extra(self.job, self.worker),
            )
            return
        if self._lease_lost:
            raise LeaseLost(self.job.id, "progress")

    async def retrying(self, write: Callable[[], Awaitable[T]], what: str) -> T:
        """`write()` (a status write, a publishing transaction), tried again with backoff
        while the database is out of reach (`queue.unavailable`: the pool reconnects on
        the next try) until it commits or the lease is about to end; then, or on any
        other error, the error is raised. `write` must be safe to repeat: a fenced
        transaction is (it commits once, or raises LeaseLost)."""
        attempt = 0
        while True:
            try:
                return await write()
            except Exception as exc:
                attempt += 1
                if not queue.unavailable(exc):
                    raise
                delay = backoff_seconds(attempt, RETRY_BASE, RETRY_CAP)
                if self.lease_left - delay < LEASE_MARGIN:
                    raise
                log.warning(
                    "job %s (%s): %s: database out of reach, try %d again in %.2fs: %s",
                    self.job.id,
                    self.job.kind,
                    what,
                    attempt + 1,
                    delay,
                    exc,
                    extra=_extra(self.job, self.worker),
                )
                await asyncio.sleep(delay)

    async def fence(self, conn: Conn) -> None:
        """In the caller's transaction (e.g. the one that publishes a segment), lock
        this job's row if it is still ours; raises LeaseLost otherwise."""
        await queue.lock_lease(conn, self.job.id, self.lease_token)

    async def _beat(self) -> bool:
        done = self._progress
        sent = time.monotonic()
        owned = await queue.heartbeat(
            self.pool,
            self.job.id,
            self.lease_token,
            lease_seconds=self.lease_seconds,
            progress=done if done != self._written else None,
        )
        if owned:
            self._written = done
            self._lease_until = sent + self.lease_seconds
        elif await _finished_by_us(self) is not None:
            # No longer running because this handler's own fenced transaction recorded
            # the outcome (a publish completes the job): nothing is lost, and nothing
            # is left to extend. The handler carries on with what follows the commit.
            self._settled = True
            owned = True
        else:
            self._lease_lost = True
        return owned


Handler = Callable[[JobContext], Awaitable[None]]


def _extra(job: Job, worker: str, **more: Any) -> dict[str, Any]:
    return {"job_id": job.id, "kind": job.kind, "attempt": job.attempts, "worker": worker, **more}


async def _shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Run a status write to completion even if we are cancelled meanwhile; the
    cancellation is re-raised once the write is done."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


@contextlib.asynccontextmanager
async def job_workdir(job: Job) -> AsyncIterator[Path]:
    """A job handler's temporary directory (named so `sweep_workdirs` can tell whose it
    is), removed on the way out in a thread: removing a large directory can take a
    while, and the event loop also runs the heartbeats of this worker's other jobs."""
    path = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"storyforge-{job.id}-"))
    try:
        yield path
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, path, True))


def workdir_jobs(names: Iterable[str]) -> dict[str, str]:
    """Job temporary directory name -> its job id, for the names that are one."""
    found = {}
    for name in names:
        m = WORKDIR.match(name)
        if m:
            found[name] = m.group(1)
    return found


def _remove_dirs(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


async def sweep_workdirs(pool: asyncpg.Pool, name: str, root: Path | None = None) -> list[Path]:
    """Remove the temporary directories under `root` (the system's temporary directory)
    of this database's jobs that no worker holds (their worker was SIGKILLed, or the
    machine restarted). Returns them."""
    base = Path(root or tempfile.gettempdir())
    try:
        entries = await asyncio.to_thread(lambda: [p.name for p in base.iterdir() if p.is_dir()])
    except OSError as exc:
        log.warning("worker %s: cannot list %s: %s", name, base, exc)
        return []
    dirs = workdir_jobs(entries)
    if not dirs:
        return []
    free = await queue.unheld(pool, sorted(set(dirs.values())))
    stale = [base / d for d, job_id in sorted(dirs.items()) if job_id in free]
    await asyncio.to_thread(_remove_dirs, stale)
    for path in stale:
        log.info("worker %s: removed %s (its job is held by no worker)", name, path)
    return stale


async def _remove_earlier_workdirs(job: Job, name: str) -> None:
    """We hold `job` now: a directory of an earlier attempt of it is nobody's."""
    base = Path(tempfile.gettempdir())
    try:
        entries = await asyncio.to_thread(
            lambda: [p for p in base.glob(f"storyforge-{job.id}-*") if p.is_dir()]
        )
    except OSError:
        return
    stale = [p for p in entries if WORKDIR.match(p.name)]
    await asyncio.to_thread(_remove_dirs, stale)
    for path in stale:
        log.info("job %s (%s): removed %s of an earlier attempt", job.id, job.kind, path)


@dataclass
class _Options:
    name: str
    lease_seconds: float
    backoff_base: float
    backoff_cap: float
    rng: random.Random
    stats: JobStats


async def run_worker(
    pool: asyncpg.Pool,
    handlers: Mapping[str, Handler],
    *,
    concurrency: int = 1,
    lease_seconds: float = 60,
    poll_interval: float = 1.0,
    grace_seconds: float = 30,
    stop: asyncio.Event,
    name: str,
    reap_interval: float | None = None,
    backoff_base: float = 2.0,
    backoff_cap: float = 300.0,
    listen: bool = True,
    stats: JobStats | None = None,
    retention: Retention | None = None,
    on_dead: queue.OnDead | None = None,
) -> None:
    """Claim and run jobs of the kinds in `handlers` until `stop` is set.

    Runs at most `concurrency` jobs at once. Returns once every job it started has
    finished or been handed back. Cancelling the call itself hands running jobs
    back at once (no grace). With `listen`, one connection of `pool` is held to
    LISTEN for new jobs, so an idle worker claims them at once instead of at its
    next poll; without, it only polls. `stats` collects the figures of the worker's
    /metrics (workers/runtime/metrics.py). With `retention`, the reaper also prunes
    history past it and folds the status counts (core/retention.py) on each pass.
    `on_dead` runs for each job whose lost lease made it dead, in the reaper's
    transaction (`queue.requeue_expired`).
    """
    if not handlers:
        log.warning("worker %s has no handlers: it will only re-queue expired leases", name)
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if lease_seconds <= 0 or poll_interval <= 0 or grace_seconds < 0:
        raise ValueError("lease_seconds and poll_interval must be > 0, grace_seconds >= 0")
    kinds = sorted(handlers)
    opts = _Options(
        name,
        float(lease_seconds),
        backoff_base,
        backoff_cap,
        random.Random(),
        stats if stats is not None else JobStats(),
    )
    if reap_interval is None:
        reap_interval = max(poll_interval, min(lease_seconds / 2, 30.0))
    slots = asyncio.Semaphore(concurrency)
    running: dict[asyncio.Task[None], Job] = {}
    unavailable_sleep = poll_interval
    grace = float(grace_seconds)

    def _done(t: asyncio.Task[None]) -> None:
        running.pop(t, None)
        slots.release()

    log.info(
        "worker %s started: kinds=%s concurrency=%d lease=%.1fs",
        name,
        ",".join(kinds),
        concurrency,
        lease_seconds,
        extra={"worker": name},
    )
    try:
        await sweep_workdirs(pool, name)
    except QueueError as exc:
        log.warning("worker %s: temporary directories not swept: %s", name, exc)
    reaper = asyncio.create_task(
        _reaper(pool, name, reap_interval, stop, retention, on_dead), name=f"reaper {name}"
    )
    due = asyncio.Event()  # set when a job of our kinds may have become due
    listener = (
        asyncio.create_task(
            listen_for_jobs(pool, frozenset(kinds), due, stop, name=name, rng=opts.rng),
            name=f"listen {name}",
        )
        if listen and kinds
        else None
    )
    try:
        while not stop.is_set():
            if not await _acquire_or_stop(slots, stop):
                break
            job: Job | None = None
            try:
                due.clear()  # a job queued from now on sets it again
                job = await _claim_shielded(pool, kinds, opts)
                unavailable_sleep = poll_interval
            except QueueError as exc:
                slots.release()
                log.warning(
                    "worker %s: job queue error, retrying in %.1fs: %s",
                    name,
                    unavailable_sleep,
                    exc,
                    extra={"worker": name},
                )
                await wait_any(unavailable_sleep, stop)
                unavailable_sleep = min(unavailable_sleep * 2, MAX_UNAVAILABLE_SLEEP)
                continue
            except BaseException:
                slots.release()
                raise
            if job is None:
                slots.release()
                await wait_any(poll_interval, stop, due)  # the poll, or woken
                continue
            task = asyncio.create_task(
                _run_job(pool, handlers[job.kind], job, opts), name=f"job {job.kind} {job.id}"
            )
            running[task] = job
            task.add_done_callback(_done)
    except asyncio.CancelledError:
        grace = 0.0
        raise
    finally:
        reaper.cancel()
        if listener is not None:
            listener.cancel()
        await _shutdown(running, grace, name)
        for helper in (reaper, listener):
            if helper is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        log.info("worker %s stopped", name, extra={"worker": name})


async def _acquire_or_stop(slots: asyncio.Semaphore, stop: asyncio.Event) -> bool:
    """Wait for a free slot; False (and no slot held) if `stop` is set first."""
    if stop.is_set():
        return False
    acquire = asyncio.ensure_future(slots.acquire())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
    got = acquire.done() and not acquire.cancelled() and acquire.exception() is None
    if got and stop.is_set():
        slots.release()
        return False
    return got


async def _reaper(
    pool: asyncpg.Pool,
    name: str,
    interval: float,
    stop: asyncio.Event,
    retention: Retention | None = None,
    on_dead: queue.OnDead | None = None,
) -> None:
    """Re-queue jobs whose lease expired (their worker died) and remove temporary
    directories no worker holds (a dead worker's on this machine), every `interval`;
    with `retention`, prune history and fold the status counts too."""
    while not stop.is_set():
        try:
            await _reap(pool, name, on_dead)
            await sweep_workdirs(pool, name)
        except QueueError as exc:
            log.warning("worker %s: re-queueing expired leases failed: %s", name, exc)
        if retention is not None:
            await _maintain(pool, name, retention)
        await wait_any(interval, stop)


async def _maintain(pool: asyncpg.Pool, name: str, retention: Retention) -> None:
    try:
        pruned = await maintain(pool, retention)
    except (asyncpg.PostgresError, DatabaseError, OSError) as exc:
        log.warning("worker %s: pruning history failed: %s", name, exc)
        return
    if any(pruned.values()):
        log.info(
            "worker %s: pruned %s",
            name,
            ", ".join(f"{n} {what}" for what, n in pruned.items()),
            extra={"worker": name, **{f"pruned_{k}": v for k, v in pruned.items()}},
        )


async def _reap(pool: asyncpg.Pool, name: str, on_dead: queue.OnDead | None = None) -> None:
    for job in await queue.requeue_expired(pool, on_dead):
        log.warning(
            "job %s (%s): lease expired (worker %s lost), now %s",
            job.id,
            job.kind,
            job.worker,
            job.status,
            extra=_extra(job, name, lost_worker=job.worker, status=job.status),
        )


async def _claim_shielded(pool: asyncpg.Pool, kinds: list[str], opts: _Options) -> Job | None:
    """Claim one job; if we are cancelled while the claim is in flight, the claim
    still completes and a job it got is handed straight back."""
    task = asyncio.ensure_future(
        queue.claim(pool, kinds, worker=opts.name, lease_seconds=opts.lease_seconds)
    )
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            job = await task
            if job is not None and job.lease_token is not None:
                await queue.release(pool, job.id, job.lease_token)
        raise


async def _heartbeat(ctx: JobContext, work: asyncio.Task[None], name: str) -> None:
    """Extend the lease every third of it. A beat that failed (the database out of
    reach) is tried again after a short backoff, not a whole interval later, so one
    failed write does not cost two thirds of the lease."""
    interval = ctx.lease_seconds / 3
    failed = 0
    while True:
        delay = interval if not failed else backoff_seconds(failed, RETRY_BASE, interval / 2)
        await asyncio.sleep(delay)
        try:
            owned = await ctx._beat()
        except QueueError as exc:
            failed += 1
            log.warning(
                "job %s (%s): heartbeat failed: %s",
                ctx.job.id,
                ctx.job.kind,
                exc,
                extra=_extra(ctx.job, name),
            )
            continue
        failed = 0
        if ctx._settled:
            return
        if not owned:
            log.warning(
                "job %s (%s): lease lost, cancelling the handler",
                ctx.job.id,
                ctx.job.kind,
                extra=_extra(ctx.job, name),
            )
            work.cancel()
            return


async def _run_job(pool: asyncpg.Pool, handler: Handler, job: Job, opts: _Options) -> None:
    name = opts.name
    ctx = JobContext(job=job, pool=pool, worker=name, lease_seconds=opts.lease_seconds)
    log.info(
        "job %s (%s): started, attempt %d/%d",
        job.id,
        job.kind,
        job.attempts,
        job.max_attempts,
        extra=_extra(job, name),
    )
    started = time.monotonic()
    await _remove_earlier_workdirs(job, name)
    opts.stats.running += 1
    running_job(opts.stats, job.kind)  # this task's context: the handler's runs count here

    async def call() -> None:
        await handler(ctx)

    work = asyncio.create_task(call(), name=f"handler {job.kind} {job.id}")
    beat = asyncio.create_task(_heartbeat(ctx, work, name), name=f"heartbeat {job.id}")
    try:
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:
            # Shutdown past the grace period: stop the handler, hand the job back.
            work.cancel()
            await asyncio.wait({work}, timeout=CANCEL_WAIT_SECONDS)
            beat.cancel()
            if work.done() and not work.cancelled() and work.exception() is None:
                await _record(ctx, work, started, opts)  # it finished after all
            else:
                await _hand_back(ctx, name)
                opts.stats.finished(job.kind, "released", time.monotonic() - started)
            raise
        beat.cancel()
        await _record(ctx, work, started, opts)
    finally:
        opts.stats.running -= 1
        beat.cancel()
        if not work.done():
            work.cancel()


async def _hand_back(ctx: JobContext, name: str) -> None:
    job = ctx.job
    try:
        await _shielded(queue.release(ctx.pool, job.id, ctx.lease_token))
    except LeaseLost:
        log.warning(
            "job %s (%s): cancelled at shutdown; lease already lost",
            job.id,
            job.kind,
            extra=_extra(job, name),
        )
    except QueueError as exc:
        log.error(
            "job %s (%s): could not hand back (its lease will expire): %s",
            job.id,
            job.kind,
            exc,
            extra=_extra(job, name),
        )
    else:
        log.info(
            "job %s (%s): handed back at shutdown",
            job.id,
            job.kind,
            extra=_extra(job, name, outcome="released"),
        )


async def _record(
    ctx: JobContext, work: asyncio.Task[None], started: float, opts: _Options
) -> None:
    """Write the outcome of a finished handler (shielded) and count it (/metrics)."""
    elapsed = round(time.monotonic() - started, 3)
    outcome = await _record_outcome(ctx, work, elapsed, opts)
    opts.stats.finished(ctx.job.kind, outcome, elapsed)


async def _record_outcome(
    ctx: JobContext, work: asyncio.Task[None], elapsed: float, opts: _Options
) -> str:
    """Write the outcome of a finished handler; returns it as /metrics names it."""
    job, name, pool = ctx.job, opts.name, ctx.pool
    outcome = "lease_lost"
    if work.cancelled():
        if ctx.lease_lost:
            await _lost(ctx, name, elapsed, "abandoned, lease lost")
            return outcome
        exc: BaseException | None = RuntimeError("handler was cancelled")
    else:
        exc = work.exception()
    try:
        # A LeaseLost from a publish whose commit went through though its connection was
        # lost before the answer came back: its retry found the job finished by us.
        finished = await _finished_by_us(ctx) if isinstance(exc, LeaseLost) else None
        if exc is None or finished is not None:
            outcome = "succeeded"
            try:
                if finished is not None:
                    outcome = finished.status
                else:
                    await _shielded(
                        ctx.retrying(
                            lambda: queue.complete(pool, job.id, ctx.lease_token), "complete"
                        )
                    )
            except LeaseLost:
                # The handler may have recorded the job's outcome itself in its own
                # fenced transaction (a publish completes it, a webhook that gives up
                # buries it); otherwise the job was taken from us.
                current = await _finished_by_us(ctx)
                if current is None:
                    raise
                outcome = current.status
            log.info(
                "job %s (%s): %s in %.3fs",
                job.id,
                job.kind,
                outcome,
                elapsed,
                extra=_extra(job, name, outcome=outcome, seconds=elapsed),
            )
        elif isinstance(exc, LeaseLost):
            await _lost(ctx, name, elapsed, f"abandoned, lease lost: {exc}")
        elif isinstance(exc, Deferred):
            outcome = "deferred"
            deferred = exc
            await _shielded(
                ctx.retrying(
                    lambda: queue.defer(
                        pool,
                        job.id,
                        ctx.lease_token,
                        delay=deferred.delay,
                        payload=deferred.payload,
                    ),
                    "defer",
                )
            )
            log.info(
                "job %s (%s): continues in %.1fs: %s",
                job.id,
                job.kind,
                exc.delay,
                exc,
                extra=_extra(job, name, outcome="deferred", seconds=elapsed),
            )
        elif isinstance(exc, PermanentError):
            outcome = "failed"
            reason = str(exc) or type(exc).__name__
            await _shielded(
                ctx.retrying(
                    lambda: queue.fail_permanent(pool, job.id, ctx.lease_token, reason), "fail"
                )
            )
            log.error(
                "job %s (%s): failed permanently: %s",
                job.id,
                job.kind,
                reason,
                extra=_extra(job, name, outcome="failed", seconds=elapsed, error=reason),
            )
        else:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, RetryAfter):
                message, delay = str(exc), exc.delay
            else:
                delay = backoff_seconds(job.attempts, opts.backoff_base, opts.backoff_cap, opts.rng)
            after = await _shielded(
                ctx.retrying(
                    lambda: queue.retry_or_dead(
                        pool, job.id, ctx.lease_token, message, backoff=delay
                    ),
                    "record the error",
                )
            )
            outcome = "dead" if after.status == "dead" else "retried"
            if after.status == "dead":
                log.error(
                    "job %s (%s): dead after %d attempts: %s",
                    job.id,
                    job.kind,
                    after.attempts,
                    message,
                    exc_info=exc,
                    extra=_extra(job, name, outcome="dead", seconds=elapsed, error=message),
                )
            else:
                log.warning(
                    "job %s (%s): attempt %d failed, retry in %.1fs: %s",
                    job.id,
                    job.kind,
                    job.attempts,
                    delay,
                    message,
                    exc_info=exc,
                    extra=_extra(job, name, outcome="retry", seconds=elapsed, error=message),
                )
    except LeaseLost:
        outcome = "lease_lost"
        await _lost(ctx, name, elapsed, "outcome not recorded, lease lost")
    except QueueError as exc:
        outcome = "unrecorded"
        log.error(
            "job %s (%s): outcome not recorded (its lease will expire and it will rerun): %s",
            job.id,
            job.kind,
            exc,
            extra=_extra(job, name, outcome="unrecorded", seconds=elapsed),
        )
    return outcome


async def _finished_by_us(ctx: JobContext) -> Job | None:
    """The job, if it is finished (succeeded, failed, dead) and we were the last to
    claim it: its outcome was committed by a write of ours (a handler's publish, or
    a status write whose answer was lost with its connection)."""
    try:
        current = await ctx.retrying(lambda: queue.get_job(ctx.pool, ctx.job.id), "read back")
    except QueueError:
        return None
    if current is None or current.status not in ("succeeded", "failed", "dead"):
        return None
    return current if current.worker == ctx.worker else None


async def _lost(ctx: JobContext, name: str, elapsed: float, what: str) -> None:
    """Our handler is done with a job whose lease we lost: say `what` happened, then
    `_let_go`."""
    job = ctx.job
    log.warning(
        "job %s (%s): %s",
        job.id,
        job.kind,
        what,
        extra=_extra(job, name, outcome="lease_lost", seconds=elapsed),
    )
    await _let_go(ctx)


async def _let_go(ctx: JobContext) -> None:
    """The handler of a job we lost has stopped: if the job was cancelled, give its
    lease up (a job taken over by another worker is left alone). Best effort: an
    unrecorded let-go only makes the deleting job wait for the lease to expire."""
    try:
        if await _shielded(queue.let_go(ctx.pool, ctx.job.id, ctx.lease_token)):
            log.info(
                "job %s (%s): cancelled; let go",
                ctx.job.id,
                ctx.job.kind,
                extra=_extra(ctx.job, ctx.worker, outcome="cancelled"),
            )
    except QueueError as exc:
        log.warning("job %s (%s): could not let go: %s", ctx.job.id, ctx.job.kind, exc)


async def _shutdown(running: dict[asyncio.Task[None], Job], grace: float, name: str) -> None:
    """Wait up to `grace` seconds for running jobs, then cancel the rest (each
    cancelled job hands itself back). A cancellation arriving meanwhile skips the
    rest of the grace period but not the hand-back; it is re-raised at the end."""
    tasks = set(running)
    if not tasks:
        return
    log.info(
        "worker %s: waiting up to %.1fs for %d running job(s)",
        name,
        grace,
        len(tasks),
        extra={"worker": name},
    )
    interrupted = False
    if grace > 0:
        try:
            await asyncio.wait(tasks, timeout=grace)  # never cancels the jobs themselves
        except asyncio.CancelledError:
            interrupted = True
    late = [t for t in tasks if not t.done()]
    for t in late:
        t.cancel()
    while late:
        try:
            await asyncio.wait(late)
        except asyncio.CancelledError:
            interrupted = True
        late = [t for t in late if not t.done()]
    if interrupted:
        raise asyncio.CancelledError
