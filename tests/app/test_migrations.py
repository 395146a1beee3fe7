"""Alembic owns the schema; the Supabase compatibility migration only fills in what is missing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from app.migrate import alembic_config, downgrade, upgrade
from app.models import metadata
from tests.conftest import Servers, fetch

LOCK_KEY = 0x6C6966746F6666  # app/migrations/env.py's (env.py runs as a script, not a module)

pytestmark = pytest.mark.integration


async def _public_tables(dsn: str) -> set[str]:
    return {
        r["tablename"] for r in await fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname='public'")
    }


async def test_schema_has_the_tables_the_models_declare(servers: Servers):
    rows = await fetch(
        servers.dsn, "SELECT tablename, rowsecurity FROM pg_tables WHERE schemaname = 'public'"
    )
    tables = {r["tablename"]: r["rowsecurity"] for r in rows}
    for name in metadata.tables:
        assert tables.get(name) is True, f"{name} missing or without RLS"


async def test_supabase_roles_and_auth_functions_exist(servers: Servers):
    roles = {r["rolname"] for r in await fetch(servers.dsn, "SELECT rolname FROM pg_roles")}
    assert {"anon", "authenticated", "service_role"} <= roles
    functions = await fetch(
        servers.dsn,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'auth'",
    )
    assert {"uid", "jwt"} <= {f["proname"] for f in functions}


async def test_compat_migration_keeps_existing_definitions(servers: Servers):
    """On Supabase auth.uid() already exists; the migration must not replace it."""
    conn = await asyncpg.connect(servers.dsn)
    try:
        original = await conn.fetchval("SELECT pg_get_functiondef('auth.uid()'::regprocedure)")
        await conn.execute("COMMENT ON FUNCTION auth.uid() IS 'provided by the platform'")
    finally:
        await conn.close()
    # Alembic's env runs its own event loop, so it gets a thread of its own here.
    await asyncio.to_thread(downgrade, servers.dsn, "base")
    await asyncio.to_thread(upgrade, servers.dsn, "head")
    conn = await asyncpg.connect(servers.dsn)
    try:
        assert (
            await conn.fetchval("SELECT obj_description('auth.uid()'::regprocedure)")
            == "provided by the platform"
        )
        assert await conn.fetchval("SELECT pg_get_functiondef('auth.uid()'::regprocedure)") == original
    finally:
        await conn.close()


async def test_fresh_database_migrates_up_and_down(servers: Servers):
    conn = await asyncpg.connect(servers.dsn)
    try:
        await conn.execute("DROP DATABASE IF EXISTS migrate_roundtrip")
        await conn.execute("CREATE DATABASE migrate_roundtrip")
    finally:
        await conn.close()
    dsn = servers.postgres.dsn("migrate_roundtrip")
    await asyncio.to_thread(upgrade, dsn)
    assert await _public_tables(dsn) >= set(metadata.tables)
    await asyncio.to_thread(downgrade, dsn, "base")
    remaining = await _public_tables(dsn)
    assert remaining == {"alembic_version"}
    await asyncio.to_thread(upgrade, dsn)


def test_migrations_refuse_to_run_without_their_url(monkeypatch):
    from app.settings import SettingsError

    monkeypatch.delenv("MIGRATIONS_DATABASE_URL", raising=False)
    with pytest.raises(SettingsError, match="MIGRATIONS_DATABASE_URL"):
        upgrade()


async def _fresh_database(servers: Servers, name: str) -> str:
    conn = await asyncpg.connect(servers.dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return servers.postgres.dsn(name)


def _migrate_in_a_process(dsn: str, repo_root: Path) -> subprocess.Popen[str]:
    """`python -m app migrate`'s upgrade in a process of its own, as each Cloud Run execution is."""
    code = "import sys; from app.migrate import upgrade; upgrade(sys.argv[1])"
    return subprocess.Popen(
        [sys.executable, "-c", code, dsn],
        cwd=repo_root,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _waiting_for_the_lock(conn: asyncpg.Connection, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted"
    while await conn.fetchval(query, LOCK_KEY & 0xFFFFFFFF) < count:
        assert time.monotonic() < deadline, f"fewer than {count} runs ever waited for the lock"
        await asyncio.sleep(0.1)


async def test_two_concurrent_runs_take_turns_and_migrate_once(servers: Servers, repo_root: Path):
    """A retried deploy may start a migrations execution while another still runs."""
    dsn = await _fresh_database(servers, "migrate_concurrent")
    holder = await asyncpg.connect(dsn)
    try:
        # Both runs start while the lock is held, so both are certainly running at once.
        holder_tx = holder.transaction()
        await holder_tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        runs = [_migrate_in_a_process(dsn, repo_root) for _ in range(2)]
        await _waiting_for_the_lock(holder, 2)
        assert await _public_tables(dsn) == set(), "nothing migrated while the lock was held"
        await holder_tx.rollback()
        outputs = [await asyncio.to_thread(run.communicate, timeout=120) for run in runs]
    finally:
        await holder.close()
    assert [run.returncode for run in runs] == [0, 0], outputs
    heads = await fetch(dsn, "SELECT version_num FROM alembic_version")
    assert [r["version_num"] for r in heads] == [_head()]
    assert await _public_tables(dsn) >= set(metadata.tables) | {"alembic_version"}


async def test_a_run_that_waits_too_long_stops_with_a_clear_error(servers: Servers):
    dsn = await _fresh_database(servers, "migrate_lock_wait")
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            config = alembic_config(dsn)
            config.attributes["lock_wait_seconds"] = 0.5
            started = time.monotonic()
            with pytest.raises(Exception, match="another migration run held the migrations lock for 0.5s"):
                await asyncio.to_thread(command.upgrade, config, "head")
            assert time.monotonic() - started < 30
    finally:
        await holder.close()
    assert await _public_tables(dsn) == set(), "the waiting run changed nothing"
    # Once the lock is free, the same run goes through.
    await asyncio.to_thread(upgrade, dsn)
    assert await _public_tables(dsn) >= set(metadata.tables)


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head
