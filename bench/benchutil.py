"""Shared helpers of the benchmarks: waiting for a quiet machine, machine facts, result
files and plain-text tables. Not a benchmark itself."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
OUT = BENCH / "out"  # scratch (git-ignored): generated clips

#: Heavy work other engineers run on this machine: (pgrep flag, pattern).
HEAVY = (("-f", "pytest"), ("-x", "ffmpeg"))


def _own_tree() -> set[int]:
    """This process and its ancestors (a command line that mentions pytest is not load)."""
    pids = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        pids.add(pid)
    return pids


def _descends_from_us(pid: int) -> bool:
    """True for our own ffmpeg children (and their children)."""
    me = os.getpid()
    for _ in range(64):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == me:
            return True
        if pid <= 1:
            return False
    return False


def busy_processes() -> list[str]:
    """Other heavy processes now running: 'pid cmdline' for each (ours excluded)."""
    own = _own_tree()
    found: list[str] = []
    for flag, pattern in HEAVY:
        out = subprocess.run(["pgrep", flag, pattern], capture_output=True, text=True).stdout
        for line in out.split():
            pid = int(line)
            if pid in own or _descends_from_us(pid):
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found.append(f"{pid} {cmd.strip()[:120]}")
    return found


#: Total seconds one benchmark run may spend waiting for a quiet machine.
WAIT_BUDGET = 1200.0
_waited = 0.0


def wait_quiet(
    *, timeout: float = 1200.0, quiet_for: float = 5.0, poll: float = 1.0, log: bool = True
) -> dict[str, Any]:
    """Wait until, for `quiet_for` seconds, no pytest and no ffmpeg of anyone else runs
    and other processes use under 0.1 core; at most `timeout` seconds and at most what
    is left of WAIT_BUDGET for the whole run.
    Returns what happened (recorded in the results)."""
    global _waited
    if timeout <= 0:
        return {"quiet": None, "waited_s": 0.0}  # not checked (--no-wait)
    timeout = max(0.0, min(timeout, WAIT_BUDGET - _waited))
    started = time.monotonic()
    try:
        return _wait(started, timeout, quiet_for, poll, log)
    finally:
        _waited += time.monotonic() - started


def _wait(
    started: float, timeout: float, quiet_for: float, poll: float, log: bool
) -> dict[str, Any]:
    quiet_since: float | None = None
    announced = False
    last: list[str] = []
    while True:
        now = time.monotonic()
        last = busy_processes()
        cores = _others_cores(poll)
        if not last and cores > 0.1:
            last = [f"other processes used {cores:.2f} cores"]
        if last:
            quiet_since = None
            if log and not announced:
                print(
                    f"waiting for a quiet machine (up to {timeout / 60:.0f} min): "
                    + "; ".join(last[:3]),
                    file=sys.stderr,
                    flush=True,
                )
                announced = True
        elif quiet_since is None:
            quiet_since = now
        if quiet_since is not None and now - quiet_since >= quiet_for:
            return {"quiet": True, "waited_s": round(now - started, 1)}
        if now - started >= timeout:
            if log:
                print("machine still busy, measuring anyway: " + "; ".join(last[:3]), flush=True)
            return {"quiet": False, "waited_s": round(now - started, 1), "busy": last[:5]}


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, CPU ticks used so far, command name) of every process."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw.rsplit(")", 1)[1].split()
        # fields[1] = ppid, [11] = utime, [12] = stime (man 5 proc, counted after ')')
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), name)
    return table


def _ours(pid: int, table: dict[int, tuple[int, int, str]], roots: set[int]) -> bool:
    for _ in range(64):
        if pid in roots:
            return True
        if pid not in table or pid <= 2:
            return pid == 2  # kernel threads: not someone else's workload
        pid = table[pid][0]
    return False


def _others_cores(seconds: float) -> float:
    """Cores used by processes other than ours (and kernel threads) over `seconds`."""
    before = _proc_table()
    time.sleep(seconds)
    after = _proc_table()
    roots = {os.getpid()}
    ticks = sum(
        t - before[pid][1]
        for pid, (_, t, _) in after.items()
        if pid in before and t > before[pid][1] and not _ours(pid, after, roots)
    )
    return ticks / _CLK_TCK / seconds


class Monitor:
    """Watches the rest of the machine in a thread while a timed run goes on: other
    heavy processes by name (pytest, ffmpeg), and the CPU used by every process that
    is not ours (nor a kernel thread), in cores on average. `extra_pids` are processes
    of the run that are not our children (e.g. a daemonised PostgreSQL)."""

    def __init__(self, every: float = 2.0, extra_pids: set[int] | None = None) -> None:
        self.every = every
        self.samples = 0
        self.busy_samples = 0
        self.seen: list[str] = []
        self.others_ticks = 0
        self.others_top: dict[str, int] = {}
        self._roots = {os.getpid(), *(extra_pids or ())}
        self._last: dict[int, int] = {}
        self._started = 0.0
        self._elapsed = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _cpu_sample(self) -> None:
        table = _proc_table()
        for pid, (_, ticks, name) in table.items():
            before = self._last.get(pid)
            self._last[pid] = ticks
            if before is None or ticks <= before or _ours(pid, table, self._roots):
                continue
            self.others_ticks += ticks - before
            self.others_top[name] = self.others_top.get(name, 0) + ticks - before

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._cpu_sample()
            busy = busy_processes()
            self.samples += 1
            if busy:
                self.busy_samples += 1
                for b in busy:
                    if b not in self.seen and len(self.seen) < 5:
                        self.seen.append(b)

    def __enter__(self) -> Monitor:
        self._started = time.monotonic()
        self._cpu_sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._cpu_sample()
        self._elapsed = time.monotonic() - self._started

    @property
    def others_cores(self) -> float:
        return self.others_ticks / _CLK_TCK / self._elapsed if self._elapsed else 0.0

    @property
    def disturbed(self) -> bool:
        """Someone else's pytest/ffmpeg ran, or others used over 5% of a core."""
        return bool(self.busy_samples) or self.others_cores > 0.05

    def summary(self) -> dict[str, Any]:
        frac = self.busy_samples / self.samples if self.samples else 0.0
        top = sorted(self.others_top.items(), key=lambda kv: -kv[1])[:3]
        return {
            "busy_fraction": round(frac, 2),
            "busy_seen": self.seen,
            "others_cpu_cores": round(self.others_cores, 3),
            "others_top": {k: round(v / _CLK_TCK, 2) for k, v in top},
            "disturbed": self.disturbed,
        }


def first_line(cmd: Sequence[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (p.stdout or p.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "origin", "workers"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ffmpeg": first_line(["ffmpeg", "-hide_banner", "-version"]),
        "commit": commit + ("+dirty" if dirty else ""),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def cluster_pids(cluster: Any) -> set[int]:
    """A storyforge.dev.cluster's postmaster (daemonised: not our child), for Monitor."""
    first = (cluster.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
    return {int(first)} if first.isdigit() else set()
