"""Child processes (ffprobe, ffmpeg) run from asyncio: each in its own process group,
killed with its parent (Linux ``PR_SET_PDEATHSIG``), killed on timeout or
cancellation, its output captured up to a bound. The workers run every clip's ffmpeg
through here; the origin runs the short, bounded re-mux of a scene's voice anchor
(origin/assets.py)."""

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
from typing import Any

_PR_SET_PDEATHSIG = 1
MAX_CAPTURE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str


@cache
def _libc() -> Any:
    # loaded in the parent: the child between fork and exec only calls prctl
    return ctypes.CDLL(None, use_errno=True)


def _child_setup(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when its parent dies (Linux), even by SIGKILL."""
    libc = _libc() if sys.platform.startswith("linux") else None

    def setup() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


async def spawn(
    cmd: Sequence[str], *, stdout: int, stdin: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """Start `cmd` without a shell; stdin is /dev/null unless given, stderr a pipe."""
    return await asyncio.create_subprocess_exec(
        *cmd,
        stdin=stdin,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # own process group: killpg reaches every child
        preexec_fn=_child_setup(os.getpid()),
    )


async def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group and reap it (shielded from cancellation)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await asyncio.shield(proc.wait())


async def _read_all(stream: asyncio.StreamReader | None, limit: int = MAX_CAPTURE) -> bytes:
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
    """Run a short command (ffprobe, SPS extraction, a re-mux) to completion; kill it on
    timeout. Raises TimeoutError after killing the process group."""
    proc = await spawn(cmd, stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(timeout):
            out, err = await asyncio.gather(_read_all(proc.stdout), _read_all(proc.stderr))
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
    stderr = asyncio.create_task(_read_all(proc.stderr))
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
