"""Worker-only state is the worker's: what a tenant's token may write in raw SQL.

On Supabase, raw SQL as `authenticated` (or `anon`) with a user's claims is what the REST API
exposes to any token, so these run every write a hostile tenant could try.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import ORG_A, ORG_B, USER_A, USER_B, truncate

pytestmark = pytest.mark.integration

CLIENT_INSERT = (
    "INSERT INTO generations (organization_id, created_by, prompt, model, params, idempotency_key,"
    " request_hash) VALUES ($1, $2, 'p', 'm', '{}'::jsonb, NULL, NULL) RETURNING id, ai_status"
)
# Columns a client supplies are allowed; each of these is the worker's.
FORGED_INSERTS = {
    "succeeded with a result": "ai_status, result) VALUES ($1, $2, 'p', 'm', 'succeeded', '{\"x\": 1}'",
    "running with an expired lease": (
        "ai_status, lease_expires_at, leased_by, attempts) VALUES"
        " ($1, $2, 'p', 'm', 'running', now() - interval '1 hour', 'w', -100"
    ),
    "negative attempts": "attempts) VALUES ($1, $2, 'p', 'm', -100",
    "already cancelled": "cancel_requested) VALUES ($1, $2, 'p', 'm', true",
    "backdated": "created_at) VALUES ($1, $2, 'p', 'm', now() - interval '1 day'",
    "delayed": "run_after) VALUES ($1, $2, 'p', 'm', now() + interval '1 day'",
    "chosen id": "id) VALUES ($1, $2, 'p', 'm', gen_random_uuid()",
}
FORGED_UPDATES = [
    "ai_status = 'succeeded'",
    "ai_status = 'failed'",
    "ai_status = 'queued'",
    "ai_status = 'running'",
    "result = '{\"forged\": true}'::jsonb",
    "error = 'x'",
    "attempts = -100",
    "lease_expires_at = now() - interval '1 hour'",
    "leased_by = 'me'",
    "run_after = now()",
    "finished_at = now()",
    "started_at = now()",
    "updated_at = now()",
    "prompt = 'changed'",
    "params = '{}'::jsonb",
    "organization_id = organization_id",
]


def claims(org: uuid.UUID, user: uuid.UUID) -> str:
    return json.dumps(
        {"sub": str(user), "role": "authenticated", "app_metadata": {"organization_id": str(org)}}
    )


async def as_role(
    dsn: str, role: str, org: uuid.UUID = ORG_A, user: uuid.UUID = USER_A
) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"SET ROLE {role}")
    await conn.execute("SELECT set_config('request.jwt.claims', $1, false)", claims(org, user))
    return conn


@pytest.fixture
async def jobs(database: str) -> AsyncIterator[dict[str, uuid.UUID]]:
    """Tenant A's jobs in each state, written with the owner's privileges (as the worker)."""
    # From empty tables, whatever ran before (tests of the real server process leave rows).
    await truncate(database)
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO organizations (id) VALUES ($1), ($2)", ORG_A, ORG_B)
        ids = {}
        for status in ("queued", "running", "succeeded"):
            ids[status] = await conn.fetchval(
                "INSERT INTO generations (organization_id, created_by, prompt, model, ai_status)"
                " VALUES ($1, $2, 'p', 'm', $3) RETURNING id",
                ORG_A,
                USER_A,
                status,
            )
    finally:
        await conn.close()
    yield ids
    await truncate(database)


async def test_a_tenant_inserts_a_job_with_client_columns_only(database: str, jobs):
    conn = await as_role(database, "authenticated")
    try:
        row = await conn.fetchrow(CLIENT_INSERT, ORG_A, USER_A)
    finally:
        await conn.close()
    assert row["ai_status"] == "queued"


@pytest.mark.parametrize("forged", FORGED_INSERTS.values(), ids=FORGED_INSERTS.keys())
async def test_a_tenant_cannot_insert_worker_state(database: str, jobs, forged):
    conn = await as_role(database, "authenticated")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(
                f"INSERT INTO generations (organization_id, created_by, prompt, model, {forged})",  # noqa: S608
                ORG_A,
                USER_A,
            )
    finally:
        await conn.close()


@pytest.mark.parametrize("assignment", FORGED_UPDATES)
@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
async def test_a_tenant_cannot_update_worker_state_of_its_own_jobs(database: str, jobs, assignment, status):
    conn = await as_role(database, "authenticated")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute(f"UPDATE generations SET {assignment} WHERE id = $1", jobs[status])  # noqa: S608
    finally:
        await conn.close()


async def test_a_finished_job_cannot_be_requeued(database: str, jobs):
    """Re-queueing a finished job would make the worker run it again: another paid call."""
    conn = await as_role(database, "authenticated")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "UPDATE generations SET ai_status = 'queued', cancel_requested = true WHERE id = $1",
                jobs["succeeded"],
            )
    finally:
        await conn.close()
    owner = await asyncpg.connect(database)
    try:
        assert await owner.fetchval("SELECT ai_status FROM generations WHERE id = $1", jobs["succeeded"]) == (
            "succeeded"
        )
    finally:
        await owner.close()


async def test_a_tenant_requests_cancellation_and_nothing_more(database: str, jobs):
    conn = await as_role(database, "authenticated")
    try:
        queued = await conn.fetchrow(
            "UPDATE generations SET cancel_requested = true WHERE id = $1"
            " RETURNING ai_status, cancel_requested, finished_at",
            jobs["queued"],
        )
        running = await conn.fetchrow(
            "UPDATE generations SET cancel_requested = true WHERE id = $1 RETURNING ai_status, finished_at",
            jobs["running"],
        )
        # Taking a cancel request back is not cancellation.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "UPDATE generations SET cancel_requested = false WHERE id = $1", jobs["running"]
            )
    finally:
        await conn.close()
    # A queued job is cancelled at once; a running one is left for its worker to stop.
    assert queued["ai_status"] == "cancelled" and queued["finished_at"] is not None
    assert running["ai_status"] == "running" and running["finished_at"] is None


async def test_another_tenant_cannot_cancel(database: str, jobs):
    conn = await as_role(database, "authenticated", ORG_B, USER_B)
    try:
        assert await conn.execute("UPDATE generations SET cancel_requested = true") == "UPDATE 0"
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM generations",
        "DELETE FROM generation_logs",
        "INSERT INTO generation_logs (generation_id, organization_id, attempt, status, provider, started_at)"
        " SELECT id, organization_id, 1, 'succeeded', 'x', now() FROM generations",
        "UPDATE generation_logs SET status = 'succeeded'",
        "INSERT INTO organizations (id) VALUES (gen_random_uuid())",
        "UPDATE organizations SET name = 'x'",
        "DELETE FROM organizations",
        "INSERT INTO organization_members (organization_id, user_id)"
        " VALUES ('aaaaaaaa-0000-4000-8000-000000000001', gen_random_uuid())",
        "UPDATE organization_members SET role = 'owner'",
        "DELETE FROM organization_members",
        "UPDATE liftoff.tenant_limits SET max_active_jobs = NULL",
        "INSERT INTO liftoff.tenant_limits (organization_id) VALUES ('aaaaaaaa-0000-4000-8000-000000000001')",
        "DELETE FROM liftoff.tenant_limits",
        # Takes claims on trust: the API's role alone may call it.
        "SELECT * FROM liftoff.submit_generation('{}', 'x', true, gen_random_uuid(), gen_random_uuid(),"
        " 'p', 'm', '{}', NULL, NULL)",
    ],
)
async def test_a_tenant_cannot_write_anything_else(database: str, jobs, statement):
    conn = await as_role(database, "authenticated")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) FROM generations",
        "SELECT count(*) FROM generation_logs",
        "SELECT count(*) FROM organizations",
        "SELECT count(*) FROM organization_members",
        "SELECT count(*) FROM liftoff.tenant_limits",
        "INSERT INTO generations (organization_id, created_by, prompt, model)"
        " VALUES ('aaaaaaaa-0000-4000-8000-000000000001', 'aaaaaaaa-1111-4000-8000-000000000001', 'p', 'm')",
        "UPDATE generations SET cancel_requested = true",
        "UPDATE generations SET ai_status = 'succeeded'",
        "DELETE FROM generations",
    ],
)
async def test_anon_can_do_nothing(database: str, jobs, statement):
    conn = await as_role(database, "anon")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_raw_inserts_meet_the_tenant_limits_too(database: str, jobs):
    """The limits live in the database, so Supabase's REST API is held to them like the API."""
    owner = await asyncpg.connect(database)
    try:
        await owner.execute(
            "INSERT INTO liftoff.tenant_limits (organization_id, max_active_jobs) VALUES ($1, 4)", ORG_A
        )
    finally:
        await owner.close()
    conn = await as_role(database, "authenticated")
    try:
        # Two jobs are queued or running already; two more fit.
        for _ in range(2):
            await conn.execute(CLIENT_INSERT, ORG_A, USER_A)
        with pytest.raises(asyncpg.PostgresError, match="4 jobs queued or running") as raised:
            await conn.execute(CLIENT_INSERT, ORG_A, USER_A)
        assert raised.value.sqlstate == "PT429"
    finally:
        await conn.close()
