"""The queue's demand as the scaler reads it: `liftoff.queue_demand()` as `liftoff_scaler`, on plain
PostgreSQL and on a database set up as Supabase sets one up, directly and through PgBouncer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.scaler.demand import ROLE, PostgresDemand
from app.scaler.policy import Demand
from app.settings import PoolMode
from tests.app.scaler.conftest import attempt_ended, emptied, jobs
from tests.conftest import truncate

pytestmark = pytest.mark.integration

FUNCTION = "liftoff.queue_demand()"
CALL = "SELECT * FROM liftoff.queue_demand()"


@pytest.fixture
async def clean(database: str) -> AsyncIterator[str]:
    """The database empty but for tenant A, and empty again afterwards."""
    async with emptied(database):
        yield database


@pytest.fixture
async def engine(clean: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(clean, pool_mode=PoolMode.NULL)
    yield engine
    await engine.dispose()


async def test_an_empty_queue_that_never_ran_anything(engine: AsyncEngine):
    assert await PostgresDemand(engine).read() == Demand(queued=0, running=0, idle_seconds=None)


async def test_it_counts_queued_and_running_jobs_and_nothing_else(clean: str, engine: AsyncEngine):
    await jobs(clean, "queued", "queued", "queued", "running", "running", "succeeded", "failed", "cancelled")
    demand = await PostgresDemand(engine).read()
    assert (demand.queued, demand.running, demand.work) == (3, 2, 5)


async def test_idle_seconds_run_from_the_last_attempts_end(clean: str, engine: AsyncEngine):
    old, recent = await jobs(clean, "succeeded", "failed")
    await attempt_ended(clean, old, 3_600)
    await attempt_ended(clean, recent, 120)
    demand = await PostgresDemand(engine).read()
    assert demand.idle_seconds is not None
    assert 120 <= demand.idle_seconds < 130


async def test_it_reads_through_a_transaction_mode_pooler(supabase, pooler):
    """Supabase's app reaches Postgres through Supavisor in transaction mode: SET LOCAL ROLE holds
    for the read's one transaction and leaves nothing on the server connection."""
    await truncate(supabase.dsn)
    dsn = pooler.dsn("postgres")
    engine = create_engine(dsn, pool_mode=PoolMode.QUEUE, pool_size=1, max_overflow=0)
    try:
        for _ in range(3):
            assert await PostgresDemand(engine).read() == Demand(0, 0, None)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT current_user"))).scalar() == "postgres"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role", "PUBLIC"])
async def test_the_api_roles_cannot_execute_it(database: str, role: str):
    conn = await asyncpg.connect(database)
    try:
        if role == "PUBLIC":
            # A role with no grant of its own holds what PUBLIC holds.
            assert not await conn.fetchval(
                "SELECT bool_or(acl.privilege_type = 'EXECUTE' AND acl.grantee = 0)"
                " FROM pg_proc p, aclexplode(p.proacl) acl WHERE p.oid = $1::regprocedure",
                FUNCTION,
            )
            return
        assert not await conn.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, FUNCTION)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(CALL)
    finally:
        await conn.close()


async def test_the_scaler_role_executes_it_and_reads_no_table(clean: str):
    conn = await asyncpg.connect(clean)
    try:
        assert await conn.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", ROLE, FUNCTION)
        assert not await conn.fetchval("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", ROLE)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {ROLE}")
            assert (await conn.fetchrow(CALL))["queued"] == 0
        for table in ("generations", "generation_logs", "organizations", "liftoff.tenant_limits"):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {ROLE}")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT count(*) FROM {table}")  # noqa: S608 (the names above)
    finally:
        await conn.close()
