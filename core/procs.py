"""Child processes of ours (ffprobe and ffmpeg, in the workers and in the origin's frame
grabs): each in its own session and process group, killed with the process that started
it (Linux ``PR_SET_PDEATHSIG``, even when that process is SIGKILLed), killed on timeout
or cancellation, its output captured up to a bound, optionally at a lower CPU priority."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache

_PR_SET_PDEATHSIG = 1
MAX_CAPTURE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str


@cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent: the child between fork and exec
    only calls it (a dlopen there could wait forever on a lock another thread of the
    parent held at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def _child_setup(parent: int, niceness: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when its parent dies (Linux), even by SIGKILL;
    lower its priority by `niceness` (see `spawn`)."""
    prctl = _prctl()
    autogroup = str(niceness).encode()

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        if niceness:
            os.nice(niceness)
            # Best effort (no such file without CONFIG_SCHED_AUTOGROUP; the kernel may
            # refuse with EAGAIN, at most one change per 100 ms host-wide).
            with contextlib.suppress(OSError):
                fd = os.open("/proc/self/autogroup", os.O_WRONLY)
                try:
                    os.write(fd, autogroup)
                finally:
                    os.close(fd)

    return setup


async def spawn(
    cmd: Sequence[str],
    *,
    stdout: int,
    stdin: int = asyncio.subprocess.DEVNULL,
    niceness: int = 0,
) -> asyncio.subprocess.Process:
    """Start `cmd` (stdin /dev/null unless given, stderr piped) in a session and process
    group of its own, `niceness` (0-19) below normal CPU priority.

    A new session is also a new scheduler autogroup on Linux hosts that have them
    (``kernel.sched_autogroup_enabled``, tasks in the root cpu cgroup): autogroups share
    the CPU equally whatever the nice values of their tasks, so a niced ffmpeg alone in
    its session would still take half of the CPU from a transcode in another session.
    Its autogroup gets the same nice value (sched(7), "The autogroup feature")."""
    return await asyncio.create_subprocess_exec(
        *cmd,
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # own process group: killpg reaches every child
        preexec_fn=_child_setup(os.getpid(), niceness),
    )


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group of `proc` (if still running) and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await asyncio.shield(proc.wait())


async def read_all(stream: asyncio.StreamReader | None, limit: int = MAX_CAPTURE) -> bytes:
    """Everything `stream` yields, keeping at most `limit` bytes (the rest is drained)."""
    if stream is None:
        return b""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        if size < limit:
            chunks.append(chunk[: limit - size])
        size += len(chunk)
    return b"".join(chunks)


async def run_capture(cmd: Sequence[str], *, timeout: float) -> Completed:
    """Run a short command (ffprobe, a measurement, a frame grab) to completion; kill it
    on timeout or cancellation.

    Raises TimeoutError after killing the process group.
    """
    proc = await spawn(cmd, stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await asyncio.gather(read_all(proc.stdout), read_all(proc.stderr))
            rc = await proc.wait()
    except BaseException:
        await kill(proc)
        raise
    return Completed(rc, out, err.decode("utf-8", "replace"))


async def run_fed(
    cmd: Sequence[str],
    feed: Callable[[asyncio.StreamWriter], Awaitable[None]],
    *,
    timeout: float,
) -> Completed:
    """Run a command whose standard input `feed` writes (stdin is closed after it);
    stderr is kept (bounded). If the command exits early (its stdin breaks), feeding
    stops and its exit status and stderr tell why. On timeout (TimeoutError), an error
    from `feed` or cancellation, the process group is killed first."""
    proc = await spawn(cmd, stdout=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    stderr = asyncio.create_task(read_all(proc.stderr))
    try:
        async with asyncio.timeout(timeout):
            try:
                await feed(proc.stdin)
                proc.stdin.close()
                await proc.stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it stopped reading: its exit status says why
            rc = await proc.wait()
            err = await stderr
    except BaseException:
        await kill(proc)
        stderr.cancel()
        await asyncio.gather(stderr, return_exceptions=True)
        raise
    return Completed(rc, b"", err.decode("utf-8", "replace"))
