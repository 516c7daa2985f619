"""The connection pool (core/db.py) against the real server: a released connection
goes back without asyncpg's reset query (one round trip per pooled query, not two),
and still clean: what a holder left open is rolled back."""

from __future__ import annotations

import asyncpg

from core import db


async def test_a_pooled_query_is_one_statement_and_leaves_nothing_open(settings):
    pool = await db.connect_pool(settings.database_url, size=1)
    watcher = await asyncpg.connect(settings.database_url)
    try:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        assert await pool.fetchval("SELECT 'one round trip'") == "one round trip"
        last, state = await watcher.fetchrow(
            "SELECT query, state FROM pg_stat_activity WHERE pid = $1", pid
        )
        assert (last, state) == ("SELECT 'one round trip'", "idle")  # nothing ran after it

        async with pool.acquire() as conn:  # a transaction its holder never ends
            await conn.execute("BEGIN")
            await conn.execute("SELECT 1")
        assert await pool.fetchval("SELECT pg_backend_pid()") == pid
        state = await watcher.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
        assert state == "idle"  # not "idle in transaction": asyncpg rolled it back
    finally:
        await watcher.close()
        await pool.close()
