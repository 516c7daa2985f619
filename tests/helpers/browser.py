"""Headless Debian Chromium driven over the DevTools protocol (aiohttp websocket):
enough to load a page, evaluate JavaScript and wait for conditions in it."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM_REASON = "Debian's chromium is not installed (scripts/setup test installs it)"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
]


class Browser:
    """One Chromium process with one page; use `async with Browser() as b`."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile = tempfile.mkdtemp(prefix="storyforge-chromium-")
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self.console: list[str] = []

    async def __aenter__(self) -> Browser:
        assert CHROMIUM, NO_CHROMIUM_REASON
        self._proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port = await asyncio.to_thread(self._devtools_port)
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in await r.json() if t["type"] == "page"]
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Runtime.enable")
        await self.send("Page.enable")
        return self

    def _devtools_port(self) -> int:
        assert self._proc and self._proc.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline().decode(errors="replace")
            if "DevTools listening on ws://" in line:
                return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
            if not line and self._proc.poll() is not None:
                break
        raise RuntimeError("chromium did not start its DevTools endpoint")

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        msg_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = await asyncio.wait_for(self._ws.receive(), 60)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"devtools connection closed: {msg.type}")
            data = json.loads(msg.data)
            if data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value")) for a in data["params"]["args"]))
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", timeout=30)

    async def eval(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.eval(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        state = await self.eval(
            "JSON.stringify(window.sf && {fatal: sf.fatal, cc: sf.ccSeen, "
            "t: document.getElementById('video').currentTime, "
            "events: sf.events.slice(-15)})"
        )
        raise AssertionError(f"timed out waiting for {what or expression}: {state}")


async def open_player(b: Browser, url: str) -> None:
    """Load the demo player page and wait until hls.js has parsed the manifest."""
    await b.goto(url)
    await b.wait_for(
        "window.sf && sf.hls && sf.scene && sf.events.some(e => e.kind === 'manifest')",
        what="manifest parsed",
    )


async def play_to_end(b: Browser, timeout: float = 90) -> list[int]:
    """Play at twice the speed until `ended` (AssertionError on a fatal hls.js error);
    returns the discontinuity counters (frag.cc) seen on the way."""
    await b.eval(
        "(() => { const v = document.getElementById('video'); "
        "v.playbackRate = 2; return v.play().then(() => true); })()"
    )
    await b.wait_for(
        "sf.events.some(e => e.kind === 'ended') || sf.fatal", timeout=timeout, what="ended"
    )
    assert await b.eval("sf.fatal") is None
    seen: list[int] = await b.eval("sf.ccSeen")
    return seen
