"""The connection layer's hooks into aiohttp, checked against the installed aiohttp: an
upgrade that removes or changes one fails here, naming it, rather than as wrong
answers or connections that never close (origin/http/connection.py)."""

from __future__ import annotations

import inspect

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from origin.http.connection import NEVER, ConnectionServer, Runner

PIN = "pin aiohttp in pyproject.toml to a version that has it, or port origin/http/connection.py"


def test_runner_makes_its_server_through_make_server():
    hook = getattr(web.AppRunner, "_make_server", None)
    assert inspect.iscoroutinefunction(hook), (
        f"aiohttp {aiohttp.__version__}: AppRunner._make_server (private) is gone or no "
        f"longer a coroutine; connection.Runner overrides it to wrap each connection. {PIN}"
    )
    setup = inspect.getsource(web.AppRunner.setup) + inspect.getsource(
        web.AppRunner.__mro__[1].setup
    )
    assert "_make_server()" in setup, (
        f"aiohttp {aiohttp.__version__}: BaseRunner.setup no longer calls _make_server. {PIN}"
    )


def test_request_handler_idle_timer_is_due_keepalive_timeout_after_an_answer():
    """The runner gives aiohttp a keep-alive timeout of NEVER so that aiohttp never
    closes a connection the fast path is answering; the connection keeps time."""
    assert "keepalive_timeout" in inspect.signature(RequestHandler.__init__).parameters
    made = inspect.getsource(RequestHandler.connection_made)
    start = inspect.getsource(RequestHandler.start)
    for source in (made, start):
        assert "loop.time() +" in source and "keepalive_timeout" in source, (
            f"aiohttp {aiohttp.__version__}: RequestHandler no longer times idle "
            f"connections from its keepalive_timeout; NEVER ({NEVER:g} s) may not keep it "
            f"from closing connections the fast path answers. {PIN}"
        )


def test_access_logger_runs_after_each_answer():
    assert "log" in AbstractAccessLogger.__abstractmethods__
    finish = inspect.getsource(RequestHandler.finish_response)
    assert finish.index("write_eof") < finish.rindex("log_access"), (
        f"aiohttp {aiohttp.__version__}: the access logger is no longer called after an "
        f"answer's last byte; the fast path learns from it that aiohttp has answered. {PIN}"
    )
    params = inspect.signature(web.AppRunner.__init__).parameters
    assert "kwargs" in params  # access_log_class reaches web.Server through **kwargs


async def test_a_runner_serves_connections():
    from core.settings import Settings
    from origin import keys
    from origin.http.stats import FastPathAnswers, HttpStats

    app = web.Application()

    class Quiet(AbstractAccessLogger):
        def log(self, request, response, time):
            pass

    runner = Runner(app, warm_answer=lambda app: lambda *a: None, access_log_class=Quiet)
    app[keys.SETTINGS] = Settings()
    app[keys.FAST_PATH_ANSWERS] = FastPathAnswers("/v/{scene_id}/{name}")
    app[keys.HTTP_STATS] = HttpStats()
    await runner.setup()
    try:
        assert isinstance(runner.server, ConnectionServer)
        inner = runner.server._server
        for name in ("connections", "requests_count", "pre_shutdown", "shutdown"):
            assert hasattr(inner, name), (
                f"aiohttp {aiohttp.__version__}: web.Server.{name} is gone; ConnectionServer "
                f"stands in for web.Server and forwards it. {PIN}"
            )
    finally:
        await runner.cleanup()


def test_request_handler_waits_for_a_head_on_its_waiter():
    """origin/http/connection.py's header and keep-alive timeouts read `_waiter`
    (pending: aiohttp waits for the next request's head), with the fast path or not."""
    assert "_waiter" in RequestHandler.__slots__
    start = inspect.getsource(RequestHandler.start)
    assert "self._waiter = loop.create_future()" in start and "await self._waiter" in start, (
        f"aiohttp {aiohttp.__version__}: RequestHandler no longer waits for a request head "
        f"on `_waiter`; the header timeout (HEADER_TIMEOUT) cannot tell a slow head from "
        f"a request being handled. {PIN}"
    )
    assert "lingering_time" in inspect.signature(RequestHandler.__init__).parameters


def test_file_response_sends_its_body_through_sendfile():
    """origin/http/objects.py's SendfileResponse overrides `FileResponse._sendfile`
    (called with the head not yet sent) to keep sendfile(2) on uvloop."""
    from aiohttp import web_fileresponse

    prepare = inspect.getsource(web.FileResponse._prepare_open_file)
    assert "await self._sendfile(request, fobj, offset, count)" in prepare, (
        f"aiohttp {aiohttp.__version__}: FileResponse no longer sends its body through "
        f"_sendfile(request, fobj, offset, count). {PIN}"
    )
    sendfile = inspect.getsource(web.FileResponse._sendfile)
    assert "super().prepare(request)" in sendfile and "loop.sendfile(" in sendfile, (
        f"aiohttp {aiohttp.__version__}: FileResponse._sendfile no longer sends the head "
        f"itself before loop.sendfile. {PIN}"
    )
    assert isinstance(web_fileresponse.NOSENDFILE, bool)
