"""Queries on generations. Tenant functions expect a connection from `tenant_transaction`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, and_, case, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import JobStatus, generations

GENERATION_COLUMNS = (
    generations.c.id,
    generations.c.ai_status.label("status"),
    generations.c.prompt,
    generations.c.model,
    generations.c.params,
    generations.c.result,
    generations.c.error,
    generations.c.attempts,
    generations.c.cancel_requested,
    generations.c.created_at,
    generations.c.updated_at,
    generations.c.started_at,
    generations.c.finished_at,
)


class InvalidCursorError(ValueError):
    """A pagination cursor that this API did not issue."""


class IdempotencyConflictError(Exception):
    """The idempotency key was used before with a different body."""


def request_hash(payload: dict[str, Any]) -> str:
    """A stable digest of a request body: same content, same hash, whatever the key order."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_cursor(created_at: datetime, job_id: UUID) -> str:
    """An opaque cursor pointing just past (created_at, id)."""
    raw = json.dumps([created_at.isoformat(), str(job_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The position a cursor points past; InvalidCursorError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        position = datetime.fromisoformat(created_at), UUID(job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursorError(cursor) from exc
    if position[0].tzinfo is None:
        raise InvalidCursorError(cursor)
    return position


async def ensure_membership(conn: AsyncConnection, org_id: UUID, user_id: UUID) -> None:
    """Record the organization and the member a verified token names.

    Supabase sets app_metadata server-side, so the claim is authoritative; this only makes
    the rows exist for foreign keys and for listing members. Runs with the connection's own
    privileges, before the transaction switches to the `authenticated` role.
    """
    await conn.execute(
        text(
            "WITH org AS (INSERT INTO organizations (id) VALUES (:org) ON CONFLICT DO NOTHING)"
            " INSERT INTO organization_members (organization_id, user_id) VALUES (:org, :user)"
            " ON CONFLICT DO NOTHING"
        ),
        {"org": org_id, "user": user_id},
    )


async def create_generation(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    user_id: UUID,
    prompt: str,
    model: str,
    params: dict[str, Any],
    idempotency_key: str | None,
    body_hash: str | None,
) -> tuple[RowMapping, bool]:
    """Insert a queued job, or return the job an earlier request with this key created.

    Returns (job, created). Concurrent requests with one key meet at the unique index: one
    inserts, the others wait for its commit and then read its row.
    """
    statement = (
        insert(generations)
        .values(
            organization_id=org_id,
            created_by=user_id,
            prompt=prompt,
            model=model,
            params=params,
            idempotency_key=idempotency_key,
            request_hash=body_hash,
        )
        .on_conflict_do_nothing(
            index_elements=[generations.c.organization_id, generations.c.idempotency_key],
            index_where=generations.c.idempotency_key.is_not(None),
        )
        .returning(*GENERATION_COLUMNS)
    )
    row = (await conn.execute(statement)).mappings().first()
    if row is not None:
        return row, True
    existing = (
        (
            await conn.execute(
                select(*GENERATION_COLUMNS, generations.c.request_hash).where(
                    generations.c.organization_id == org_id, generations.c.idempotency_key == idempotency_key
                )
            )
        )
        .mappings()
        .one()
    )
    if existing["request_hash"] != body_hash:
        raise IdempotencyConflictError(idempotency_key)
    return existing, False


async def get_generation(conn: AsyncConnection, org_id: UUID, job_id: UUID) -> RowMapping | None:
    """One of the tenant's jobs, or None."""
    statement = select(*GENERATION_COLUMNS).where(
        generations.c.organization_id == org_id, generations.c.id == job_id
    )
    return (await conn.execute(statement)).mappings().first()


async def list_generations(
    conn: AsyncConnection,
    org_id: UUID,
    *,
    status: JobStatus | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> tuple[Sequence[RowMapping], str | None]:
    """A page of the tenant's jobs, newest first, and the cursor of the next page."""
    conditions = [generations.c.organization_id == org_id]
    if status is not None:
        conditions.append(generations.c.ai_status == status.value)
    if after is not None:
        conditions.append(tuple_(generations.c.created_at, generations.c.id) < tuple_(*after))
    statement = (
        select(*GENERATION_COLUMNS)
        .where(and_(*conditions))
        .order_by(generations.c.created_at.desc(), generations.c.id.desc())
        .limit(limit + 1)
    )
    rows = (await conn.execute(statement)).mappings().all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last["created_at"], last["id"])


async def cancel_generation(conn: AsyncConnection, org_id: UUID, job_id: UUID) -> RowMapping | None:
    """Cancel a queued job at once; ask a running one to stop. None if there is no such job.

    A job already finished comes back unchanged; the caller decides what that means.
    """
    queued = generations.c.ai_status == JobStatus.QUEUED.value
    now = func.now()
    statement = (
        update(generations)
        .where(
            generations.c.organization_id == org_id,
            generations.c.id == job_id,
            generations.c.ai_status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        )
        .values(
            ai_status=case((queued, JobStatus.CANCELLED.value), else_=generations.c.ai_status),
            finished_at=case((queued, now), else_=generations.c.finished_at),
            cancel_requested=True,
            updated_at=now,
        )
        .returning(*GENERATION_COLUMNS)
    )
    row = (await conn.execute(statement)).mappings().first()
    if row is not None:
        return row
    return await get_generation(conn, org_id, job_id)


async def count_by_status(conn: AsyncConnection) -> dict[JobStatus, int]:
    """Jobs per status across all tenants (for metrics; needs a non-tenant connection)."""
    rows = await conn.execute(select(generations.c.ai_status, func.count()).group_by(generations.c.ai_status))
    counts = dict.fromkeys(JobStatus, 0)
    for status, count in rows:
        counts[JobStatus(status)] = count
    return counts
