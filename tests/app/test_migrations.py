"""Alembic owns the schema; the Supabase compatibility migration only fills in what is missing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from app.migrate import downgrade, upgrade
from app.models import metadata
from tests.conftest import Servers

pytestmark = pytest.mark.integration


async def _fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query)
        return rows
    finally:
        await conn.close()


async def _public_tables(dsn: str) -> set[str]:
    return {
        r["tablename"] for r in await _fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname='public'")
    }


async def test_schema_has_the_tables_the_models_declare(servers: Servers):
    rows = await _fetch(
        servers.dsn, "SELECT tablename, rowsecurity FROM pg_tables WHERE schemaname = 'public'"
    )
    tables = {r["tablename"]: r["rowsecurity"] for r in rows}
    for name in metadata.tables:
        assert tables.get(name) is True, f"{name} missing or without RLS"


async def test_supabase_roles_and_auth_functions_exist(servers: Servers):
    roles = {r["rolname"] for r in await _fetch(servers.dsn, "SELECT rolname FROM pg_roles")}
    assert {"anon", "authenticated", "service_role"} <= roles
    functions = await _fetch(
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
    assert {
        r["tablename"] for r in await _fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname='public'")
    } >= set(metadata.tables)
    await asyncio.to_thread(downgrade, dsn, "base")
    remaining = {
        r["tablename"] for r in await _fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname='public'")
    }
    assert remaining == {"alembic_version"}
    await asyncio.to_thread(upgrade, dsn)


def test_migrations_refuse_to_run_without_their_url(monkeypatch):
    from app.settings import SettingsError

    monkeypatch.delenv("MIGRATIONS_DATABASE_URL", raising=False)
    with pytest.raises(SettingsError, match="MIGRATIONS_DATABASE_URL"):
        upgrade()
