"""PostgreSQL access: the connection pool, schema migrations (`migrations/*.sql`), the
named queries of `sql/*.sql` (both package data, found through importlib.resources), and
conversion of driver errors into our own at this boundary: the origin's pool turns "the
database cannot be reached" into `Unavailable` and tracks outages (`Reachability`: one
log line when one starts and one when it ends, at most one connection attempt per
`PROBE_SECONDS` meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext

log = logging.getLogger("storyforge.db")
MIGRATIONS_DIR = resources.files("migrations")
SQL_DIR = resources.files("core") / "sql"
_MIGRATION_LOCK = 0x5F0_0001  # pg_advisory_lock key shared by every `migrate` run
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class DatabaseError(Exception):
    """The database could not do what was asked (unreachable, refused, broken)."""


class MigrationError(DatabaseError):
    pass


class Unavailable(DatabaseError):
    """The database cannot be reached now (refused, shutting down, connection lost)."""


PROBE_SECONDS = 1.0  # while the database is down, one connection attempt per this long


def is_connection_error(exc: BaseException, *, connecting: bool = False) -> bool:
    """Whether `exc` means the server or our connection to it is gone (SQLSTATE class
    08 connection exception, 57 operator intervention: shutting down, starting up; 53300
    too many connections), not that a statement failed. While `connecting`, socket
    errors and timeouts count too (inside a block they may come from anything else)."""
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.TooManyConnectionsError,
    ):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "closing" in str(exc)
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # a connection handed out between the server's FATAL at shutdown and its EOF
        return "another operation" in str(exc)
    return connecting and isinstance(exc, OSError | TimeoutError)


class Reachability:
    """Whether the database answered last time: outages start at the first failed
    connection and end at the first one that works, each logged once. While down, only
    one caller per `probe_seconds` tries to connect; the others are told at once."""

    def __init__(
        self, probe_seconds: float = PROBE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.probe_seconds = probe_seconds
        self._clock = clock
        self.down_since: float | None = None
        self.outages = 0  # outages begun since the process started (for /metrics)
        self._next_probe = 0.0
        self.last_error = ""

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    def waiting(self) -> bool:
        """Down, and the next connection attempt is not due yet (no side effect)."""
        return self.down_since is not None and self._clock() < self._next_probe

    def may_try(self) -> bool:
        if self.down_since is None:
            return True
        now = self._clock()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.probe_seconds
        return True

    def failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        now = self._clock()
        self._next_probe = now + self.probe_seconds
        if self.down_since is None:
            self.down_since = now
            self.outages += 1
            log.warning("database unreachable (%s); answering from the read caches", exc)

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.warning("database reachable again after %.1f s", self._clock() - self.down_since)
            self.down_since = None

    def unavailable(self) -> Unavailable:
        return Unavailable(f"the database is unreachable ({self.last_error or 'unknown'})")


class _GuardedAcquire:
    """`OutagePool.acquire()`: asyncpg's acquire context whose connection failures
    become `Unavailable` and are recorded in the pool's `Reachability`."""

    __slots__ = ("_inner", "_reach")

    def __init__(self, inner: PoolAcquireContext, reach: Reachability) -> None:
        self._inner = inner
        self._reach = reach

    async def __aenter__(self) -> asyncpg.Connection:
        if not self._reach.may_try():
            raise self._reach.unavailable()
        try:
            conn = await self._inner.__aenter__()
        except Exception as exc:
            if not is_connection_error(exc, connecting=True):
                raise
            self._reach.failed(exc)
            raise self._reach.unavailable() from exc
        self._reach.succeeded()
        return conn

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self.__aenter__().__await__()  # `await pool.acquire()`: release it yourself

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        conn = self._inner.connection
        lost = exc is not None and is_connection_error(exc)
        if conn is not None and (lost or isinstance(exc, asyncio.CancelledError)):
            # lost, or cancelled (a timeout, say) perhaps mid-statement: asyncpg would
            # wait for the server to confirm the cancel before reuse, which a hung server
            # never does; a closed connection is released at once and replaced later
            conn.terminate()
        await self._inner.__aexit__(None, None, None)
        if lost:  # in the middle of the block
            raise Unavailable(f"the database connection was lost ({exc})") from exc


