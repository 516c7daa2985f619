"""The fast path (setting `FAST_PATH`, on by default): a layer under the aiohttp app
that answers warm scene documents on the connection itself, several times cheaper
than a trip through aiohttp's request machinery, and passes everything else to the
app unchanged and in order. `connection.py` is the connection and its runner;
`scenes.py` says what it may answer. With `FAST_PATH=off` the app runs on a plain
`AppRunner` and answers everything, with the same bytes (tests run both ways)."""

from origin.fastpath.connection import FastPathConnection, FastPathRunner

__all__ = ["FastPathConnection", "FastPathRunner"]
