"""Child processes of ours (ffprobe and ffmpeg, in the workers and in the origin's frame
grabs): each in its own process group, killed with the process that started it (Linux
``PR_SET_PDEATHSIG``, even when that process is SIGKILLed), killed on timeout or
cancellation, its output captured up to a bound."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
MAX_CAPTURE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: str


def _child_setup(parent: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when its parent dies (Linux), even by SIGKILL."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)

    return setup


async def spawn(cmd: Sequence[str], *, stdout: int) -> asyncio.subprocess.Process:
    """Start `cmd` (stdin closed, stderr piped) in a process group of its own."""
    return await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # own process group: killpg reaches every child
        preexec_fn=_child_setup(os.getpid()),
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
