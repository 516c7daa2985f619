"""Every migration applied to an empty database; idempotence; edited files refused;
concurrent runs serialise."""

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from core import db

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_are_the_top_level_package():
    """Migrations live in the top-level migrations/ package (DESIGN.md, Layout), shipped
    as its package data; no other directory of the tree holds a migration."""
    assert db.MIGRATIONS_DIR == ROOT / "migrations"
    stray = [
        p
        for p in ROOT.glob("*/**/[0-9][0-9][0-9][0-9]_*.sql")
        if p.parent != ROOT / "migrations" and ".venv" not in p.parts
    ]
    assert stray == []


async def test_applies_every_migration_to_an_empty_database(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        applied = await db.migrate(conn)
        assert applied == [m.name for m in db.load_migrations()]
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert {"users", "scenes", "segments", "renditions", "jobs", "exports"} <= tables
        indexes = {
            r["indexname"]: r["indexdef"]
            for r in await conn.fetch("SELECT indexname, indexdef FROM pg_indexes")
        }
        assert "UNIQUE" in indexes["jobs_dedupe_in_flight"]
        assert "WHERE" in indexes["jobs_dedupe_in_flight"]
        assert "segments_scene_sequence" in indexes
        assert "jobs_claimable" in indexes and "jobs_leases" in indexes
        assert "segments_ready_by_scene" in indexes
        cols = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name='jobs'"
            )
        }
        assert {"lease_token", "lease_expires_at", "dedupe_key", "attempts", "errors"} <= cols
        # a second run is a no-op
        assert await db.migrate(conn) == []
    finally:
        await conn.close()


async def test_constraints_hold(fresh_db):
    conn = await asyncpg.connect(fresh_db)
    try:
        await db.migrate(conn)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO scenes (id, title) VALUES ('scn_../../x', 't')")
        await conn.execute(
            "INSERT INTO jobs (id, kind, dedupe_key) VALUES ('job_000000000001', 'transcode', 'k')"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO jobs (id, kind, dedupe_key) VALUES ('job_000000000002', 'transcode', 'k')"
            )
        await conn.execute("UPDATE jobs SET status='failed' WHERE id='job_000000000001'")
        await conn.execute(
            "INSERT INTO jobs (id, kind, dedupe_key) VALUES ('job_000000000002', 'transcode', 'k')"
        )
    finally:
        await conn.close()


async def test_edited_migration_is_refused(fresh_db, tmp_path):
    migdir = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, migdir)
    conn = await asyncpg.connect(fresh_db)
    try:
        await db.migrate(conn, migdir)
        first = sorted(migdir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(db.MigrationError, match="edited after it was applied"):
            await db.migrate(conn, migdir)
    finally:
        await conn.close()


async def test_no_migration_files_is_refused_before_touching_the_database(fresh_db, tmp_path):
    conn = await asyncpg.connect(fresh_db)
    try:
        with pytest.raises(db.MigrationError, match="no migration files found"):
            await db.migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'") == 0
    finally:
        await conn.close()


async def test_migration_unknown_to_this_version_is_refused(fresh_db, tmp_path):
    migdir = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, migdir)
    (migdir / "9999_from_the_future.sql").write_text("CREATE TABLE future (id int);")
    conn = await asyncpg.connect(fresh_db)
    try:
        await db.migrate(conn, migdir)
        with pytest.raises(db.MigrationError, match="does not know: 9999_from_the_future.sql"):
            await db.migrate(conn)
    finally:
        await conn.close()


async def test_concurrent_runs_are_safe(fresh_db):
    conns = [await asyncpg.connect(fresh_db) for _ in range(3)]
    try:
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
        applied = [name for r in results for name in r]
        assert sorted(applied) == [m.name for m in db.load_migrations()]
    finally:
        for c in conns:
            await c.close()


async def test_unreachable_database_is_one_readable_error():
    with pytest.raises(db.DatabaseError, match="cannot connect to the database"):
        await db.migrate_dsn("postgresql://nobody:secret@127.0.0.1:1/none")