class OutagePool(asyncpg.Pool):
    """asyncpg's pool whose `acquire` (and so `fetch`, `execute`, ...) raises
    `Unavailable` instead of driver and socket errors when the database is down."""

    __slots__ = ("reachability",)

    def acquire(self, *, timeout: float | None = None) -> _GuardedAcquire:  # type: ignore[override]
        return _GuardedAcquire(PoolAcquireContext(self, timeout), self.reachability)


@cache
def queries() -> dict[str, str]:
    """Named SQL from `sql/*.sql`: blocks introduced by `-- name: NAME`."""
    out: dict[str, str] = {}
    for path in _sql_files(SQL_DIR):
        name: str | None = None
        lines: list[str] = []
        for line in [*path.read_text().splitlines(), "-- name: _end"]:
            m = re.match(r"^--\s*name:\s*([a-z0-9_]+)\s*$", line)
            if not m:
                if name is not None:
                    lines.append(line)
                continue
            if name is not None:
                if name in out:
                    raise ValueError(f"query {name!r} defined twice ({path.name})")
                out[name] = "\n".join(lines).strip()
            name, lines = m.group(1), []
    return out


def q(name: str) -> str:
    return queries()[name]


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection needs no reset query: nothing here leaves session state
    behind (no SET, no session advisory lock but `migrate`'s, which unlocks; LISTEN
    undone by its owner, `listen.listening`), and asyncpg itself still rolls back an
    open transaction and drops listener callbacks. Its default reset (`SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) would cost a round
    trip on every release, that is on every `pool.fetch*`."""


async def connect_pool(
    dsn: str,
    *,
    size: int = 10,
    connect_timeout: float = 10.0,
    reachability: Reachability | None = None,
) -> asyncpg.Pool:
    """Open a pool, converting driver/OS errors into one readable DatabaseError. With
    `reachability` (the origin), an `OutagePool`: connection failures later on raise
    `Unavailable` and are recorded there."""
    options: dict[str, Any] = {
        "min_size": 1,
        "max_size": size,
        "timeout": connect_timeout,
        "command_timeout": 60,
        "reset": _keep_session,
    }
    try:
        if reachability is None:
            pool = await asyncpg.create_pool(dsn, **options)
        else:
            guarded = OutagePool(
                dsn,
                connection_class=asyncpg.Connection,
                record_class=asyncpg.Record,
                max_queries=50_000,  # create_pool's defaults (asyncpg >= 0.29)
                loop=None,
                setup=None,
                init=None,
                max_inactive_connection_lifetime=300.0,
                **options,
            )
            guarded.reachability = reachability
            pool = await guarded
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseError(f"cannot connect to the database ({_redact(dsn)}): {exc}") from exc
    assert pool is not None
    return pool


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _sql_files(directory: Traversable) -> list[Traversable]:
    if not directory.is_dir():
        return []
    return sorted(
        (p for p in directory.iterdir() if p.name.endswith(".sql") and p.is_file()),
        key=lambda p: p.name,
    )


def load_migrations(directory: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; none at all is an incomplete installation."""
    found: list[Migration] = []
    for path in _sql_files(directory):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(m.group(1), path.name, path.read_text()))
    if not found:
        raise MigrationError(f"no migration files found in {directory}: incomplete installation")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


async def migrate(conn: asyncpg.Connection, directory: Traversable = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in order, each in its own transaction.

    Runs under a session advisory lock, so concurrent `migrate` runs serialise and
    the second finds nothing to do. Refuses to run when an applied file changed or
    when the database holds migrations these files do not include (applied by a
    newer version). Returns the names applied.
    """
    migrations = load_migrations(directory)
    known_versions = {m.version for m in migrations}
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            r["version"]: r
            for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        unknown = sorted(
            row["name"] for version, row in applied.items() if version not in known_versions
        )
        if unknown:
            raise MigrationError(
                "the database holds migrations this version does not know: "
                f"{', '.join(unknown)} (applied by a newer version?)"
            )
        for m in migrations:
            row = applied.get(m.version)
            if row is not None and row["checksum"] != m.checksum:
                raise MigrationError(
                    f"migration {m.name} was edited after it was applied "
                    "(checksum mismatch); add a new migration instead"
                )
        done: list[str] = []
        for m in migrations:
            if m.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            done.append(m.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


async def migrate_dsn(dsn: str) -> list[str]:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseError(f"cannot connect to the database ({_redact(dsn)}): {exc}") from exc
    try:
        return await migrate(conn)
    except asyncpg.PostgresError as exc:
        raise MigrationError(f"migration failed: {exc}") from exc
    finally:
        await conn.close()
