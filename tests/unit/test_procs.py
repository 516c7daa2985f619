"""Child processes: their own session, and a lower CPU priority that holds against
processes of other sessions (the autogroup gets the nice value too)."""

from __future__ import annotations

import asyncio
import os
import sys

from core import procs

REPORT = (
    "import os, pathlib; "
    "p = pathlib.Path('/proc/self/autogroup'); "
    "print(os.nice(0), os.getsid(0) == os.getpid(), p.read_text().split()[-1] if p.exists() else '-')"
)


async def _report(niceness: int) -> list[str]:
    proc = await procs.spawn(
        [sys.executable, "-c", REPORT], stdout=asyncio.subprocess.PIPE, niceness=niceness
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out.decode().split()


async def test_a_child_runs_in_its_own_session_at_normal_priority() -> None:
    nice, leader, group = await _report(0)
    assert (nice, leader) == (str(os.nice(0)), "True")
    assert group in ("-", "0")  # a new session's autogroup starts at nice 0


async def test_a_niced_child_and_its_autogroup_get_the_niceness() -> None:
    for _ in range(5):  # the kernel allows one autogroup change per 100 ms host-wide
        nice, leader, group = await _report(19)
        assert (nice, leader) == ("19", "True")
        if group in ("19", "-"):
            return
        await asyncio.sleep(0.15)
    raise AssertionError(f"the child's autogroup has nice {group}, not 19")
