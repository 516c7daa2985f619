"""The job loop's pure parts: which temporary directories are jobs', and which database
errors are worth waiting out (core/queue.py's boundary)."""

from __future__ import annotations

import asyncpg
import pytest

from core import queue
from workers.runtime.loop import workdir_jobs


def test_workdir_names_name_their_job() -> None:
    names = [
        "storyforge-job_5k2w9x0c7d3m1q8r-abc_12x9",  # tempfile.TemporaryDirectory's suffix
        "storyforge-job_5k2w9x0c7d3m1q8r",  # no suffix: not one of ours
        "storyforge-voice-x1y2z3",  # the origin's voice re-mux, not a job
        "storyforge-pg-123",
        "storyforge-job_SHOUT0c7d3m1q8r-abc",  # not an id
        "other-job_5k2w9x0c7d3m1q8r-abc",
    ]
    assert workdir_jobs(names) == {
        "storyforge-job_5k2w9x0c7d3m1q8r-abc_12x9": "job_5k2w9x0c7d3m1q8r"
    }


@pytest.mark.parametrize(
    ("exc", "wait"),
    [
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),  # 57P01
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), True),  # 53300
        (asyncpg.InterfaceError("connection is closed"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError(), True),
        (
            asyncpg.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            ),
            True,
        ),
        (queue.QueueUnavailable("job queue unavailable (claim)"), True),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
        (asyncpg.exceptions.UndefinedTableError("relation does not exist"), False),
        (
            asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
            False,
        ),
        (queue.QueueError("job queue error"), False),
        (ValueError("bad"), False),
    ],
)
def test_which_database_errors_are_waited_out(exc: BaseException, wait: bool) -> None:
    assert queue.unavailable(exc) is wait
