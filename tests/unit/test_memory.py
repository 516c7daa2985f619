"""core/memory.py (issue 29): with glibc's dynamic mmap threshold, a megabyte buffer
freed once makes the next ones come from the heap arenas, where the export's
buffers left free pages resident and the worker's RSS crept by every export. Fixed,
they are mapped (and unmapped when freed) whatever was freed before. Both processes
fix it at start-up."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from core import memory
from core.settings import Settings

# in a fresh interpreter: free a 4 MiB block (mmapped, so glibc's dynamic threshold
# rises to 4 MiB), then allocate 1 MiB and print how many more bytes are mmapped
PROBE = """
import ctypes
{setup}
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
info = ctypes.CDLL(None).mallinfo2
info.restype = Info
first = bytearray(4 << 20)
del first
before = info().hblkhd
again = bytearray(1 << 20)
print(info().hblkhd - before)
"""


def _mapped_after_free(setup: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True
    )
    if "mallinfo2" in done.stderr:
        pytest.skip("not glibc >= 2.33 (no mallinfo2)")
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_fixed_threshold_keeps_megabyte_buffers_out_of_the_heap():
    assert _mapped_after_free("") == 0  # glibc's default: from the heap (what crept)
    fixed = _mapped_after_free("from core import memory; assert memory.fix_mmap_threshold()")
    assert fixed >= 1 << 20


@pytest.mark.parametrize("process", ["worker", "origin"])
def test_both_processes_fix_it_first(process, monkeypatch):
    called: list[int] = []
    monkeypatch.setattr(memory, "fix_mmap_threshold", lambda: called.append(1) or True)

    class Stop(Exception):
        pass

    if process == "worker":
        from workers.runtime import main

        async def refuse(*args, **kwargs):
            raise Stop

        monkeypatch.setattr(main.db, "connect_pool", refuse)
        with pytest.raises(Stop):
            asyncio.run(main.run(Settings(), concurrency=1, grace=0))
    else:
        from origin import server

        def refuse(*args, **kwargs):
            raise Stop

        monkeypatch.setattr(server, "serve", refuse)
        with pytest.raises(Stop):
            server.run(None, "127.0.0.1", 0)  # type: ignore[arg-type]
    assert called == [1]
