"""Jobs and attempts written straight into a migrated database, as the API and the worker write them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from tests.conftest import ORG_A, USER_A, truncate


@contextlib.asynccontextmanager
async def emptied(dsn: str) -> AsyncIterator[None]:
    """The database empty but for tenant A's organization, and empty again afterwards."""
    await truncate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO organizations (id) VALUES ($1)", ORG_A)
    finally:
        await conn.close()
    try:
        yield
    finally:
        await truncate(dsn)


async def jobs(dsn: str, *statuses: str) -> list[uuid.UUID]:
    """One job of tenant A per status given."""
    conn = await asyncpg.connect(dsn)
    try:
        return [
            await conn.fetchval(
                "INSERT INTO generations (organization_id, created_by, prompt, model, ai_status)"
                " VALUES ($1, $2, 'p', 'm', $3) RETURNING id",
                ORG_A,
                USER_A,
                status,
            )
            for status in statuses
        ]
    finally:
        await conn.close()


async def attempt_ended(dsn: str, job: uuid.UUID, seconds_ago: float) -> None:
    """A generation_logs row, as a worker writes one when an attempt ends, `seconds_ago` back."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO generation_logs (generation_id, organization_id, attempt, status, provider,"
            " started_at, finished_at, created_at)"
            " VALUES ($1, $2, 1, 'succeeded', 'local', now() - make_interval(secs => $3 + 1),"
            " now() - make_interval(secs => $3), now() - make_interval(secs => $3))",
            job,
            ORG_A,
            float(seconds_ago),
        )
    finally:
        await conn.close()
