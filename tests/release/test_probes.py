"""The worker's gates read from Postgres as the release controller's own role, which sees the
attempts per revision and the schema's revision, and nothing of the tenants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest

from app.migrate import current_revision, migrations
from release.gates import JobWindow
from release.probes import PostgresJobs
from tests.conftest import ORG_A, USER_A, Servers, truncate

pytestmark = pytest.mark.integration

LOGIN = "liftoff_release_test"


async def _attempts(dsn: str) -> None:
    """Candidate "cand": 3 succeeded (1 s, 2 s, 9 s), 1 retried, 1 lost; stable "stab": 1 succeeded."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO organizations (id) VALUES ($1) ON CONFLICT DO NOTHING", ORG_A)
        job = await conn.fetchval(
            "INSERT INTO generations (organization_id, created_by, prompt, model) VALUES ($1, $2, 'p', 'm')"
            " RETURNING id",
            ORG_A,
            USER_A,
        )
        rows = [
            ("cand", "succeeded", 1000),
            ("cand", "succeeded", 2000),
            ("cand", "succeeded", 9000),
            ("cand", "retry", 500),
            ("cand", "lost", 60000),
            ("cand", "released", 10),
            ("stab", "succeeded", 1000),
        ]
        for attempt, (revision, status, ms) in enumerate(rows, start=1):
            await conn.execute(
                "INSERT INTO generation_logs (generation_id, organization_id, attempt, status, provider,"
                " started_at, finished_at, duration_ms, error, revision)"
                " VALUES ($1, $2, $3, $4, 'local', now(), now(), $5, 'secret tenant error', $6)",
                job,
                ORG_A,
                attempt,
                status,
                ms,
                revision,
            )
    finally:
        await conn.close()


@pytest.fixture
def reader(servers: Servers) -> Iterator[str]:
    """A login role that is a member of liftoff_release_reader, as docs/deploy.md has one made."""

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(servers.dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run(f"DROP ROLE IF EXISTS {LOGIN}"))
    asyncio.run(run(f"CREATE ROLE {LOGIN} LOGIN IN ROLE liftoff_release_reader"))
    asyncio.run(truncate(servers.dsn))
    asyncio.run(_attempts(servers.dsn))
    yield servers.postgres.dsn(user=LOGIN)
    asyncio.run(truncate(servers.dsn))
    asyncio.run(run(f"DROP ROLE IF EXISTS {LOGIN}"))


def test_the_release_role_reads_each_revisions_attempts_through_row_level_security(reader: str):
    now = time.time()
    jobs = PostgresJobs(reader).jobs("cand", now - 60, now + 60)
    # Released attempts are left out; the lost one counts as expired, the retried as a failure.
    assert (jobs.attempts, jobs.failures, jobs.expired) == (5, 1, 1)
    # Interpolated over the attempts that ran to an end (0.5, 1, 2, 9 s), as percentile_cont does.
    assert jobs.p95_seconds == pytest.approx(7.95)
    assert PostgresJobs(reader).jobs("stab", now - 60, now + 60) == JobWindow(1, 0, 0, 1.0)
    assert PostgresJobs(reader).jobs("cand", now + 60, now + 120).attempts == 0
    assert current_revision(reader) == migrations()[-1].revision


@pytest.mark.parametrize(
    "query",
    [
        "SELECT error FROM generation_logs",
        "SELECT organization_id FROM generation_logs",
        "SELECT * FROM generations",
    ],
)
def test_the_release_role_sees_nothing_of_the_tenants(reader: str, query: str):
    async def read() -> None:
        conn = await asyncpg.connect(reader)
        try:
            await conn.fetch(query)
        finally:
            await conn.close()

    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(read())
