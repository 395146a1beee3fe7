"""Engines safe behind Supabase's transaction-mode pooler (Supavisor, port 6543)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool, QueuePool

from app.core.db import async_url, create_engine, pooler_safe_connect_args
from app.settings import PoolMode
from tests.conftest import Servers

POOLER = "postgresql://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres?sslmode=require"


@pytest.mark.unit
@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg", "postgresql+asyncpg"])
def test_any_postgres_scheme_gets_the_asyncpg_driver(scheme):
    url = async_url(f"{scheme}://u:p@h:6543/db")
    assert url.drivername == "postgresql+asyncpg"


@pytest.mark.unit
def test_libpq_sslmode_becomes_asyncpg_ssl():
    url = async_url(POOLER)
    assert url.query["ssl"] == "require"
    assert "sslmode" not in url.query


@pytest.mark.unit
def test_non_postgres_dsn_is_refused():
    with pytest.raises(ValueError, match="not a Postgres DSN"):
        async_url("mysql://u:p@h/db")


@pytest.mark.unit
async def test_null_pool_engine_caches_no_server_side_statements():
    engine = create_engine(POOLER, pool_mode=PoolMode.NULL)
    try:
        assert isinstance(engine.pool, NullPool)
        _, dialect_args = engine.dialect.create_connect_args(engine.url)
        assert dialect_args["prepared_statement_cache_size"] == 0
    finally:
        await engine.dispose()


@pytest.mark.unit
async def test_session_connections_cache_prepared_statements():
    engine = create_engine(
        "postgresql://u:p@db:5432/postgres", pool_mode=PoolMode.QUEUE, transaction_pooler=False
    )
    try:
        _, dialect_args = engine.dialect.create_connect_args(engine.url)
        assert "prepared_statement_cache_size" not in dialect_args
    finally:
        await engine.dispose()


@pytest.mark.unit
def test_connect_args_disable_asyncpg_caching_and_prepare_only_the_unnamed_statement():
    args = pooler_safe_connect_args(5.0, "liftoff-api")
    assert args["statement_cache_size"] == 0
    assert {args["prepared_statement_name_func"]() for _ in range(3)} == {""}


@pytest.mark.unit
async def test_queue_pool_pings_before_use():
    engine = create_engine("postgresql://u:p@localhost/db", pool_mode=PoolMode.QUEUE, pool_size=3)
    try:
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.size() == 3
        assert engine.pool._pre_ping
    finally:
        await engine.dispose()


@pytest.mark.integration
async def test_no_statement_is_prepared_by_name(servers: Servers):
    """Behind a transaction pooler a named statement would stay on whichever server connection
    parsed it: every statement is the unnamed one, which the next one replaces."""
    engine = create_engine(servers.dsn, pool_mode=PoolMode.QUEUE, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            for n in range(3):
                assert await conn.scalar(text("SELECT CAST(:n AS int) + 1"), {"n": n}) == n + 1
            ids = [uuid.uuid4()]
            assert await conn.scalar(text("SELECT cardinality(CAST(:ids AS uuid[]))"), {"ids": ids}) == 1
            names = list((await conn.execute(text("SELECT name FROM pg_prepared_statements"))).scalars())
        assert names == []
    finally:
        await engine.dispose()
