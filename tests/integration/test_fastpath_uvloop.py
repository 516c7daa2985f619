"""The connection layer on uvloop, the loop `storyforge serve` runs (origin/server.py
`run`); the other tests run on asyncio's. Warm answers, requests passed to aiohttp
and the header timeout on one pipelined connection; LocalStorage files still go out
with sendfile(2) (origin/http/objects.py: uvloop has no `loop.sendfile`), whole, by
range and to a client that reads slowly."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from aiohttp.test_utils import TestClient

from core import layout
from core.storage import open_configured_storage
from origin.app import create_app
from origin.http import objects
from tests.helpers.scenes import TS_BYTES, published_scene
from tests.helpers.servers import OriginTestServer
from tests.helpers.wire import TO_AIOHTTP, Wire, get, same_answer


def on_uvloop(settings: Any, test: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with TestClient(OriginTestServer(create_app(settings))) as client:
            await test(client)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_connections_on_uvloop(settings):
    settings = dataclasses.replace(settings, header_timeout=0.5)

    async def test(client: TestClient) -> None:
        scene, (seg, _) = await published_scene(client, settings)
        playlist = f"/v/{scene}/720p.m3u8"
        wire = await Wire.open(client)
        wire.send(get(playlist, *TO_AIOHTTP))
        by_aiohttp = await wire.response()  # fills the caches
        wire.send(
            get(playlist)
            + get(f"/v/{scene}/{seg}/720p_0001.ts")
            + get(playlist)
            + get("/nowhere")
            + get(playlist, method="HEAD")
        )
        here = await wire.response()
        same_answer(by_aiohttp, here)
        status, _, body = await wire.response()
        assert (status, body) == (200, TS_BYTES)
        same_answer(by_aiohttp, await wire.response())
        assert (await wire.response())[0] == 404
        status, headers, body = await wire.response(head_only=True)
        assert (status, body) == (200, b"") and headers["content-length"] == str(len(here[2]))
        # a head that does not arrive whole in time: 408, then the connection closes
        wire.send(b"GET " + playlist.encode() + b" HTTP/1.1\r\nHost: o\r\n")
        status, headers, _ = await wire.response()
        assert status == 408 and headers["connection"] == "close"
        assert await wire.closed()
        wire.close()

    on_uvloop(settings, test)


def test_files_go_out_with_sendfile_on_uvloop(settings, monkeypatch):
    # larger than a socket's largest send buffer (net.ipv4.tcp_wmem: 4 MiB) and the
    # client's receive buffer together: the socket fills, sendfile must wait
    big = os.urandom(6 * 1024 * 1024 + 17)
    sent: list[int] = []

    async def counted(loop, transport, sock_fd, file_fd, offset, count):
        sent.append(count)
        await real(loop, transport, sock_fd, file_fd, offset, count)

    async def waited(loop, fd):
        waits.append(fd)
        await real_wait(loop, fd)

    real, real_wait, waits = objects.send_file, objects._writable, []
    monkeypatch.setattr(objects, "send_file", counted)
    monkeypatch.setattr(objects, "_writable", waited)

    async def test(client: TestClient) -> None:
        scene, (seg,) = await published_scene(client, settings, clips=1)
        path = f"/v/{scene}/{seg}/720p_0001.ts"
        storage = await open_configured_storage(settings)
        try:
            meta = layout.file_meta("720p_0001.ts")
            await storage.put(
                settings.videos_bucket,
                layout.segment_key(scene, seg, "720p_0001.ts"),
                big,
                content_type=meta.content_type,
                cache_control=meta.cache_control,
                tags={"type": meta.tag},
            )
        finally:
            await storage.aclose()
        # a client that reads slowly: the socket fills and sendfile waits for it
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        writer.write(get(path))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and f"{len(big)}".encode() in head
        await asyncio.sleep(0.3)
        got = bytearray()
        while len(got) < len(big):
            got += await asyncio.wait_for(reader.read(2**16), 10)
        assert bytes(got) == big
        assert waits, "sendfile never waited for the client"
        # the next request on the same connection is answered after the file
        writer.write(get(path, "Range: bytes=1000-1999"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206 ")
        assert f"bytes 1000-1999/{len(big)}".encode() in head
        assert await reader.readexactly(1000) == big[1000:2000]
        writer.close()
        r = await client.get(path)
        assert r.status == 200 and await r.read() == big

    on_uvloop(settings, test)
    assert sent == [len(big), 1000, len(big)]
