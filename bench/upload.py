"""Upload benchmark (issue 18): tus in 5 MiB chunks beside the raw POST, same file.

In one run, on this machine: a private PostgreSQL cluster (storyforge.dev.cluster), the
origin as ``storyforge serve`` on LocalStorage (``--storage s3``: moto's S3 server over
HTTP, both on loopback), no worker (the transcode jobs the uploads create stay queued:
what is measured is the upload). A file of ``--mib`` MiB of random bytes is uploaded,
alternating which goes first, ``--rounds`` times each:

- ``raw``: ``POST /api/v1/scenes/{id}/segments``, the file streamed as one body;
- ``tus``: ``POST /api/v1/uploads`` then one ``PATCH`` per 5 MiB chunk (what
  tus-js-client does with ``chunkSize: 5 MiB``), one connection, until the final 204;
  each chunk is read whole, then handed to the socket in the pieces the raw POST's
  file goes in (256 KiB, see `pieces`).

Each time runs from the first byte sent to the answer that makes the upload a segment
and a job (202, or the last 204). The figure is the ratio of median throughputs
tus / raw (target >= 0.8).

Usage: ``.venv/bin/python bench/upload.py [--mib N] [--rounds N] [--storage local|s3]
[--no-wait]``. Writes ``bench/results/upload-{storage}.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import benchutil
from wake import TOKEN, _readyz, _scene  # the same cluster, origin and token

from core import db
from storyforge.dev.cluster import free_port, open_cluster

CHUNK = 5 * 1024 * 1024
PIECE = 256 * 1024  # what aiohttp's file payload reads and sends at a time (the raw POST)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def pieces(chunk: bytes) -> AsyncIterator[memoryview]:
    """A chunk handed to the socket in the pieces the raw POST's file goes in (aiohttp's
    file payload: 256 KiB). Given the 5 MiB `bytes` itself, aiohttp on Python < 3.12.9
    joins it to the request head first (`b"".join`: a 5 MiB copy, and the socket's
    buffer copies the rest again): about 3 ms of client time per PATCH before the
    server sees a byte, which the raw POST's streamed body never pays."""
    view = memoryview(chunk)
    for at in range(0, len(view), PIECE):
        yield view[at : at + PIECE]


async def raw(
    session: aiohttp.ClientSession, base: str, path: Path, scene: str, user: str
) -> float:
    with path.open("rb") as f:
        started = time.perf_counter()
        async with session.post(
            f"{base}/api/v1/scenes/{scene}/segments",
            params={"contributor": user},
            data=f,
            headers={**AUTH, "Content-Type": "video/mp4"},
        ) as r:
            assert r.status == 202, await r.text()
            return time.perf_counter() - started


async def tus(
    session: aiohttp.ClientSession, base: str, path: Path, scene: str, user: str
) -> float:
    size = path.stat().st_size
    tus_fields = {"Tus-Resumable": "1.0.0"}
    with path.open("rb") as f:
        started = time.perf_counter()
        async with session.post(
            f"{base}/api/v1/uploads",
            headers={
                **AUTH,
                **tus_fields,
                "Upload-Length": str(size),
                "Upload-Metadata": f"sceneId {b64(scene)},contributor {b64(user)}",
            },
        ) as r:
            assert r.status == 201, await r.text()
            url = base + r.headers["Location"]
        offset = 0
        while offset < size:
            chunk = f.read(CHUNK)
            async with session.patch(
                url,
                data=pieces(chunk),
                headers={
                    **tus_fields,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(len(chunk)),
                },
            ) as r:
                assert r.status == 204, await r.text()
                offset = int(r.headers["Upload-Offset"])
        assert "Location" in r.headers
        return time.perf_counter() - started


async def measure(base: str, path: Path, rounds: int) -> dict[str, Any]:
    size = path.stat().st_size
    times: dict[str, list[float]] = {"raw": [], "tus": []}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
        await _readyz(session, base)
        scene, user = await _scene(session, base)
        await tus(session, base, path, scene, user)  # warm-up, not counted
        await raw(session, base, path, scene, user)
        for n in range(rounds):
            order = ("raw", "tus") if n % 2 == 0 else ("tus", "raw")
            for kind in order:
                fn = raw if kind == "raw" else tus
                times[kind].append(await fn(session, base, path, scene, user))
    out: dict[str, Any] = {}
    for kind, seconds in times.items():
        median = statistics.median(seconds)
        out[kind] = {
            "seconds": [round(s, 4) for s in seconds],
            "median_s": round(median, 4),
            "mib_per_s": round(size / median / 2**20, 1),
        }
    out["ratio_tus_over_raw"] = round(out["tus"]["mib_per_s"] / out["raw"]["mib_per_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mib", type=int, default=200, help="file size in MiB (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="uploads of each kind (default 5)")
    parser.add_argument("--storage", choices=("local", "s3"), default="local")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    a = parser.parse_args(argv)

    quiet = benchutil.wait_quiet(timeout=0 if a.no_wait else 600)
    tmp = Path(tempfile.mkdtemp(prefix="sf-bench-upload-"))
    cluster = open_cluster(tmp / "pg")
    children: list[subprocess.Popen] = []
    try:
        cluster.init()
        cluster.start(fast=True)
        asyncio.run(db.migrate_dsn(cluster.dsn))
        path = tmp / "upload.bin"
        with path.open("wb") as f:
            for _ in range(a.mib):
                f.write(os.urandom(2**20))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": cluster.dsn,
            "STORAGE": a.storage,
            "STORAGE_ROOT": str(tmp / "storage"),
            "API_TOKENS": TOKEN,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "ACCESS_LOG": "off",
        }
        if a.storage == "s3":
            s3_port = free_port()
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            env |= {
                "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
                "S3_ACCESS_KEY_ID": "bench",
                "S3_SECRET_ACCESS_KEY": "bench",
            }
        with (tmp / "origin.log").open("wb") as log:
            children.append(
                subprocess.Popen(
                    [str(Path(sys.executable).parent / "storyforge"), "serve"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        base = f"http://127.0.0.1:{port}"
        print(f"{a.rounds} x {a.mib} MiB each way on {a.storage} ...", flush=True)
        with benchutil.Monitor(extra_pids=benchutil.cluster_pids(cluster)) as monitor:
            results = asyncio.run(measure(base, path, a.rounds))
        results["monitor"] = monitor.summary()
        results["disturbed"] = monitor.disturbed
    finally:
        for child in reversed(children):
            child.terminate()
            child.wait(10)
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    data = {
        "machine": benchutil.machine(),
        "quiet": quiet,
        "storage": a.storage,
        "mib": a.mib,
        "chunk_mib": CHUNK // 2**20,
        "rounds": a.rounds,
        **results,
    }
    result = benchutil.write_result(f"upload-{a.storage}", data)
    rows = [
        [kind, results[kind]["median_s"], results[kind]["mib_per_s"]] for kind in ("raw", "tus")
    ]
    print(f"\n{a.mib} MiB over loopback, {a.storage} storage, median of {a.rounds}\n")
    print(benchutil.table(["upload", "seconds", "MiB/s"], rows))
    print(
        f"\ntus / raw throughput: {results['ratio_tus_over_raw']}"
        f"  (disturbed: {'yes' if results['disturbed'] else 'no'})"
    )
    print(f"wrote {result.relative_to(benchutil.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
