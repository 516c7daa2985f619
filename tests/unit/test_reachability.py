"""core/db.py: what counts as "the database is unreachable", and outages tracked
with one log line at each end and one connection attempt per probe interval."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from core.db import Reachability, is_connection_error


@pytest.mark.parametrize(
    ("exc", "connecting", "expected"),
    [
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), False, True),
        (asyncpg.CannotConnectNowError("the database system is shutting down"), True, True),
        (asyncpg.AdminShutdownError("terminating connection"), False, True),
        (asyncpg.TooManyConnectionsError("too many clients"), True, True),
        (asyncpg.InterfaceError("connection is closed"), False, True),
        (
            asyncpg.exceptions.InternalClientError("another operation (2) is in progress"),
            False,
            True,
        ),
        (ConnectionRefusedError(111, "Connect call failed"), True, True),
        (TimeoutError(), True, True),
        (ConnectionRefusedError(111, "refused"), False, False),  # in a block: not ours
        (asyncpg.UniqueViolationError("duplicate key"), False, False),
        (asyncpg.InterfaceError("cannot perform operation: another operation"), False, False),
        (ValueError("x"), True, False),
    ],
)
def test_connection_errors(exc, connecting, expected):
    assert is_connection_error(exc, connecting=connecting) is expected


def test_outage_logged_once_at_each_end_and_probed_once_per_interval(caplog):
    caplog.set_level(logging.WARNING, "storyforge.db")
    now = [100.0]
    r = Reachability(probe_seconds=1.0, clock=lambda: now[0])
    assert r.reachable and r.may_try()
    for _ in range(3):
        r.failed(ConnectionRefusedError(111, "refused"))
    assert not r.reachable and r.outages == 1
    assert r.waiting() and not r.may_try()  # within the probe interval: told at once
    now[0] = 101.0
    assert not r.waiting()  # a probe is due
    assert r.may_try()  # one probe ...
    assert not r.may_try()  # ... and only one
    assert "ConnectionRefusedError" in str(r.unavailable())
    now[0] = 104.0
    r.succeeded()
    r.succeeded()
    assert r.reachable and r.may_try() and not r.waiting()
    messages = [rec.getMessage() for rec in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("database unreachable")
    assert messages[1] == "database reachable again after 4.0 s"
