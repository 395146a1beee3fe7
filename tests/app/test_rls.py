"""Row Level Security: isolation holds in the database itself, whatever a query forgets, on plain
PostgreSQL and on a database set up as Supabase sets one up."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import ORG_A, ORG_B, USER_A, USER_B, truncate

pytestmark = pytest.mark.integration


INSERT_JOB = "INSERT INTO generations (organization_id, created_by, prompt, model) VALUES ($1, $2, 'p', 'm')"


def claims(org: uuid.UUID, user: uuid.UUID) -> str:
    return json.dumps(
        {"sub": str(user), "role": "authenticated", "app_metadata": {"organization_id": str(org)}}
    )


@pytest.fixture
async def seeded(database: str) -> AsyncIterator[uuid.UUID]:
    """A job of tenant A, inserted with the owner's privileges."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO organizations (id) VALUES ($1), ($2)", ORG_A, ORG_B)
        job_id = await conn.fetchval(
            "INSERT INTO generations (organization_id, created_by, prompt, model)"
            " VALUES ($1, $2, 'p', 'm') RETURNING id",
            ORG_A,
            USER_A,
        )
        await conn.execute(
            "INSERT INTO generation_logs"
            " (generation_id, organization_id, attempt, status, provider, started_at)"
            " VALUES ($1, $2, 1, 'succeeded', 'local', now())",
            job_id,
            ORG_A,
        )
        await conn.execute(
            "INSERT INTO organization_members (organization_id, user_id) VALUES ($1, $2)", ORG_A, USER_A
        )
    finally:
        await conn.close()
    yield job_id
    await truncate(database)


async def as_authenticated(dsn: str, org: uuid.UUID, user: uuid.UUID) -> asyncpg.Connection:
    """A raw session as Supabase's `authenticated` role carrying these claims."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("SET ROLE authenticated")
    await conn.execute("SELECT set_config('request.jwt.claims', $1, false)", claims(org, user))
    return conn


async def test_other_tenant_sees_zero_rows_without_any_where_clause(database: str, seeded):
    conn = await as_authenticated(database, ORG_B, USER_B)
    try:
        for table in ("generations", "generation_logs", "organization_members"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table  # noqa: S608
        # Its own organization row, and nothing of tenant A's.
        assert [r["id"] for r in await conn.fetch("SELECT id FROM organizations")] == [ORG_B]
    finally:
        await conn.close()


async def test_own_tenant_sees_its_rows(database: str, seeded):
    conn = await as_authenticated(database, ORG_A, USER_A)
    try:
        assert await conn.fetchval("SELECT count(*) FROM generations") == 1
        assert await conn.fetchval("SELECT count(*) FROM generation_logs") == 1
        assert await conn.fetchval("SELECT count(*) FROM organizations") == 1
        assert await conn.fetchval("SELECT count(*) FROM organization_members") == 1
    finally:
        await conn.close()


async def test_other_tenant_cannot_insert_into_a_tenant_not_its_own(database: str, seeded):
    conn = await as_authenticated(database, ORG_B, USER_B)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                INSERT_JOB,
                ORG_A,
                USER_B,
            )
    finally:
        await conn.close()


async def test_cannot_insert_on_behalf_of_another_user(database: str, seeded):
    conn = await as_authenticated(database, ORG_A, USER_B)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                INSERT_JOB,
                ORG_A,
                USER_A,
            )
    finally:
        await conn.close()


async def test_other_tenant_updates_and_deletes_touch_nothing(database: str, seeded):
    conn = await as_authenticated(database, ORG_B, USER_B)
    try:
        assert await conn.execute("UPDATE generations SET cancel_requested = true") == "UPDATE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM generations")
    finally:
        await conn.close()


async def test_tenant_cannot_write_results(database: str, seeded):
    conn = await as_authenticated(database, ORG_A, USER_A)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE generations SET result = '{}'::jsonb")
    finally:
        await conn.close()


@pytest.mark.parametrize("raw", ["not-a-uuid", "", None])
async def test_malformed_or_missing_claims_see_nothing(database: str, seeded, raw):
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("SET ROLE authenticated")
        payload = {"sub": str(USER_A), "app_metadata": {"organization_id": raw}} if raw is not None else {}
        await conn.execute("SELECT set_config('request.jwt.claims', $1, false)", json.dumps(payload))
        assert await conn.fetchval("SELECT count(*) FROM generations") == 0
    finally:
        await conn.close()


async def test_claim_path_follows_the_configured_setting(database: str, seeded):
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("SET ROLE authenticated")
        payload = {"sub": str(USER_A), "org": {"id": str(ORG_A)}}
        await conn.execute("SELECT set_config('request.jwt.claims', $1, false)", json.dumps(payload))
        assert await conn.fetchval("SELECT count(*) FROM generations") == 0
        await conn.execute("SELECT set_config('liftoff.tenant_claim', 'org.id', false)")
        assert await conn.fetchval("SELECT count(*) FROM generations") == 1
    finally:
        await conn.close()


async def test_auth_functions_read_the_claims(database: str):
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("SELECT set_config('request.jwt.claims', $1, false)", claims(ORG_A, USER_A))
        assert await conn.fetchval("SELECT auth.uid()") == USER_A
        jwt_claims = json.loads(await conn.fetchval("SELECT auth.jwt()::text"))
        assert jwt_claims["app_metadata"]["organization_id"] == str(ORG_A)
    finally:
        await conn.close()
