"""A raw HTTP/1.1 connection for tests that look at the wire: exact heads, pipelining,
answers compared field by field."""

from __future__ import annotations

import asyncio


class Wire:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client) -> Wire:
        return cls(*await asyncio.open_connection(client.host, client.port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw.decode("latin-1").split("\r\n")[:-2]
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if not head_only and status not in (204, 304) and "content-length" in headers:
            body = await asyncio.wait_for(
                self.reader.readexactly(int(headers["content-length"])), 10
            )
        return status, headers, body

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), timeout) == b""
        except (ConnectionError, TimeoutError):
            return False

    def close(self) -> None:
        self.writer.close()


def get(path: str, *headers: str, method: str = "GET", host: str = "origin.test") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


VARY = {"date", "x-request-id"}  # differ between any two answers


def same_answer(a, b) -> None:
    (sa, ha, ba), (sb, hb, bb) = a, b
    assert sa == sb
    assert {k: v for k, v in ha.items() if k not in VARY} == {
        k: v for k, v in hb.items() if k not in VARY
    }
    assert ba == bb
    assert ha.keys() >= {"date", "x-request-id", "server"}


# a repeated field: the connection leaves such a request to aiohttp
TO_AIOHTTP = ("X-Twice: 1", "X-Twice: 2")
